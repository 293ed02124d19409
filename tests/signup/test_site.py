"""The site's front page, and the script that runs management commands as run.sh does."""

import os
import subprocess

import pytest
from django.urls import reverse

from project.settings import BASE_DIR


def test_the_front_page_leads_to_the_signup_the_admin_and_the_dashboard(client, db):
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    for url in ("/signup/", "/admin/", reverse("admin:jobs_job_dashboard")):
        assert f'href="{url}"' in page
    assert "./scripts/manage.sh createsuperuser" in page
    assert client.post("/").status_code == 405


def test_every_page_has_its_icon(client):
    """Browsers ask /favicon.ico of each page: it is there, not a 404 in every log."""
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert response.content.startswith(b"<svg ")
    assert "max-age=86400" in response["Cache-Control"]


@pytest.mark.parametrize("method", ["put", "patch", "delete", "options"])
def test_the_signup_page_takes_get_and_post_only(client, db, method):
    response = getattr(client, method)(
        "/signup/", "email=a@example.com", "application/x-www-form-urlencoded"
    )
    assert response.status_code == 405


@pytest.mark.timeout(120)
def test_manage_sh_runs_a_command_with_the_development_settings():
    # DJANGO_DEBUG unset, for the script to set it; a secret key given, so
    # that it does not make the checkout's own in var/.
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    env["DJANGO_SECRET_KEY"] = "test-" + "k" * 50
    done = subprocess.run(
        ["./scripts/manage.sh", "diffsettings", "--output", "unified"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "+ DEBUG = True" in done.stdout
