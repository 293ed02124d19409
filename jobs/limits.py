"""
Flow control declared in settings: concurrency limits, rate limits and fair
shares, for every worker at once.

    TASKS = {"default": {"BACKEND": "jobs.backend.PostgresBackend", "OPTIONS": {
        "LIMITS": {
            "sms-provider": {"tasks": ["accounts.tasks.send_sms"], "rate": "10/s"},
            "sms-per-user": {"tasks": ["accounts.tasks.send_sms"], "key": "user_id",
                             "concurrency": 1},
            "reports": {"queues": ["reports"], "concurrency": 2},
        },
    }}}

A limit applies to the jobs of its tasks or of its queues. With a `key` (the
name of an argument of the task, or the value given by
`task.using(limit_key=...)`) it holds for each value apart: one row per key in
jobs_limit_key, which the claim locks and counts (see queries.limits.LIMITED_CLAIM).
Without one it holds for all its jobs together.

A job is under at most two limits: its own (the keyed one, else its task's,
else its queue's), whose key also groups jobs for fair shares, and one shared
with other keys (a task's or a queue's limit over a keyed one).
"""

import inspect
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.tasks.base import Task
from django.tasks.exceptions import InvalidTask

# The longest key a job can name (the column's length).
KEY_LENGTH = 255

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class LimitConfigurationError(ValueError):
    """A LIMITS entry that cannot be enforced; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Limit:
    """
    One entry of LIMITS.

    The rate is a token bucket of `burst` tokens (the rate's count unless
    given) that refills at `rate` tokens per `period` seconds: a start takes
    a token, so after an idle spell at most `burst` jobs start at once, and
    over any span of one period at most `burst + rate` do.
    """

    name: str
    tasks: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    key: str | None = None
    concurrency: int | None = None
    rate: int | None = None
    period: float | None = None
    burst: int | None = None

    @property
    def keyed(self) -> bool:
        return self.key is not None

    @property
    def scope(self) -> int:
        """Which of a job's limits is its own: keyed (0), then task (1), then queue (2)."""
        return 0 if self.keyed else 1 if self.tasks else 2

    def key_of(self, value: object) -> str:
        """The jobs_limit_key row of this limit for a key value (or of the limit, unkeyed)."""
        if not self.keyed:
            return self.name
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return f"{self.name}:{text}"

    def row(self, key: str) -> list[Any]:
        """The jobs_limit_key row to create for a key, as ENSURE_LIMIT_KEYS takes it."""
        return [key, self.name, self.concurrency, self.rate, self.period, self.burst]

    def describe(self) -> str:
        parts = []
        if self.concurrency is not None:
            parts.append(f"{self.concurrency} at once")
        if self.rate is not None:
            parts.append(f"{self.rate} per {_period_text(self.period)} (burst {self.burst})")
        if not parts:
            parts.append("fair shares only")
        per = f" per {self.key}" if self.keyed else ""
        return ", ".join(parts) + per


def _period_text(period: float | None) -> str:
    for unit, seconds in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if period and period >= seconds and period % seconds == 0:
            count = int(period // seconds)
            return unit if count == 1 else f"{count}{unit}"
    return "s" if period == 1 else f"{period:g}s"


def parse_rate(text: object) -> tuple[int, float]:
    """'10/s', '500/m', '3/10s': (starts, period in seconds)."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise LimitConfigurationError(
            f"rate {text!r} is not '<count>/<unit>', such as '10/s', '500/m' or '3/10s' "
            "(units s, m, h, d)."
        )
    count, multiple, unit = match.groups()
    period = (float(multiple) if multiple else 1.0) * _UNIT_SECONDS[unit]
    if int(count) < 1 or period <= 0:
        raise LimitConfigurationError(f"rate {text!r} must allow at least one start per period.")
    return int(count), period


def parse_limits(setting: object) -> tuple[Limit, ...]:
    """The LIMITS option as Limits, or a LimitConfigurationError naming the bad entry."""
    if setting is None:
        return ()
    if not isinstance(setting, Mapping):
        raise LimitConfigurationError("LIMITS is a dict of limit names to their settings.")
    return tuple(_parse_limit(name, spec) for name, spec in setting.items())


_KNOWN = {"tasks", "queues", "key", "concurrency", "rate", "burst"}


def _parse_limit(name: object, spec: object) -> Limit:
    if not isinstance(name, str) or not name or ":" in name or len(name) > 100:
        raise LimitConfigurationError(
            f"Limit name {name!r} must be a non-empty string of at most 100 characters without ':'."
        )
    if not isinstance(spec, Mapping):
        raise LimitConfigurationError(f"Limit {name!r} is a dict, not {type(spec).__name__}.")
    unknown = sorted(set(spec) - _KNOWN)
    if unknown:
        raise LimitConfigurationError(
            f"Limit {name!r} has unknown settings {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_KNOWN))}."
        )
    tasks, queues = spec.get("tasks", ()), spec.get("queues", ())
    for label, values in (("tasks", tasks), ("queues", queues)):
        if not isinstance(values, list | tuple) or not all(
            isinstance(v, str) and v for v in values
        ):
            raise LimitConfigurationError(f"Limit {name!r}: {label} is a list of names.")
    if bool(tasks) == bool(queues):
        raise LimitConfigurationError(f"Limit {name!r} names either tasks or queues, not both.")
    key = spec.get("key")
    if key is not None and (not isinstance(key, str) or not key.isidentifier()):
        raise LimitConfigurationError(f"Limit {name!r}: key is the name of a task argument.")
    if key is not None and queues:
        raise LimitConfigurationError(
            f"Limit {name!r}: a key names an argument of its tasks, so a keyed limit names tasks."
        )
    concurrency = spec.get("concurrency")
    if concurrency is not None and (
        not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
    ):
        raise LimitConfigurationError(
            f"Limit {name!r}: concurrency is a whole number of at least 1."
        )
    rate = period = burst = None
    if spec.get("rate") is not None:
        rate, period = parse_rate(spec["rate"])
        burst = spec.get("burst", rate)
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
            raise LimitConfigurationError(f"Limit {name!r}: burst is a whole number of at least 1.")
    elif spec.get("burst") is not None:
        raise LimitConfigurationError(f"Limit {name!r}: burst goes with a rate.")
    if concurrency is None and rate is None and key is None:
        raise LimitConfigurationError(
            f"Limit {name!r} sets neither concurrency nor rate, nor a key to share fairly by."
        )
    return Limit(
        name=name,
        tasks=tuple(tasks),
        queues=tuple(queues),
        key=key,
        concurrency=concurrency,
        rate=rate,
        period=period,
        burst=burst,
    )


@dataclass(frozen=True, slots=True)
class JobLimits:
    """The limits of one task on one queue: its own, and one shared with other keys."""

    own: Limit
    shared: Limit | None

    def keys(self, task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[str | None]:
        """[own key, shared key] of one call."""
        own = self.own.key_of(key_value(task, self.own, args, kwargs) if self.own.keyed else None)
        return [own, self.shared.key_of(None) if self.shared else None]


class Limits:
    """The limits of a backend, looked up by task and queue."""

    def __init__(self, limits: Sequence[Limit]) -> None:
        self.all = tuple(limits)
        self.by_name = {limit.name: limit for limit in self.all}
        self._cache: dict[tuple[str, str], JobLimits | None] = {}

    def __bool__(self) -> bool:
        return bool(self.all)

    def of(self, task_path: str, queue: str) -> JobLimits | None:
        """A job's limits, or an InvalidTask when more apply than a job can keep."""
        try:
            return self._cache[task_path, queue]
        except KeyError:
            pass
        matching = self._matching(task_path, queue)
        if _too_many(matching):
            raise InvalidTask(f"{task_path} on queue {queue!r} {_refusal(matching)}")
        found = (
            JobLimits(matching[0], matching[1] if len(matching) == 2 else None)
            if matching
            else None
        )
        self._cache[task_path, queue] = found
        return found

    def _matching(self, task_path: str | None, queue: str) -> list[Limit]:
        return sorted(
            (limit for limit in self.all if task_path in limit.tasks or queue in limit.queues),
            key=lambda limit: limit.scope,
        )

    def conflicts(self, task_queues: Mapping[str, str]) -> list[str]:
        """
        What of() would refuse at every enqueue: each task of task_queues
        (a task's path, and the queue it is enqueued on unless told another)
        on its queue, and a task no limit names on each queue a limit names.
        """
        cases = [*task_queues.items()]
        cases += [
            (None, queue) for queue in sorted({q for limit in self.all for q in limit.queues})
        ]
        return [
            f"{task_path or 'Every task'} on queue {queue!r} {_refusal(matching)}"
            for task_path, queue in cases
            if _too_many(matching := self._matching(task_path, queue))
        ]


def _too_many(matching: Sequence[Limit]) -> bool:
    return len(matching) > 2 or (len(matching) == 2 and matching[1].keyed)


def _refusal(matching: Sequence[Limit]) -> str:
    names = ", ".join(limit.name for limit in matching)
    return f"falls under limits {names}: a job keeps at most two, and at most one of them keyed."


def key_value(task: Task, limit: Limit, args: Sequence[Any], kwargs: Mapping[str, Any]) -> object:
    """The value of a keyed limit's argument in one call, or an InvalidTask saying why not."""
    given = getattr(task, "limit_key", None)
    if given is not None:
        return given
    if kwargs.get(limit.key) is not None:
        return kwargs[limit.key]
    try:
        # A task that takes its context is called with it first.
        context = (None,) if getattr(task, "takes_context", False) else ()
        bound = inspect.signature(task.func).bind_partial(*context, *args, **kwargs)
    except TypeError as error:
        raise InvalidTask(
            f"{task.module_path}: the arguments do not fit the task: {error}."
        ) from None
    bound.apply_defaults()
    # None, whether given or the argument's default, is no key: every such
    # job would share one slot (`name:null`), a limit nobody meant.
    if bound.arguments.get(limit.key) is None:
        raise InvalidTask(
            f"{task.module_path} is limited per {limit.key!r} (limit {limit.name!r}), but the "
            f"call gives no {limit.key!r}: pass it, or give a key with using(limit_key=...)."
        )
    return bound.arguments[limit.key]
