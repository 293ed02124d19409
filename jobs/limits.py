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

A keyed limit's values may differ by key (`per_key`: a dict from key to
values, or a callable asked when the key's row is made), and any limit's may
be changed at runtime (jobs.limit_overrides). Each key row holds the values
it runs with; the claim reads nothing else.
"""

import inspect
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.tasks.base import Task
from django.tasks.exceptions import InvalidTask
from django.utils.module_loading import import_string

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
    # The values of some keys: a dict from key (its text, as key_text() gives
    # it) to the values it replaces, or a callable from key to such a dict or
    # None (LIMITS' `per_key`).
    per_key: Mapping[str, "Values"] | Callable[[str], object] | None = field(
        default=None, compare=False
    )

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

    def key_text(self, key: str) -> str:
        """A key row's key without the limit's name: the argument's value, as text."""
        return key.removeprefix(f"{self.name}:")

    @property
    def defaults(self) -> "Values":
        """The values of a key that per_key does not name."""
        return Values(self.concurrency, self.rate, self.period, self.burst)

    def values(self, key: str) -> "Values":
        """What a key row of this limit runs with, before any runtime override."""
        base = self.defaults
        if self.per_key is None:
            return base
        text = self.key_text(key)
        if callable(self.per_key):
            answer = self.per_key(text)
            if answer is None:
                return base
            try:
                return parse_values(answer, base, f"per_key({text!r}) of limit {self.name!r}")
            except LimitConfigurationError as error:
                raise InvalidTask(str(error)) from None
        return self.per_key.get(text, base)

    def row(self, key: str) -> list[Any]:
        """The jobs_limit_key row to create for a key, as ENSURE_LIMIT_KEYS takes it."""
        return [key, self.name, *self.values(key)]

    def describe(self) -> str:
        per = f" per {self.key}" if self.keyed else ""
        varies = "; some keys their own" if self.per_key is not None else ""
        return (
            Values(self.concurrency, self.rate, self.period, self.burst).describe() + per + varies
        )


@dataclass(frozen=True, slots=True)
class Values:
    """A limit's values for one key: concurrency, and a rate as starts per period with its burst."""

    concurrency: int | None
    rate: int | None
    period: float | None
    burst: int | None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.astuple())

    def astuple(self) -> tuple[int | None, int | None, float | None, int | None]:
        return (self.concurrency, self.rate, self.period, self.burst)

    def describe(self) -> str:
        parts = []
        if self.concurrency is not None:
            parts.append(f"{self.concurrency} at once")
        if self.rate is not None:
            parts.append(f"{self.rate} per {_period_text(self.period)} (burst {self.burst})")
        return ", ".join(parts) or "fair shares only"


_VALUE_KEYS = {"concurrency", "rate", "burst"}


def parse_values(spec: object, base: Values, where: str) -> Values:
    """
    `{"concurrency": ..., "rate": ..., "burst": ...}`, each optional, over
    `base`: what it names replaces base's; a new rate brings its own burst
    (its count) unless it names one.
    """
    if not isinstance(spec, Mapping):
        raise LimitConfigurationError(f"{where} is a dict of concurrency, rate and burst.")
    _refuse_unknown(spec, _VALUE_KEYS, where)
    concurrency, rate, period, burst = base
    if "concurrency" in spec:
        concurrency = _whole(spec["concurrency"], f"{where}: concurrency")
    if spec.get("rate") is not None:
        rate, period = parse_rate(spec["rate"])
        burst = rate
    if spec.get("burst") is not None:
        if rate is None:
            raise LimitConfigurationError(f"{where}: burst goes with a rate.")
        burst = _whole(spec["burst"], f"{where}: burst")
    return Values(concurrency, rate, period, burst)


def _refuse_unknown(spec: Mapping, known: set[str], where: str) -> None:
    unknown = sorted(map(str, set(spec) - known))
    if unknown:
        raise LimitConfigurationError(
            f"{where} has unknown settings {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )


def _whole(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LimitConfigurationError(f"{what} is a whole number of at least 1.")
    return value


def _parse_per_key(name: str, spec: object, base: Values) -> object:
    if spec is None:
        return None
    if isinstance(spec, str):
        try:
            spec = import_string(spec)
        except ImportError as error:
            raise LimitConfigurationError(
                f"Limit {name!r}: per_key {spec!r} does not import ({error})."
            ) from None
    if callable(spec):
        return spec
    if not isinstance(spec, Mapping):
        raise LimitConfigurationError(
            f"Limit {name!r}: per_key is a dict from key to values, or a callable "
            "(or its dotted path) that returns them for a key."
        )
    return {
        str(key): parse_values(values, base, f"Limit {name!r}: per_key[{key!r}]")
        for key, values in spec.items()
    }


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


_KNOWN = {"tasks", "queues", "key", "concurrency", "rate", "burst", "per_key"}


def _parse_limit(name: object, spec: object) -> Limit:
    if not isinstance(name, str) or not name or ":" in name or len(name) > 100:
        raise LimitConfigurationError(
            f"Limit name {name!r} must be a non-empty string of at most 100 characters without ':'."
        )
    if not isinstance(spec, Mapping):
        raise LimitConfigurationError(f"Limit {name!r} is a dict, not {type(spec).__name__}.")
    _refuse_unknown(spec, _KNOWN, f"Limit {name!r}")
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
    concurrency, rate, period, burst = parse_values(
        {field: spec[field] for field in _VALUE_KEYS if spec.get(field) is not None},
        Values(None, None, None, None),
        f"Limit {name!r}",
    )
    if concurrency is None and rate is None and key is None:
        raise LimitConfigurationError(
            f"Limit {name!r} sets neither concurrency nor rate, nor a key to share fairly by."
        )
    if spec.get("per_key") is not None and key is None:
        raise LimitConfigurationError(
            f"Limit {name!r}: per_key gives keys their own values, so it goes with a key."
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
        per_key=_parse_per_key(name, spec.get("per_key"), Values(concurrency, rate, period, burst)),
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
