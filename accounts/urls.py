from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("api/v1/tasks/<str:task_id>", views.task_status, name="task-status"),
]
