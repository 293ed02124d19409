"""
System checks of the queue beyond its backend's own (jobs.backend.PostgresBackend.check,
which reports what its OPTIONS get wrong): the schedules declared in
settings.JOBS_SCHEDULES, the tasks and queues that LIMITS names,
django.contrib.postgres, and the database's version.
"""

from typing import TYPE_CHECKING, Any

from django.core import checks

from .scheduler.declared import declaration_problems

if TYPE_CHECKING:
    from .backend import PostgresBackend

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


@checks.register()
def check_limits(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """What LIMITS gets wrong beyond its own form, which the backend's check reports."""
    from django.tasks import task_backends

    from .backend import PostgresBackend

    return [
        problem
        for backend in task_backends.all()
        if isinstance(backend, PostgresBackend)
        for problem in limit_problems(backend)
    ]


def limit_problems(backend: "PostgresBackend") -> list[checks.CheckMessage]:
    """
    A limit that names a task that does not exist, or a queue the backend
    does not allow, limits nothing, and nothing else would say so; a task
    under more limits than a job keeps on its own queue passes every other
    check and then fails every enqueue.
    """
    from django.tasks.exceptions import InvalidTask

    from .backend import find_task

    limits = backend.queue_options.limits
    problems: list[checks.CheckMessage] = []
    task_queues: dict[str, str] = {}
    for limit in limits.all:
        for task_path in limit.tasks:
            try:
                task = find_task(task_path)
            except InvalidTask as error:
                problems.append(
                    checks.Warning(
                        f"Task backend {backend.alias!r}: limit {limit.name!r} limits nothing "
                        f"of {task_path!r}. {error}",
                        hint="Name the task by its module path (task.module_path), "
                        "such as 'myapp.tasks.send_sms'.",
                        id="jobs.W010",
                    )
                )
                continue
            task_queues[task.module_path] = task.queue_name
            if task.module_path != task_path:
                problems.append(
                    checks.Warning(
                        f"Task backend {backend.alias!r}: limit {limit.name!r} names "
                        f"{task_path!r}, an alias of {task.module_path!r}; jobs are enqueued "
                        "under the task's own path, so the limit holds none of them.",
                        hint=f"Name {task.module_path!r} in the limit.",
                        id="jobs.W010",
                    )
                )
        for queue in limit.queues:
            if backend.queues and queue not in backend.queues:
                problems.append(
                    checks.Warning(
                        f"Task backend {backend.alias!r}: limit {limit.name!r} names queue "
                        f"{queue!r}, which QUEUES does not allow: the limit holds no job.",
                        hint=f"QUEUES allows {', '.join(map(repr, sorted(backend.queues)))}.",
                        id="jobs.W011",
                    )
                )
    return [
        checks.Error(
            f"Task backend {backend.alias!r}: {conflict}",
            hint="Take the task out of all but two of these limits, at most one of them keyed.",
            id="jobs.E007",
        )
        for conflict in limits.conflicts(task_queues)
    ] + problems


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
