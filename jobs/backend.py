"""
The Django Tasks backend: `TASKS = {"default": {"BACKEND": "jobs.backend.PostgresBackend"}}`.

Enqueue is one INSERT on the caller's own connection and transaction, so a job
enqueued inside `transaction.atomic()` exists only if that transaction commits.
"""

import functools
import importlib.util
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from datetime import timedelta
from typing import Any

import uuid_utils
from django.core import checks
from django.db import connections, transaction
from django.tasks import TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, Task, TaskError
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules, import_string

from . import queries, tracing, transitions
from .calls import (
    check_column_text,
    check_tags_and_meta,
    dumps,
    encode_calls,
    limit_key_rows,
    limited_calls,
)
from .models import Job, JobStatus
from .options import QueueOptions
from .retries import check_task_policy
from .task import TASK_ALIASES, JobTask, UnloadableTask
from .uniqueness import check_uniqueness, existing_job, held_over_time, replace_unstarted


class PostgresBackend(BaseTaskBackend):
    task_class = JobTask

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        # `options` stays the OPTIONS setting as given; `queue_options` is
        # what the queue runs with, the defaults filled in. What the setting
        # gets wrong is check()'s to report.
        self.queue_options, self._option_errors = QueueOptions.parse(alias, self.options)

    @property
    def database(self) -> str:
        """The alias of the database that holds the queue's tables (OPTIONS["DATABASE"])."""
        return self.queue_options.database

    def validate_task(self, task: Task) -> None:
        # Django's check compares the priority with numbers, which raises a
        # TypeError for a string: an InvalidTask in its own words instead.
        if not isinstance(task.priority, int) or isinstance(task.priority, bool):
            raise InvalidTask(
                f"priority must be a whole number between {TASK_MIN_PRIORITY} and "
                f"{TASK_MAX_PRIORITY}."
            )
        # Django's own words ("is not valid for backend") name neither the
        # setting nor what it allows.
        if self.queues and task.queue_name not in self.queues:
            raise InvalidTask(
                f"Queue {task.queue_name!r} is not in the QUEUES of task backend "
                f"{self.alias!r}, which allows {', '.join(map(repr, sorted(self.queues)))}."
            )
        super().validate_task(task)
        max_attempts = getattr(task, "max_attempts", None)
        if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
            raise InvalidTask("max_attempts must be a whole number of at least 1.")
        timeout = getattr(task, "timeout", None)
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise InvalidTask("timeout must be a positive number of seconds.")
        aliases = getattr(task, "aliases", ())
        if not all(isinstance(alias, str) and "." in alias for alias in aliases):
            raise InvalidTask("aliases must be dotted paths, such as 'myapp.tasks.old_name'.")
        check_tags_and_meta(getattr(task, "tags", ()), getattr(task, "meta", None))
        check_task_policy(task)
        check_uniqueness(task)
        max_snoozes = getattr(task, "max_snoozes", None)
        if max_snoozes is not None and (
            not isinstance(max_snoozes, int) or isinstance(max_snoozes, bool) or max_snoozes < 0
        ):
            raise InvalidTask("max_snoozes must be a whole number, 0 or more.")
        limit_key = getattr(task, "limit_key", None)
        if limit_key is not None:
            own = self.queue_options.limits.of(task.module_path, task.queue_name)
            if own is None or not own.own.keyed:
                raise InvalidTask(
                    f"limit_key is the key of a keyed limit, and {task.module_path} on queue "
                    f"{task.queue_name!r} is under none."
                )
            if not isinstance(limit_key, str) or not limit_key:
                raise InvalidTask("limit_key is a non-empty string.")
        unique_key = getattr(task, "unique_key", None)
        for name, value in (
            ("unique_key", unique_key),
            ("queue_name", task.queue_name),
            ("task_path", task.module_path),
        ):
            if value is not None:
                check_column_text(name, value)

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]) -> TaskResult:
        return self.enqueue_many(task, [(args, kwargs)])[0]

    def enqueue_params(
        self, task: Task, calls: list[tuple[list[Any], dict[str, Any]]]
    ) -> dict[str, Any]:
        """
        The parameters of the ENQUEUE statements for these calls of task, all
        but their ids, once the task and its arguments are checked: every
        option in force (priority, run_after, attempts, timeout, unique key,
        tags, meta, the trace context and the limits it is under). What
        enqueue_many() and each step of a workflow share, so that a step
        keeps every option an enqueue keeps.

        Jobs with tags, meta, a trace context, a limit or a RETAIN rule have
        "tags", "meta", "trace_context" and "retention"; jobs under a limit
        have their key rows too ("limit_keys", for
        queries.enqueue.ENSURE_LIMIT_KEYS) and each call's keys third in
        "calls".
        """
        self.validate_task(task)
        unique_key = getattr(task, "unique_key", None)
        if unique_key is not None and len(calls) > 1:
            raise InvalidTask("A unique key names one job: enqueue it with enqueue().")
        encoded = encode_calls(task, calls)
        max_attempts, timeout = self._in_force(task)
        params = {
            "backend": self.alias,
            "task_path": task.module_path,
            "queue": task.queue_name,
            "priority": task.priority,
            "run_after": task.run_after,
            "max_attempts": max_attempts,
            "timeout": timedelta(seconds=timeout) if timeout is not None else None,
            "calls": encoded,
            "unique_key": unique_key,
            "notify": task.run_after is None
            or task.run_after
            <= timezone.now() + timedelta(seconds=self.queue_options.poll_interval),
        }
        tags, meta = getattr(task, "tags", ()), getattr(task, "meta", None)
        trace_context = tracing.current_context()
        limits, retain = self.queue_options.limits, self.queue_options.retain
        job_limits = limits.of(task.module_path, task.queue_name) if limits else None
        retention = retain.rule_of(task.module_path, task.queue_name) if retain else None
        if tags or meta or trace_context or job_limits or retention:
            params.update(
                tags=list(tags),
                meta=dumps(meta or {}),
                trace_context=dumps(trace_context) if trace_context else None,
                retention=retention,
            )
        if job_limits is not None:
            keys = [job_limits.keys(task, args, kwargs) for args, kwargs in calls]
            params["calls"] = limited_calls(encoded, keys)
            params["limit_keys"] = limit_key_rows(job_limits, keys)
        return params

    def enqueue_many(
        self, task: Task, calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]]
    ) -> list[TaskResult]:
        calls = [(list(args), dict(kwargs)) for args, kwargs in calls]
        params = self.enqueue_params(task, calls)
        if not calls:
            return []
        ids = [str(uuid_utils.uuid7()) for _ in calls]
        params["ids"] = ",".join(ids)
        unique_key = params["unique_key"]
        limited = "limit_keys" in params
        held = unique_key is not None and held_over_time(task)
        replacing = unique_key is not None and getattr(task, "replace", False)
        one, many = queries.enqueue.enqueue_statements(labelled="tags" in params, limited=limited)
        with self._enqueue_cursor() as cursor, self._enqueue_transaction(limited or held):
            if limited:
                transitions.hold_limit_keys(cursor, params["limit_keys"])
            if held and (holder := existing_job(cursor, task)) is not None:
                return self._existing(holder, task, calls)
            if replacing and (replaced := replace_unstarted(cursor, params, limited)):
                return [self.get_result(replaced)]
            if len(calls) == 1:
                cursor.execute(one, params)
                inserted, enqueued_at, _ = cursor.fetchone() or (0, None, None)
                if unique_key is not None and not inserted:
                    cursor.execute(queries.enqueue.LIVE_JOB_BY_UNIQUE_KEY, [unique_key])
                    row = cursor.fetchone()
                    if row is None:
                        # The live job finished between the insert and this
                        # read: the key is free again, so enqueue anew.
                        return self.enqueue_many(task, calls)
                    return [self.get_result(str(row[0]))]
                results = self._ready_results(task, ids, calls)
            else:
                # Pipelined: the statement goes to the server at once, and
                # the results are made while Postgres inserts the rows (each
                # takes about as long), instead of after. An error may come
                # at any of the three steps: each is Django's, as for one job.
                with cursor.db.wrap_database_errors, pipeline(cursor.cursor.connection):
                    cursor.execute(many, params)
                    results = self._ready_results(task, ids, calls)
                    _, enqueued_at, _ = cursor.fetchone()

        # Asked once: a signal with no receivers still costs a lookup per send.
        announce = task_enqueued.has_listeners(type(self))
        for result in results:
            # Known only now; the result is not yet anyone else's to see.
            object.__setattr__(result, "enqueued_at", enqueued_at)
            if announce:
                task_enqueued.send(type(self), task_result=result)
        return results

    def _existing(
        self, job_id: str, task: Task, calls: list[tuple[list[Any], dict[str, Any]]]
    ) -> list[TaskResult]:
        """The result of the job that holds the key; enqueue anew if it was deleted since."""
        try:
            return [self.get_result(job_id)]
        except TaskResultDoesNotExist:
            return self.enqueue_many(task, calls)

    def _ready_results(
        self, task: Task, ids: list[str], calls: list[tuple[list[Any], dict[str, Any]]]
    ) -> list[TaskResult]:
        return [
            ready_result(task, job_id, args, kwargs, self.alias)
            for job_id, (args, kwargs) in zip(ids, calls, strict=True)
        ]

    def _enqueue_transaction(self, needed: bool) -> AbstractContextManager:
        """
        The transaction that holds a limited enqueue's key rows, or the lock
        of a unique key held over time (jobs.uniqueness), and inserts its
        jobs: the caller's, or one of its own. Any other enqueue is one
        statement and needs none.
        """
        if not needed:
            return nullcontext()
        return transaction.atomic(using=self.database, savepoint=False)

    @contextmanager
    def _enqueue_cursor(self) -> Iterator[Any]:
        """
        A cursor on the caller's own connection, and so in its transaction,
        that binds on the server and prepares ENQUEUE once per connection.

        Django's cursors bind on the client, so their statements cannot be
        prepared, and planning ENQUEUE takes longer than running it. Django's
        query logging and execute wrappers still see the statement.
        """
        # Imported here, so that a project without psycopg 3 gets the system
        # check's error (jobs.E004) rather than an ImportError.
        import psycopg

        wrapper = connections[self.database]
        wrapper.close_if_health_check_failed()
        wrapper.ensure_connection()
        raw = wrapper.connection
        cursor = psycopg.Cursor(raw)
        make = wrapper.make_debug_cursor if wrapper.queries_logged else wrapper.make_cursor
        wrapped = make(cursor)
        # Django turns preparing off for the whole connection (None); our
        # server-bound cursor is the only one it can apply to.
        threshold = raw.prepare_threshold
        if self.queue_options.prepared_statements:
            raw.prepare_threshold = 0
        try:
            with wrapped:
                yield wrapped
        finally:
            raw.prepare_threshold = threshold

    def get_result(self, result_id: str) -> TaskResult:
        try:
            job_id = uuid.UUID(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(f"{result_id!r} is not a task id.") from None
        try:
            job = Job.objects.using(self.database).get(id=job_id)
        except Job.DoesNotExist:
            raise TaskResultDoesNotExist(f"No task with id {result_id}.") from None
        try:
            task = self.load_task(job.task_path, job)
        except Exception as error:
            # The task no longer imports, its module fails as it loads, or the
            # job names a backend that is gone: the row still says what is known.
            task = UnloadableTask.standing_in_for(job.task_path, self.alias, error)
        return job_result(job, task)

    def load_task(self, task_path: str, job: Job | None = None) -> Task:
        """
        The Task that task_path names, or that took it as an alias; given
        the job, that Task as it was enqueued, so that get_result() returns
        a result equal to the one enqueue() did.
        """
        task = find_task(task_path)
        if job is None:
            return task
        changes = {
            "queue_name": job.queue,
            "priority": job.priority,
            "run_after": job.run_after,
            "backend": job.backend,
        }
        if isinstance(task, JobTask):
            changes["unique_key"] = job.unique_key
            changes["tags"] = tuple(job.tags)
            changes["meta"] = job.meta or None
            timeout = job.timeout.total_seconds() if job.timeout is not None else None
            # The row holds the values in force; the task keeps its own
            # (None: the backend's) unless the enqueue gave others.
            for name, stored, in_force in zip(
                ("max_attempts", "timeout"),
                (job.max_attempts, timeout),
                self._in_force(task),
                strict=True,
            ):
                if stored != in_force:
                    changes[name] = stored
        if all(getattr(task, name) == value for name, value in changes.items()):
            return task
        return replace(task, **changes)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors = list(self._option_errors)
        if importlib.util.find_spec("psycopg") is None:
            errors.append(
                checks.Error(
                    f"Task backend {self.alias!r} needs psycopg 3, which is not installed.",
                    hint="pip install 'psycopg[binary]' (or psycopg[c] to build it against "
                    "your libpq). psycopg2 alone is not enough.",
                    id="jobs.E004",
                )
            )
        if self.database not in connections.settings:
            errors.append(
                checks.Error(
                    f"Task backend {self.alias!r} uses database {self.database!r}, "
                    "which is not in DATABASES.",
                    hint="Name a database of DATABASES in the backend's OPTIONS['DATABASE'].",
                    id="jobs.E002",
                )
            )
        elif connections[self.database].vendor != "postgresql":
            errors.append(
                checks.Error(
                    f"Task backend {self.alias!r} needs PostgreSQL; database "
                    f"{self.database!r} is {connections[self.database].vendor}.",
                    hint=f"Set DATABASES[{self.database!r}]['ENGINE'] to "
                    "'django.db.backends.postgresql' (PostgreSQL 15 or newer, with its "
                    "NAME, USER, PASSWORD and HOST), or point the backend's "
                    "OPTIONS['DATABASE'] at such a database.",
                    id="jobs.E003",
                )
            )
        return errors

    def _in_force(self, task: Task) -> tuple[int, float | None]:
        """The task's max_attempts and timeout: its own, else the backend's."""
        max_attempts = getattr(task, "max_attempts", None)
        timeout = getattr(task, "timeout", None)
        return (
            self.queue_options.max_attempts if max_attempts is None else max_attempts,
            self.queue_options.timeout if timeout is None else timeout,
        )


def find_task(task_path: str) -> Task:
    """
    The Task at task_path, or the one that names task_path among its aliases.

    Aliases are known once their task's module is imported: the first path
    that does not import has every installed app's `tasks` module imported.
    """
    try:
        task = import_string(task_path)
    except ImportError as error:
        if task_path not in TASK_ALIASES:
            _import_task_modules()
        if task_path not in TASK_ALIASES:
            raise InvalidTask(f"Task {task_path!r} does not import: {error}") from error
        task = import_string(TASK_ALIASES[task_path])
    if not isinstance(task, Task):
        raise InvalidTask(f"{task_path!r} is not a task: decorate it with @task.")
    return task


def current_task_path(task_path: str) -> str:
    """The path of the task that runs a job queued under task_path (itself, or by an alias)."""
    try:
        return find_task(task_path).module_path
    except InvalidTask:
        return task_path


def pipeline(connection: Any) -> AbstractContextManager[Any]:
    """
    psycopg's pipeline mode on the caller's connection, where its libpq has
    it (14 and newer); otherwise statements simply wait for their results.
    """
    import psycopg

    return connection.pipeline() if psycopg.Pipeline.is_supported() else nullcontext()


@functools.cache
def _import_task_modules() -> None:
    autodiscover_modules("tasks")


def ready_result(
    task: Task,
    job_id: str,
    args: list[Any],
    kwargs: dict[str, Any],
    backend: str,
    enqueued_at: Any = None,
) -> TaskResult:
    """The TaskResult of a job just enqueued."""
    return TaskResult(
        task=task,
        id=job_id,
        status=TaskResultStatus.READY,
        enqueued_at=enqueued_at,
        started_at=None,
        last_attempted_at=None,
        finished_at=None,
        args=args,
        kwargs=kwargs,
        backend=backend,
        errors=[],
        worker_ids=[],
    )


def job_result(job: Job, task: Task) -> TaskResult:
    """The TaskResult that Django's API shows for a job row."""
    status = job.status
    if status == JobStatus.CANCELLED:
        # Django's TaskResultStatus has no CANCELLED; a cancelled job did not
        # succeed, and its errors say why.
        status = JobStatus.FAILED
    elif status == JobStatus.WAITING:
        # Nor WAITING: a job that waits for others has not started.
        status = JobStatus.READY
    result = TaskResult(
        task=task,
        id=str(job.id),
        status=TaskResultStatus(status),
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        last_attempted_at=job.last_attempted_at,
        finished_at=job.finished_at,
        args=job.args,
        kwargs=job.kwargs,
        backend=job.backend,
        errors=[
            TaskError(
                exception_class_path=error["exception_class_path"],
                traceback=error["traceback"],
            )
            for error in job.errors
        ],
        worker_ids=list(job.worker_ids),
    )
    if job.status == JobStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", job.return_value)
    return result
