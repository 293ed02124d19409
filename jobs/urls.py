from django.urls import path

from . import metrics

app_name = "jobs"

urlpatterns = [
    path("metrics", metrics.prometheus_view, name="metrics"),
]
