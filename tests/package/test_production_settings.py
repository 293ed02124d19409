"""
The project's settings default to production: DEBUG off, a secret key
required, HTTPS only. `manage.py check --deploy` passes with the environment
the documentation gives, and a missing secret says how to set one.
"""

import os
import re
import secrets
import subprocess
import sys

from tests.conftest import BASE_DIR
from tests.docs.pages import section

# The variables of the documentation's "Settings for production" that a deployment
# must set, with example values.
PRODUCTION_ENV = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "signup.example.com",
    "DJANGO_EMAIL_HOST": "smtp.example.com",
}


def project_env(**extra: str) -> dict[str, str]:
    """
    This environment without anything that configures the project (the test
    suite's DJANGO_DEBUG=1 among it), with the project's own settings.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "SIGNUP_"))
    }
    return {**env, "DJANGO_SETTINGS_MODULE": "project.settings", **extra}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_docs_document_the_production_environment_used_here():
    text = section("Settings for production")
    for name in PRODUCTION_ENV:
        assert re.search(rf"^export {name}=", text, re.MULTILINE), name


def test_check_deploy_finds_no_issue_with_the_documented_production_environment():
    done = manage("check", "--deploy", "--fail-level", "DEBUG", env=project_env(**PRODUCTION_ENV))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_without_any_setting_debug_is_off_and_the_site_is_https_only():
    code = (
        "import django\n"
        "django.setup()\n"
        "from django.conf import settings as s\n"
        "print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
        " s.SECURE_HSTS_SECONDS > 0, s.MAILERS['default']['BACKEND'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=project_env(DJANGO_SECRET_KEY=PRODUCTION_ENV["DJANGO_SECRET_KEY"]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "False",
        "True",
        "True",
        "True",
        "True",
        "django.core.mail.backends.smtp.EmailBackend",
    ]


def test_a_missing_secret_key_outside_debug_is_an_error_that_says_how_to_set_one():
    done = manage("check", env=project_env())
    assert done.returncode != 0
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY is not set" in done.stderr
    assert "secrets.token_urlsafe(50)" in done.stderr
    assert "DJANGO_DEBUG=1" in done.stderr


def test_debug_runs_without_a_secret_key_and_over_plain_http():
    done = manage("check", env=project_env(DJANGO_DEBUG="1"))
    assert done.returncode == 0, done.stderr
