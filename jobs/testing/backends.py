"""
Task backends for tests that take every option a task of the queue takes.

Django's ImmediateBackend and DummyBackend build plain Django Tasks, so a task
declared `@task(max_attempts=5, timeout=30)` fails with a TypeError at import
under them. These two build the queue's JobTask, check a task and its
arguments as PostgresBackend does, and otherwise behave like Django's backends
of the same name:

    TASKS = {"default": {"BACKEND": "jobs.testing.ImmediateBackend", "QUEUES": [...]}}
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import uuid_utils
from django.tasks import TaskResult
from django.tasks.backends import dummy, immediate
from django.tasks.base import Task

from ..backend import PostgresBackend, ready_result
from ..task import JobTask


class JobOptionsMixin:
    """
    What both test backends share with PostgresBackend: the task class, the
    checks of a task and of each call (PostgresBackend.enqueue_params),
    enqueue_many(), ids that are UUIDs and arguments that are JSON.
    """

    task_class = JobTask
    # run_after (and countdown) are accepted as the real backend accepts
    # them; what a backend does with them is its own.
    supports_defer = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        # The real backend with the same QUEUES and OPTIONS, only ever asked
        # to check tasks: a task it would refuse is refused here too.
        self._checker = PostgresBackend(alias, params)

    def validate_task(self, task: Task) -> None:
        self._checker.validate_task(task)

    def enqueue_many(
        self, task: Task, calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]]
    ) -> list[TaskResult]:
        calls = [(list(args), dict(kwargs)) for args, kwargs in calls]
        # Every call checked as the queue checks them, before any is enqueued.
        self._checker.enqueue_params(task, calls)
        return [self.enqueue(task, args, kwargs) for args, kwargs in calls]

    def _new_result(self, task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]) -> TaskResult:
        """
        A READY TaskResult whose arguments went through JSON, as the queue's
        do: a task sees lists where it was given tuples, and a call the queue
        would refuse (an argument that is not JSON, a limit key too long)
        fails here, at enqueue, as it would in production.
        """
        params = self._checker.enqueue_params(task, [(list(args), dict(kwargs))])
        # A job under limits has its keys third.
        [[args, kwargs, *_]] = json.loads(params["calls"])
        # A UUID like the queue's ids: code that stores a task id in a
        # UUIDField works under test.
        return ready_result(task, str(uuid_utils.uuid7()), args, kwargs, self.alias)


class ImmediateBackend(JobOptionsMixin, immediate.ImmediateBackend):
    """
    Runs each task at once, in the caller's thread and transaction, as
    Django's ImmediateBackend does.

    A test wants the task's effects now: run_after and countdown are accepted
    and ignored. The task runs once; max_attempts, timeout and unique_key are
    checked but not acted on, and an exception the task raises (RetryJob and
    DoNotRetry too) leaves the result FAILED with that error.
    """

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]) -> TaskResult:
        result = self._new_result(task, args, kwargs)
        self._execute_task(result)
        return result


class DummyBackend(JobOptionsMixin, dummy.DummyBackend):
    """
    Keeps each enqueued task in `results`, READY, without running it, as
    Django's DummyBackend does; `clear()` empties it.

    A task enqueued with the unique key of one still in `results` returns
    that one and adds nothing, as the queue returns the live job.
    """

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]) -> TaskResult:
        result = self._new_result(task, args, kwargs)
        unique_key = getattr(task, "unique_key", None)
        if unique_key is not None:
            for kept in self.results:
                if getattr(kept.task, "unique_key", None) == unique_key:
                    return deepcopy(kept)
        self._store_result(result)
        return deepcopy(result)
