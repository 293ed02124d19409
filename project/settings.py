"""
Settings for the project.

The database comes from DATABASE_URL when it is set (any Postgres 15 or newer,
as Django 6.1 requires); otherwise an embedded Postgres 18 keeps its data in
.pgdata/ beside manage.py.

Production is the default: DEBUG is off unless DJANGO_DEBUG=1, DJANGO_SECRET_KEY
is then required, and the site is served over HTTPS only (README, "Settings
for production"). scripts/run.sh asks for DEBUG on a development machine.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent


def env_flag(name: str, default: bool) -> bool:
    """An environment variable that is "1" for on and "0" for off."""
    return os.environ.get(name, "1" if default else "0") == "1"


def env_rate(name: str, default: str) -> tuple[int, int] | None:
    """A rate limit from the environment: "COUNT/SECONDS", or "off"."""
    value = os.environ.get(name, default)
    if value == "off":
        return None
    count, _, seconds = value.partition("/")
    try:
        return int(count), int(seconds)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} must be COUNT/SECONDS (e.g. {default}) or off, not {value!r}."
        ) from None


DEBUG = env_flag("DJANGO_DEBUG", False)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Outside development it must be a long random "
            "string kept secret: export DJANGO_SECRET_KEY=\"$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))')\" (the same value for every process of the "
            "site). On a development machine, DJANGO_DEBUG=1 uses a development key instead; "
            "scripts/run.sh sets both."
        )
    # Known to everyone, hence DEBUG only; `check --deploy` flags the prefix.
    SECRET_KEY = "django-insecure-development-only"

ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

# The number of reverse proxies in front of the site that append the client's
# address to X-Forwarded-For and say the scheme in X-Forwarded-Proto. 0 (the
# default) trusts neither header: the client is REMOTE_ADDR, as a header a
# client sets itself would otherwise pick its own rate-limit key.
TRUSTED_PROXIES = int(os.environ.get("DJANGO_TRUSTED_PROXIES", "0"))
if TRUSTED_PROXIES:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# HTTPS only, unless DEBUG or DJANGO_HTTPS=0 (a plain-HTTP benchmark): plain
# requests are redirected, cookies are sent over HTTPS alone, and browsers are
# told (HSTS) to use nothing else for a year, subdomains included.
https_only = env_flag("DJANGO_HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = https_only
SESSION_COOKIE_SECURE = https_only
CSRF_COOKIE_SECURE = https_only
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000")) if https_only else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True

# Every page's scripts and styles come from the site itself, or are inline
# with the response's nonce ({% csp_nonce_attr %}); in DEBUG too, so that a
# page that breaks the policy breaks on a development machine first.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

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
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: it turns a login that the lockout refused into the lockout page.
    "axes.middleware.AxesMiddleware",
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
                "django.template.context_processors.csp",
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

# The signup's text message and push providers each allow so many sends a
# second for the whole account (SIGNUP_SMS_RATE, SIGNUP_PUSH_RATE), across every
# worker; and a user never gets two texts, or two notifications, racing each
# other. See jobs.limits.
SIGNUP_SEND_LIMITS = {
    f"{channel}-provider": {
        "tasks": [f"accounts.tasks.send_welcome_{channel}"],
        "rate": os.environ.get(f"SIGNUP_{channel.upper()}_RATE", default_rate),
    }
    for channel, default_rate in (("sms", "10/s"), ("push", "100/s"))
} | {
    f"{channel}-per-user": {
        "tasks": [f"accounts.tasks.send_welcome_{channel}"],
        "key": "user_id",
        "concurrency": 1,
    }
    for channel in ("sms", "push")
}

TASKS = {
    "default": {
        "BACKEND": "jobs.backend.PostgresBackend",
        "QUEUES": ["default", "communications", "reports"],
        "OPTIONS": {"LIMITS": SIGNUP_SEND_LIMITS},
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

# Logins (the admin's) are throttled by django-axes: after AXES_FAILURE_LIMIT
# failures a username is locked out from that one client address for
# AXES_COOLOFF_TIME after the last attempt, and a success clears the count.
# By the pair rather than by either alone, so that someone guessing at an
# account cannot lock its owner out from elsewhere, nor lock out everyone
# behind a shared address. The address is the one the signup limits count by
# (TRUSTED_PROXIES). The lockout backend comes first so that it refuses a
# locked-out pair before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "accounts.limits.lockout_address"
AXES_COOLOFF_MESSAGE = (
    "Too many failed logins to this account from your address. Try again in "
    f"{int(AXES_COOLOFF_TIME.total_seconds()) // 60} minutes: every attempt until then, "
    "even with the right password, is refused and starts the wait again."
)


LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# E-mail goes to the console in DEBUG, through SMTP otherwise (DJANGO_EMAIL_HOST,
# _PORT, _HOST_USER, _HOST_PASSWORD, _USE_TLS); DJANGO_EMAIL_BACKEND names another.
email_backend = os.environ.get(
    "DJANGO_EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
MAILERS = {"default": {"BACKEND": email_backend}}
if email_backend == "django.core.mail.backends.smtp.EmailBackend":
    MAILERS["default"]["OPTIONS"] = {
        "host": os.environ.get("DJANGO_EMAIL_HOST", "localhost"),
        # None picks 25, or 587 with TLS.
        "port": int(os.environ.get("DJANGO_EMAIL_PORT") or 0) or None,
        "username": os.environ.get("DJANGO_EMAIL_HOST_USER", ""),
        "password": os.environ.get("DJANGO_EMAIL_HOST_PASSWORD", ""),
        "use_tls": env_flag("DJANGO_EMAIL_USE_TLS", False),
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
# accounts.providers.HTTPProvider posts to this URL; the project serves a
# stand-in for it (accounts.provider_standin) where SIGNUP_PROVIDER_STANDIN is on.
SIGNUP_PROVIDER_URL = os.environ.get(
    "SIGNUP_PROVIDER_URL", "http://127.0.0.1:8000/provider/messages"
)
SIGNUP_PROVIDER_TIMEOUT = float(os.environ.get("SIGNUP_PROVIDER_TIMEOUT", "10"))
SIGNUP_PROVIDER_STANDIN = env_flag("SIGNUP_PROVIDER_STANDIN", DEBUG)
SIGNUP_PROVIDER_STANDIN_LATENCY = float(os.environ.get("SIGNUP_PROVIDER_STANDIN_LATENCY", "0.2"))
# Seconds every send waits first, "0.3-1.0" for a range: a real provider's
# round trip, for measuring. 0 outside benchmarks.
SIGNUP_PROVIDER_DELAY = os.environ.get("SIGNUP_PROVIDER_DELAY", "0")
# Send in the request, the old way, instead of enqueueing; or allow `?inline=1`.
SIGNUP_SEND_INLINE = os.environ.get("SIGNUP_SEND_INLINE", "0") == "1"
SIGNUP_ALLOW_INLINE_FLAG = os.environ.get("SIGNUP_ALLOW_INLINE_FLAG", "0") == "1"
# How many signups are accepted, as (count, seconds) over a sliding window, or
# None for no limit: per client address (an IPv6 client's /64), per phone
# number, and in all (each signup sends one text message). Beyond a limit the
# signup answers 429 with Retry-After, creates nothing and sends nothing. Kept in
# the database (accounts_ratelimit), so they hold across processes and hosts.
SIGNUP_RATE_LIMITS = {
    "address": env_rate("SIGNUP_LIMIT_PER_ADDRESS", "20/3600"),
    "phone": env_rate("SIGNUP_LIMIT_PER_PHONE", "3/86400"),
    "texts": env_rate("SIGNUP_LIMIT_TEXTS", "30/60"),
}

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
