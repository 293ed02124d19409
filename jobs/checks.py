"""
System checks of the queue beyond its backend's own (jobs.backend.PostgresBackend.check,
which reports what its OPTIONS get wrong): the schedules declared in
settings.JOBS_SCHEDULES, the tasks and queues that LIMITS and RETAIN name,
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
    limits = backend.queue_options.limits
    problems: list[checks.CheckMessage] = []
    task_queues: dict[str, str] = {}
    for limit in limits.all:
        named = NamedByEntry(backend, f"limit {limit.name!r}", noun="limit", verb="limits")
        problems += named.problems(limit.tasks, limit.queues)
        task_queues.update(named.task_queues)
    return [
        checks.Error(
            f"Task backend {backend.alias!r}: {conflict}",
            hint="Take the task out of all but two of these limits, at most one of them keyed.",
            id="jobs.E007",
        )
        for conflict in limits.conflicts(task_queues)
    ] + problems


@checks.register()
def check_retention(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A RETAIN rule that names a task or queue that holds no job keeps nothing."""
    from django.tasks import task_backends

    from .backend import PostgresBackend

    return [
        problem
        for backend in task_backends.all()
        if isinstance(backend, PostgresBackend)
        for rule in backend.queue_options.retain.rules
        for problem in NamedByEntry(
            backend, f"RETAIN rule {rule.name!r}", noun="rule", verb="keeps"
        ).problems(rule.tasks, rule.queues)
    ]


class NamedByEntry:
    """
    The tasks and queues that one entry of a setting (a limit, a RETAIN
    rule) names, checked: a task that does not import, or is named by an
    alias instead of its path (jobs are enqueued under task.module_path),
    or a queue that QUEUES does not allow, holds no job of the entry's.
    """

    def __init__(self, backend: "PostgresBackend", owner: str, *, noun: str, verb: str) -> None:
        self.backend, self.owner, self.noun, self.verb = backend, owner, noun, verb
        # Each task that imports, and its own queue.
        self.task_queues: dict[str, str] = {}

    def problems(self, tasks: Any, queues: Any) -> list[checks.CheckMessage]:
        return [*filter(None, map(self._task_problem, tasks)), *self._queue_problems(queues)]

    def _task_problem(self, task_path: str) -> checks.CheckMessage | None:
        from django.tasks.exceptions import InvalidTask

        from .backend import find_task

        alias = self.backend.alias
        try:
            task = find_task(task_path)
        except InvalidTask as error:
            return checks.Warning(
                f"Task backend {alias!r}: {self.owner} {self.verb} nothing of {task_path!r}. "
                f"{error}",
                hint="Name the task by its module path (task.module_path), "
                "such as 'myapp.tasks.send_sms'.",
                id="jobs.W010",
            )
        self.task_queues[task.module_path] = task.queue_name
        if task.module_path == task_path:
            return None
        return checks.Warning(
            f"Task backend {alias!r}: {self.owner} names {task_path!r}, an alias of "
            f"{task.module_path!r}; jobs are enqueued under the task's own path, so the "
            f"{self.noun} holds none of them.",
            hint=f"Name {task.module_path!r} in the {self.noun}.",
            id="jobs.W010",
        )

    def _queue_problems(self, queues: Any) -> list[checks.CheckMessage]:
        allowed = self.backend.queues
        return [
            checks.Warning(
                f"Task backend {self.backend.alias!r}: {self.owner} names queue {queue!r}, "
                f"which QUEUES does not allow: the {self.noun} holds no job.",
                hint=f"QUEUES allows {', '.join(map(repr, sorted(allowed)))}.",
                id="jobs.W011",
            )
            for queue in queues
            if allowed and queue not in allowed
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
