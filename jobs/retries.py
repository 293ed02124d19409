"""
Retry policies: how long a failed attempt waits for the next one, and which
exceptions are worth another attempt at all.

    from jobs.retries import Retry

    @task(retry=Retry(base=5, cap=600), retry_on=[ProviderError], dont_retry_on=[BadNumber])
    def send_sms(...): ...

A task without a policy of its own retries every exception with the backend's
backoff (RETRY_BACKOFF_BASE, RETRY_BACKOFF_MAX). The policy lives in the
task's code, which the web and the workers both import: nothing of it is
stored with the job.
"""

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.tasks.exceptions import InvalidTask

from .exceptions import MAX_DELAY, DoNotRetry, JobInterrupted, RetryJob

# A callable policy: (the attempt that failed, 1 for the first; its
# exception) -> seconds until the next attempt.
RetryDelay = Callable[[int, BaseException], float]


@dataclass(frozen=True, slots=True)
class Retry:
    """
    Exponential backoff: the attempt after attempt n waits base * factor^(n-1)
    seconds, at most cap, of which the share `jitter` is random. With the
    default jitter of 0.5 ("equal jitter") the gaps never shrink from one
    attempt to the next, and workers that failed together do not retry
    together.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        for name, lowest in (("base", 0.0), ("factor", 1.0), ("cap", 0.0)):
            value = getattr(self, name)
            if not _is_number(value) or value < lowest:
                raise InvalidTask(f"Retry {name} must be a number of at least {lowest:g}.")
        if self.cap > MAX_DELAY:
            raise InvalidTask(f"Retry cap must be at most {MAX_DELAY:g} s (a year).")
        if not _is_number(self.jitter) or not 0 <= self.jitter <= 1:
            raise InvalidTask("Retry jitter is the random share of each delay, from 0 to 1.")

    def delay(self, attempt: int, error: BaseException | None = None) -> float:
        try:
            grown = self.base * self.factor ** (attempt - 1)
        except OverflowError:
            grown = math.inf  # which the cap bounds
        ceiling = min(self.cap, grown)
        return ceiling * (1 - self.jitter) + random.uniform(0, ceiling * self.jitter)

    def describe(self) -> str:
        jitter = f", {self.jitter:.0%} of it random" if self.jitter else ""
        return f"{self.base:g} s * {self.factor:g}^(n-1), at most {self.cap:g} s{jitter}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def exception_classes(name: str, value: Iterable[Any]) -> tuple[type[BaseException], ...]:
    """retry_on or dont_retry_on as a tuple of exception classes, or an InvalidTask."""
    classes = (value,) if isinstance(value, type) else tuple(value)
    if not all(isinstance(cls, type) and issubclass(cls, BaseException) for cls in classes):
        raise InvalidTask(f"{name} is a list of exception classes, such as [ConnectionError].")
    return classes


@dataclass(frozen=True, slots=True)
class RetryRules:
    """What a task's failed attempts become: its policy and filters, or the backend's."""

    backoff: Retry | RetryDelay
    # The backend's backoff: a callable backoff that fails falls back on it.
    default: Retry
    retry_on: tuple[type[BaseException], ...] = ()
    dont_retry_on: tuple[type[BaseException], ...] = ()
    # Whether the backoff is the task's own (for the job's timeline).
    own: bool = False

    @classmethod
    def of(cls, task: object, default: Retry) -> "RetryRules":
        """The rules of a task (any Task: a plain Django one has none of its own)."""
        backoff = getattr(task, "retry", None)
        return cls(
            backoff=default if backoff is None else backoff,
            default=default,
            retry_on=getattr(task, "retry_on", ()),
            dont_retry_on=getattr(task, "dont_retry_on", ()),
            own=backoff is not None,
        )

    def after(self, error: BaseException, attempt: int) -> tuple[float | None, str]:
        """
        Seconds until the next attempt, or None when this exception ends
        the job now; and the reason, in words, for the job's timeline.
        Whether attempts remain is the caller's to check.
        """
        name = type(error).__name__
        if isinstance(error, DoNotRetry):
            return None, "not retried: the task raised DoNotRetry"
        if isinstance(error, RetryJob) and error.countdown is not None:
            return error.countdown, "the task asked for this delay (RetryJob)"
        if isinstance(error, JobInterrupted):
            # Ended by a neighbour's timeout or cancel in its executor: its
            # own exception lists say nothing about it.
            return self._backoff(attempt, error)
        if not isinstance(error, RetryJob):
            if self.dont_retry_on and isinstance(error, self.dont_retry_on):
                return None, f"not retried: {name} is in the task's dont_retry_on"
            if self.retry_on and not isinstance(error, self.retry_on):
                listed = ", ".join(cls.__name__ for cls in self.retry_on)
                return None, f"not retried: {name} is not in the task's retry_on ({listed})"
        return self._backoff(attempt, error)

    def _backoff(self, attempt: int, error: BaseException) -> tuple[float, str]:
        if isinstance(self.backoff, Retry):
            whose = "the task's" if self.own else "the backend's"
            return self.backoff.delay(attempt), f"{whose} backoff, {self.backoff.describe()}"
        name = getattr(self.backoff, "__qualname__", type(self.backoff).__name__)
        # A policy that fails must not lose the attempt's outcome: the
        # backend's backoff stands in, and the timeline says why.
        try:
            seconds = self.backoff(attempt, error)
        except Exception as failure:
            problem = f"raised {type(failure).__name__}: {failure}"
        else:
            if _is_number(seconds) and 0 <= seconds <= MAX_DELAY:
                return float(seconds), f"the task's retry delay {name}()"
            problem = f"returned {seconds!r}, not seconds from 0 to {MAX_DELAY:g}"
        fallback = f"the backend's backoff, {self.default.describe()}"
        return self.default.delay(attempt), f"the task's retry delay {name}() {problem}; {fallback}"


def check_task_policy(task: object) -> None:
    """The retry options of a task, or an InvalidTask that says what is wrong."""
    backoff = getattr(task, "retry", None)
    if backoff is not None and not isinstance(backoff, Retry) and not callable(backoff):
        raise InvalidTask(
            "retry is a jobs.retries.Retry(base=..., factor=..., cap=..., jitter=...) or a "
            "callable (attempt, exception) -> seconds."
        )
