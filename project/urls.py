from django.contrib import admin
from django.urls import include, path

# The dashboard's link on the admin index (README, "Admin job browser and dashboard").
admin.site.index_template = "admin/jobs/index.html"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("accounts.urls")),
    path("", include("jobs.urls")),
]
