"""
System checks of the queue beyond its backend's own (jobs.backend.PostgresBackend.check,
which reports what its OPTIONS get wrong): the schedules declared in
settings.JOBS_SCHEDULES, django.contrib.postgres, and the database's version.
"""

from typing import Any

from django.core import checks

from .scheduler.declared import declaration_problems

MINIMUM_POSTGRES_VERSION = 15


@checks.register()
def check_declared_schedules(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A bad expression, task or time zone in code fails at start-up, not at the first tick."""
    return [
        checks.Error(
            problem,
            hint="Fix the declaration in settings.JOBS_SCHEDULES.",
            id="jobs.E101",
        )
        for problem in declaration_problems()
    ]


@checks.register()
def check_postgres_app_installed(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """The queue's tables have array columns, which Django allows with django.contrib.postgres."""
    from django.apps import apps

    if apps.is_installed("django.contrib.postgres"):
        return []
    return [
        checks.Error(
            "The jobs app needs 'django.contrib.postgres' in INSTALLED_APPS.",
            hint="Add 'django.contrib.postgres' to INSTALLED_APPS: the queue's tables use "
            "its ArrayField (worker ids, a worker's queues).",
            id="jobs.E006",
        )
    ]


@checks.register(checks.Tags.database)
def check_database_version(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """
    The queue's SQL needs PostgreSQL 15 or newer, as Django 6.1 does. Run by
    `migrate` and `check --database`, which are allowed to connect.
    """
    from django.db import connections
    from django.tasks import task_backends

    from .backend import PostgresBackend

    errors = []
    for backend in task_backends.all():
        if not isinstance(backend, PostgresBackend) or backend.database not in (databases or ()):
            continue
        connection = connections[backend.database]
        if connection.vendor != "postgresql":
            continue  # jobs.E003 says so
        if connection.pg_version < MINIMUM_POSTGRES_VERSION * 10000:
            errors.append(
                checks.Error(
                    f"Task backend {backend.alias!r} needs PostgreSQL "
                    f"{MINIMUM_POSTGRES_VERSION} or newer; database {backend.database!r} runs "
                    f"{connection.pg_version // 10000}.",
                    hint="Upgrade the server, or point the backend's DATABASE option at one "
                    "that is new enough.",
                    id="jobs.E005",
                )
            )
    return errors
