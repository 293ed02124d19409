"""
Settings for the project.

The database comes from DATABASE_URL when it is set (any Postgres 15 or newer, as Django 6.1 requires);
otherwise an embedded Postgres 18 keeps its data in .pgdata/ beside manage.py.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "django-insecure-only-for-local-development-change-me"
)
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "jobs",
    "accounts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

# The embedded server listens on a Unix socket only; its engine starts it on the
# first connection and leaves it running for the other processes that share it.
EMBEDDED_POSTGRES_DIR = Path(os.environ.get("EMBEDDED_POSTGRES_DIR", BASE_DIR / ".pgdata"))

if os.environ.get("DATABASE_URL"):
    DATABASES = {
        "default": dj_database_url.parse(
            os.environ["DATABASE_URL"], conn_max_age=600, conn_health_checks=True
        )
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "project.embedded_postgres",
            "NAME": "postgres",
            "USER": "postgres",
            "CONN_MAX_AGE": 600,
            "CONN_HEALTH_CHECKS": True,
        }
    }

# Lets several test runs share one server: each names its own test database.
if os.environ.get("TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TASKS = {
    "default": {
        "BACKEND": "jobs.backend.PostgresBackend",
        "QUEUES": ["default", "communications", "reports"],
        "OPTIONS": {},
    }
}

# The bearer token of the Prometheus endpoint at /metrics; unset, it answers 404.
JOBS_METRICS_TOKEN = os.environ.get("JOBS_METRICS_TOKEN")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

MAILERS = {
    "default": {
        "BACKEND": os.environ.get(
            "DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend"
        ),
    }
}

# Signup (accounts/): one provider class per channel, each overridable from the
# environment. The local text and push providers record messages in the
# accounts_outboxmessage table; DJANGO_EMAIL_BACKEND=accounts.outbox.OutboxEmailBackend
# records e-mail there too.
SIGNUP_PROVIDERS = {
    channel: os.environ.get(f"SIGNUP_{channel.upper()}_PROVIDER", default)
    for channel, default in (
        ("email", "accounts.providers.EmailProvider"),
        ("sms", "accounts.providers.LocalSMSProvider"),
        ("push", "accounts.providers.LocalPushProvider"),
    )
}
# Seconds every send waits first, "0.3-1.0" for a range: a real provider's
# round trip, for measuring. 0 outside benchmarks.
SIGNUP_PROVIDER_DELAY = os.environ.get("SIGNUP_PROVIDER_DELAY", "0")
# Send in the request, the old way, instead of enqueueing; or allow `?inline=1`.
SIGNUP_SEND_INLINE = os.environ.get("SIGNUP_SEND_INLINE", "0") == "1"
SIGNUP_ALLOW_INLINE_FLAG = os.environ.get("SIGNUP_ALLOW_INLINE_FLAG", "0") == "1"

# Periodic tasks declared in code. runscheduler syncs them into jobs_schedule at
# start; an admin's edit of a field stands until the code changes that field
# (README, "Periodic tasks").
JOBS_SCHEDULES = {
    "signup-report": {
        "task": "accounts.reports.send_signup_report",
        "cron": "0 18 * * 1-5",  # 18:00 Monday to Friday, in TIME_ZONE
    },
}

# Who receives mail_admins(), the end-of-day signup report among it:
# DJANGO_ADMINS="ops@example.com,founder@example.com".
ADMINS = [address for address in os.environ.get("DJANGO_ADMINS", "").split(",") if address]
