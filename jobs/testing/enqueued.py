"""
What was enqueued during a test, on any backend, and assertions about it.

Built on Django's `task_enqueued` signal, which the queue's backend and both
test backends send for every task they enqueue.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from django.tasks import TaskResult
from django.tasks.base import Task
from django.tasks.signals import task_enqueued
from django.utils.json import normalize_json


class EnqueuedJobs:
    """
    Records every task enqueued while it is entered, in `results`, in the
    order they were enqueued.

    A task enqueued in a transaction that was rolled back afterwards is
    recorded all the same: the signal is sent at enqueue, not at commit.
    """

    def __init__(self) -> None:
        self.results: list[TaskResult] = []

    def __enter__(self) -> "EnqueuedJobs":
        task_enqueued.connect(self._record, weak=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        task_enqueued.disconnect(self._record)

    def _record(self, sender: type, task_result: TaskResult, **kwargs: Any) -> None:
        self.results.append(task_result)

    def clear(self) -> None:
        self.results.clear()

    def filter(
        self,
        task: Task | str,
        *,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> list[TaskResult]:
        """
        The results of `task` (a task, or its module path), with exactly
        these args and kwargs when they are given.

        Arguments are compared as JSON, the way they are stored: a tuple
        matches a list.
        """
        path = task.module_path if isinstance(task, Task) else task
        return [
            result
            for result in self.results
            if result.task.module_path == path
            and (args is None or _as_json(list(result.args)) == _as_json(list(args)))
            and (kwargs is None or _as_json(dict(result.kwargs)) == _as_json(dict(kwargs)))
        ]

    def assert_enqueued(
        self,
        task: Task | str,
        *,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        count: int | None = None,
    ) -> list[TaskResult]:
        """
        Fail unless `task` was enqueued (with these args and kwargs, when
        given), `count` times exactly when given; return the matching results.
        """
        __tracebackhide__ = True
        matching = self.filter(task, args=args, kwargs=kwargs)
        if count is None and not matching:
            raise AssertionError(f"{_expected(task, args, kwargs)} was not enqueued.\n{self}")
        if count is not None and len(matching) != count:
            raise AssertionError(
                f"{_expected(task, args, kwargs)} was enqueued {_times(len(matching))}, "
                f"not {_times(count)}.\n{self}"
            )
        return matching

    def assert_not_enqueued(
        self,
        task: Task | str,
        *,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """Fail if `task` was enqueued (with these args and kwargs, when given)."""
        __tracebackhide__ = True
        matching = self.filter(task, args=args, kwargs=kwargs)
        if matching:
            raise AssertionError(
                f"{_expected(task, args, kwargs)} was enqueued {_times(len(matching))}.\n{self}"
            )

    def assert_nothing_enqueued(self) -> None:
        __tracebackhide__ = True
        if self.results:
            raise AssertionError(f"Expected nothing enqueued.\n{self}")

    def __str__(self) -> str:
        if not self.results:
            return "Nothing was enqueued."
        lines = [f"Enqueued ({len(self.results)}):"]
        lines += [f"  {_call(result)}" for result in self.results]
        return "\n".join(lines)


def capture_enqueued() -> EnqueuedJobs:
    """
    Record the tasks enqueued inside the block:

        with capture_enqueued() as enqueued:
            signup(...)
        enqueued.assert_enqueued(send_welcome_email, args=[delivery.id])
    """
    return EnqueuedJobs()


def _as_json(value: Any) -> Any:
    try:
        return normalize_json(value)
    except (TypeError, ValueError):
        # Not JSON, so unlike any stored argument; compared as it is.
        return value


def _expected(
    task: Task | str, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
) -> str:
    path = task.module_path if isinstance(task, Task) else task
    filters = []
    if args is not None:
        filters.append(f"args {list(args)!r}")
    if kwargs is not None:
        filters.append(f"kwargs {dict(kwargs)!r}")
    return f"{path} with {' and '.join(filters)}" if filters else path


def _call(result: TaskResult) -> str:
    arguments = [repr(value) for value in result.args]
    arguments += [f"{name}={value!r}" for name, value in result.kwargs.items()]
    return f"{result.task.module_path}({', '.join(arguments)})"


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"
