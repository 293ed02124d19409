from django.urls import path

from . import provider_standin, views

app_name = "accounts"

urlpatterns = [
    path("", views.home_page, name="home"),
    path("signup/", views.signup_page, name="signup"),
    path("signup/<int:user_id>/", views.signup_status_page, name="signup-status"),
    path("api/v1/signup", views.api_signup, name="api-signup"),
    path(
        "api/v1/signup/<int:user_id>/communications",
        views.api_communications,
        name="communications",
    ),
    path("api/v1/tasks/<str:task_id>", views.task_status, name="task-status"),
    path("provider/messages", provider_standin.messages, name="provider-standin"),
]
