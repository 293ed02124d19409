"""
The smallest Django project the two Django peers need: the database, the
peer's app, and its defaults. BENCH_PEER says which peer, BENCH_DSN which
database.
"""

import os

from psycopg.conninfo import conninfo_to_dict

_database = conninfo_to_dict(os.environ["BENCH_DSN"])

SECRET_KEY = "bench"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _database["dbname"],
        "USER": _database.get("user", ""),
        "PASSWORD": _database.get("password", ""),
        "HOST": _database.get("host", ""),
        "PORT": _database.get("port", ""),
        # As the project's own settings: persistent connections. Django's
        # default (0) closes the connection that django-q2's broker reopens on
        # every enqueue.
        "CONN_MAX_AGE": 600,
        "CONN_HEALTH_CHECKS": True,
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING"},
}

if os.environ["BENCH_PEER"] == "django_q2":
    INSTALLED_APPS += ["django_q"]
    # The ORM broker, every other setting left at its default but the log
    # level, WARNING for every queue measured.
    Q_CLUSTER = {"name": "bench", "orm": "default", "log_level": "WARNING"}
elif os.environ["BENCH_PEER"] == "django_tasks_db":
    INSTALLED_APPS += ["django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
