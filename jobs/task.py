"""
The queue's Task: Django's, with the per-task options of the queue (attempts,
timeout, unique key, tags, meta, a limit's key) and the old paths a renamed
task still answers to.
"""

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.tasks import TaskResult
from django.tasks.base import Task
from django.tasks.exceptions import InvalidTask
from django.utils import timezone

from .calls import as_tags
from .retries import Retry, RetryDelay, exception_classes

# Old task paths (`@task(aliases=[...])`) and the path of the task that
# answers to each now, registered as task modules are imported.
TASK_ALIASES: dict[str, str] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class JobTask(Task):
    """
    A Django Task with the queue's per-task options.

    `@task(max_attempts=5, timeout=30, retry=Retry(base=5))` sets them for
    every call (jobs.retries for the retry options);
    `.using(countdown=10, unique_key="...", tags=["billing"], meta={"account": 42})`
    for one enqueue (jobs.uniqueness for unique_for, unique_states and
    replace); `.using(limit_key=...)` gives the key of the task's keyed
    limit (jobs.limits) instead of the argument that the limit names.
    """

    max_attempts: int | None = None
    timeout: float | None = None
    unique_key: str | None = None
    # How the unique key holds (jobs.uniqueness): for `unique_for` seconds
    # after an enqueue, over the jobs of `unique_states`; or, with `replace`,
    # by replacing the arguments and due time of the key's job that has not
    # started.
    unique_for: float | None = None
    unique_states: tuple[str, ...] | None = None
    replace: bool = False
    # Labels and JSON data stored on the job to find it by (the admin's
    # filters); the queue never reads them. get_result()'s task carries them.
    tags: tuple[str, ...] = ()
    meta: dict[str, Any] | None = None
    limit_key: str | None = None
    # Paths this task answered to before it was renamed or moved: jobs queued
    # under them still run, and show this task's name.
    aliases: tuple[str, ...] = ()
    # The retry policy (jobs.retries): a Retry or a callable (attempt,
    # exception) -> seconds; None: the backend's backoff. retry_on, when
    # given, are the only exceptions retried; dont_retry_on are never.
    retry: Retry | RetryDelay | None = None
    retry_on: tuple[type[BaseException], ...] = ()
    dont_retry_on: tuple[type[BaseException], ...] = ()
    # How many times a job may snooze (jobs.exceptions.Snooze); None: the
    # backend's MAX_SNOOZES.
    max_snoozes: int | None = None

    def __post_init__(self) -> None:
        # Zero-argument super() does not work in a slotted dataclass.
        Task.__post_init__(self)
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "tags", as_tags(self.tags))
        if self.unique_states is not None and not isinstance(self.unique_states, str):
            object.__setattr__(self, "unique_states", tuple(self.unique_states))
        for name in ("retry_on", "dont_retry_on"):
            object.__setattr__(self, name, exception_classes(name, getattr(self, name)))
        for alias in self.aliases:
            TASK_ALIASES[alias] = self.module_path

    def using(
        self,
        *,
        countdown: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        unique_key: str | None = None,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        limit_key: str | None = None,
        unique_for: float | None = None,
        unique_states: Sequence[str] | None = None,
        replace: bool | None = None,
        **kwargs: Any,
    ) -> "JobTask":
        """Django's `using()`, plus the queue's options and a countdown in seconds."""
        if countdown is not None:
            if kwargs.get("run_after") is not None:
                raise TypeError("Give countdown or run_after, not both.")
            kwargs["run_after"] = timezone.now() + timedelta(seconds=countdown)
        task = Task.using(self, **kwargs)
        changes = {
            name: value
            for name, value in (
                ("max_attempts", max_attempts),
                ("timeout", timeout),
                ("unique_key", unique_key),
                ("tags", None if tags is None else as_tags(tags)),
                ("meta", meta),
                ("limit_key", limit_key),
                ("unique_for", unique_for),
                ("unique_states", None if unique_states is None else tuple(unique_states)),
                ("replace", replace),
            )
            if value is not None
        }
        return dataclasses.replace(task, **changes) if changes else task

    def enqueue_many(
        self, calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]]
    ) -> list[TaskResult]:
        """Enqueue one job per (args, kwargs) pair, all in one round trip."""
        return self.get_backend().enqueue_many(self, calls)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnloadableTask(JobTask):
    """
    What get_result() gives as the task of a job whose task cannot be loaded
    here: its module_path is the job's, and calling it raises InvalidTask
    with the reason.
    """

    reason: str = ""

    def __post_init__(self) -> None:
        # Nothing to validate against: the task itself could not be loaded.
        pass

    @classmethod
    def standing_in_for(cls, task_path: str, backend: str, error: Exception) -> "UnloadableTask":
        reason = f"Task {task_path!r} cannot be loaded: {type(error).__name__}: {error}"

        def unloadable(*args: Any, **kwargs: Any) -> None:
            raise InvalidTask(reason)

        module, _, name = task_path.rpartition(".")
        unloadable.__module__, unloadable.__qualname__, unloadable.__name__ = module, name, name
        return cls(func=unloadable, backend=backend, reason=reason)
