"""
Running one claimed job in this process: load its task, call it as Django's
Tasks contract says (signals, TaskContext, the result it sees), and say how
the attempt ended. The executor runs it on each of its threads; jobs.testing
runs it in the test's own process.
"""

import asyncio
import inspect
import json
import logging
import time
import traceback
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError, close_old_connections
from django.tasks import TaskContext, TaskResult, TaskResultStatus, task_backends
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task, TaskError
from django.tasks.exceptions import InvalidTask
from django.tasks.signals import task_finished, task_started
from django.utils.json import normalize_json

from .. import tracing
from ..exceptions import JobTimeout, Snooze, class_path
from ..jsonb import unstorable
from ..retries import Retry, RetryRules
from .attempts import (
    backend_backoff,
    exception_message,
    failed_outcome,
    postponed_outcome,
    snoozed_outcome,
)
from .protocol import READY, SNOOZED, SUCCESSFUL, ClaimedJob, Outcome

if TYPE_CHECKING:
    from ..backend import PostgresBackend

logger = logging.getLogger("jobs.worker")


def loads(text: str) -> Any:
    """json.loads, without its cost for the empty list and object that most jobs carry."""
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return json.loads(text)


def stored(value: Any) -> tuple[Any, str]:
    """A task's return value as Django's API gives it back, and as jsonb stores it."""
    value = normalize_json(value)
    return_value = json.dumps(value, allow_nan=False, ensure_ascii=False)
    if reason := unstorable(return_value):
        raise ValueError(f"The return value holds {reason}, which Postgres cannot store in jsonb.")
    return value, return_value


def _attempt_span(job: ClaimedJob) -> AbstractContextManager[Any]:
    """The attempt's span, a child of the enqueuer's (jobs.tracing)."""
    carrier = loads(job.trace_context) if job.trace_context else None
    return tracing.attempt_span(job.task_path, job.queue, job.id, job.attempt, carrier)


def as_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def job_backend(alias: str) -> "PostgresBackend":
    """
    The queue's backend that a job names; InvalidTask when this worker has
    no such backend in TASKS, or has one that is not the queue's.
    """
    # Imported here: a spawned executor imports this module before Django,
    # and so the models that the backend imports, is set up.
    from ..backend import PostgresBackend

    if alias not in task_backends.settings:
        raise InvalidTask(f"task backend {alias!r} is not in this worker's TASKS setting")
    backend = task_backends[alias]
    if not isinstance(backend, PostgresBackend):
        raise InvalidTask(
            f"task backend {alias!r} is a {type(backend).__name__} on this worker, "
            "not a PostgresBackend"
        )
    return backend


def retry_rules_of(job: ClaimedJob, default: Retry) -> RetryRules:
    """The retry rules of a job's task; `default`'s where the task does not load here."""
    try:
        task = job_backend(job.backend).load_task(job.task_path)
    except Exception:
        return RetryRules.of(None, default)
    return RetryRules.of(task, backend_backoff(task.get_backend().queue_options))


class JobRunner:
    """Runs claimed jobs in this process and says how each ended."""

    def __init__(self, worker_id: str, backend: str, *, close_connections: bool = True) -> None:
        self.worker_id = worker_id
        # The worker's own task backend, whose MISSING_TASK_GRACE applies to
        # a job that names a backend this worker does not have.
        self.backend = backend
        # Around each job, Django's connections that are broken or past their
        # age are closed, as around a request. Not inside a test's
        # transaction (jobs.testing), which Django would close with them.
        self.close_connections = close_connections
        self._tasks: dict[tuple[str, str], tuple[Task, BaseTaskBackend]] = {}
        self._retry_rules: dict[str, RetryRules] = {}

    def run(self, job: ClaimedJob) -> Outcome:
        if not tracing.enabled():
            return self._run(job)
        with _attempt_span(job) as span:
            outcome = self._run(job)
            tracing.record_outcome(span, outcome.status)
            return outcome

    def _run(self, job: ClaimedJob) -> Outcome:
        started = time.monotonic()
        try:
            task, backend = self._task(job)
        except Exception as error:
            return self._task_missing(job, error)
        args, kwargs = loads(job.args), loads(job.kwargs)
        result = self._task_result(job, task, args, kwargs)
        if self.close_connections:
            close_old_connections()
        task_started.send(sender=type(backend), task_result=result)
        # Any BaseException a task raises (SystemExit, KeyboardInterrupt, a
        # custom one) fails its attempt, as in Django's ImmediateBackend, and
        # the executor goes on: only the death of the process is ExecutorDied.
        # task_finished is sent inside the except clause, so that Django's
        # own receiver logs the exception with its traceback.
        try:
            if task.takes_context:
                value = task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
            value, return_value = stored(value)
        except Snooze as error:
            outcome = self._snoozed(job, task, backend, error, time.monotonic() - started)
            if outcome.status != SNOOZED:
                self._finished(backend, result, outcome, error=error)
        except BaseException as error:
            outcome = self._failed(job, task, error, time.monotonic() - started)
            self._finished(backend, result, outcome, error=error)
        else:
            outcome = Outcome(
                job.id,
                job.attempt,
                SUCCESSFUL,
                time.time(),
                None,
                return_value,
                None,
                time.monotonic() - started,
            )
            self._finished(backend, result, outcome, value=value)
        finally:
            if self.close_connections:
                close_old_connections()
        if outcome.status == SNOOZED:
            # Outside the except clause: a snooze is no error to log with
            # its traceback.
            self._finished(backend, result, outcome)
        return outcome

    def is_async(self, job: ClaimedJob) -> bool:
        """Whether a job's task is a coroutine function (False when it does not load here)."""
        try:
            task, _ = self._task(job)
        except Exception:
            return False
        return inspect.iscoroutinefunction(task.func)

    async def arun(self, job: ClaimedJob) -> Outcome:
        """
        Run a job of an async task on this thread's event loop (jobs.worker.async_slots),
        as run() runs any job: its signals are sent from Django's sync thread
        (sync_to_async), where their receivers may use the ORM, and a timeout
        cancels the coroutine.
        """
        if not tracing.enabled():
            return await self._arun(job)
        with _attempt_span(job) as span:
            outcome = await self._arun(job)
            tracing.record_outcome(span, outcome.status)
            return outcome

    async def _arun(self, job: ClaimedJob) -> Outcome:
        started = time.monotonic()
        # The timeout counts from the take, as the coordinator's clock does,
        # the signals before the task's code included.
        deadline = None if job.timeout is None else asyncio.get_running_loop().time() + job.timeout
        try:
            task, backend = self._task(job)
        except Exception as error:
            return self._task_missing(job, error)
        args, kwargs = loads(job.args), loads(job.kwargs)
        result = self._task_result(job, task, args, kwargs)
        if self.close_connections:
            await sync_to_async(close_old_connections)()
        await sync_to_async(task_started.send)(sender=type(backend), task_result=result)
        error: BaseException | None = None
        value, return_value = None, "null"
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                if task.takes_context:
                    value = await task.acall(TaskContext(task_result=result), *args, **kwargs)
                else:
                    value = await task.acall(*args, **kwargs)
            value, return_value = stored(value)
        except BaseException as raised:
            error = raised
            # Its own timeout, not one the task's code met (an HTTP client's).
            if isinstance(raised, TimeoutError) and scope.expired():
                error = JobTimeout(f"Timed out after {time.monotonic() - started:.1f} s")
                error.__cause__ = raised
        duration = time.monotonic() - started
        if isinstance(error, Snooze):
            outcome = await sync_to_async(self._snoozed)(job, task, backend, error, duration)
        elif error is not None:
            outcome = self._failed(job, task, error, duration)
        else:
            outcome = Outcome(
                job.id, job.attempt, SUCCESSFUL, time.time(), None, return_value, None, duration
            )
        await sync_to_async(self._finished_raising)(backend, result, outcome, value, error)
        return outcome

    def _finished_raising(
        self,
        backend: BaseTaskBackend,
        result: TaskResult,
        outcome: Outcome,
        value: Any,
        error: BaseException | None,
    ) -> None:
        """_finished() inside an except clause for the error, as run() sends it."""
        if error is None or outcome.status == SNOOZED:
            self._finished(backend, result, outcome, value=value)
            return
        try:
            raise error
        except BaseException:
            self._finished(backend, result, outcome, error=error)

    def _failed(
        self, job: ClaimedJob, task: Task, error: BaseException, duration: float
    ) -> Outcome:
        """A retry or FAILED, as the task's exception asks (RetryJob, DoNotRetry) or its rules."""
        retry_in, reason = self._rules(task).after(error, job.attempt)
        return failed_outcome(
            job,
            exception_class_path=class_path(type(error)),
            message=exception_message(error),
            traceback_text="".join(traceback.format_exception(error)),
            worker_id=self.worker_id,
            duration=duration,
            retry_in=retry_in,
            reason=reason,
        )

    def _snoozed(
        self,
        job: ClaimedJob,
        task: Task,
        backend: BaseTaskBackend,
        snooze: Snooze,
        duration: float,
    ) -> Outcome:
        """
        Given back due in snooze.seconds, its attempt not spent, while the job
        has snoozed fewer times than it may; then FAILED, so that a task that
        always snoozes ends. The count is read only here, off the claim's path.
        """
        from ..models import Job

        allowed = getattr(task, "max_snoozes", None)
        if allowed is None:
            allowed = backend.queue_options.max_snoozes
        try:
            snoozes = (
                Job.objects.using(backend.database)
                .filter(id=job.id)
                .values_list("snoozes", flat=True)
                .first()
            )
        except DatabaseError as error:
            # The count is what the cap needs, not the snooze: it goes on,
            # and the cap is checked at the next one.
            logger.warning("Job %s: its snoozes could not be counted (%s)", job.id, error)
            snoozes = None
        if len(snoozes or ()) < allowed:
            return snoozed_outcome(job, snooze.seconds, duration)
        return failed_outcome(
            job,
            exception_class_path=class_path(Snooze),
            message=f"{snooze} once more, after {allowed} snoozes",
            traceback_text="".join(traceback.format_exception(snooze)),
            worker_id=self.worker_id,
            duration=duration,
            retry_in=None,
            reason=f"not retried: the job snoozed {allowed} times, as many as max_snoozes allows",
        )

    def _rules(self, task: Task) -> RetryRules:
        """A task's retry rules, made once per process."""
        rules = self._retry_rules.get(task.module_path)
        if rules is None:
            default = backend_backoff(task.get_backend().queue_options)
            rules = self._retry_rules[task.module_path] = RetryRules.of(task, default)
        return rules

    def _task(self, job: ClaimedJob) -> tuple[Task, BaseTaskBackend]:
        """The task and its backend, looked up once per process."""
        key = (job.backend, job.task_path)
        found = self._tasks.get(key)
        if found is None:
            task = job_backend(job.backend).load_task(job.task_path)
            found = self._tasks[key] = (task, task.get_backend())
        return found

    def _task_missing(self, job: ClaimedJob, error: Exception) -> Outcome:
        """
        The outcome of a job whose task, or the task backend it names, does
        not load on this worker.

        In a rolling deploy the web may run code that this worker has not
        got yet, a task or a TASKS alias: the job goes back to READY, its
        attempt not spent, and waits with a backoff for a worker that has
        it, MISSING_TASK_GRACE seconds (its backend's, else this worker's)
        from when it was first due (or last failed). Only then does it fail.
        """
        try:
            grace = job_backend(job.backend).queue_options.missing_task_grace
        except InvalidTask:
            grace = job_backend(self.backend).queue_options.missing_task_grace
        errors = loads(job.errors)
        waiting_since = max(
            [job.run_after or job.enqueued_at, *(entry.get("at", 0.0) for entry in errors)]
        )
        now = time.time()
        waited = now - waiting_since
        message = exception_message(error)
        if grace is not None and waited >= grace:
            return failed_outcome(
                job,
                exception_class_path=class_path(type(error)),
                message=(
                    f"{message} (no worker could load the task for {waited:.0f} s, "
                    f"MISSING_TASK_GRACE is {grace:.0f} s)"
                ),
                traceback_text="".join(traceback.format_exception(error)),
                worker_id=self.worker_id,
                duration=0.0,
                retry_in=None,
                reason="not retried: no worker could load the task",
            )
        return postponed_outcome(job, waited, message)

    def _task_result(
        self, job: ClaimedJob, task: Task, args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult:
        if job.queue != task.queue_name or job.priority != task.priority or job.run_after:
            task = replace(
                task,
                queue_name=job.queue,
                priority=job.priority,
                run_after=as_datetime(job.run_after) if job.run_after else None,
            )
        errors = loads(job.errors)
        return TaskResult(
            task=task,
            id=job.id,
            status=TaskResultStatus.RUNNING,
            enqueued_at=as_datetime(job.enqueued_at),
            started_at=as_datetime(job.started_at),
            last_attempted_at=as_datetime(job.last_attempted_at),
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=job.backend,
            errors=[
                TaskError(
                    exception_class_path=e["exception_class_path"],
                    traceback=e["traceback"],
                )
                for e in errors
            ],
            worker_ids=list(job.worker_ids),
        )

    def _finished(
        self,
        backend: BaseTaskBackend,
        result: TaskResult,
        outcome: Outcome,
        *,
        value: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """
        Send task_finished with the result as the outcome leaves it.

        A failed attempt that will be retried, or a snooze, sends status READY
        and no finished_at, since the job is not finished: READY is what get_result()
        reads until the next attempt. Its errors hold this attempt's error.
        """
        # A snoozed job is READY again, as get_result() reads it.
        status = READY if outcome.status == SNOOZED else outcome.status
        object.__setattr__(result, "status", TaskResultStatus(status))
        if status != READY:
            object.__setattr__(result, "finished_at", as_datetime(outcome.finished_at))
        if error is None:
            object.__setattr__(result, "_return_value", value)
        else:
            result.errors.append(
                TaskError(
                    exception_class_path=class_path(type(error)),
                    traceback="".join(traceback.format_exception(error)),
                )
            )
        task_finished.send(sender=type(backend), task_result=result)
