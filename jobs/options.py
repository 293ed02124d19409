"""
The OPTIONS of a PostgresBackend, parsed once when the backend is created.

    TASKS = {"default": {"BACKEND": "jobs.backend.PostgresBackend", "OPTIONS": {
        "MAX_ATTEMPTS": 5, "RETAIN_SUCCESSFUL": 24 * 3600,
    }}}

Everything that runs with the options (the enqueue, the worker, the
scheduler, the commands, the metrics) reads the typed fields of the backend's
QueueOptions, never the setting's keys. Each field names its key and how its
value is read, beside its default.

A value that cannot be used is a system check's error, reported by the
backend's check(); until it is fixed the queue runs with that option's
default, so that `manage.py check`, the admin and the worker can still load
the backend and say what is wrong. Every command that does work runs the
checks first.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from django.core import checks

from .limits import LimitConfigurationError, Limits, parse_limits
from .retention import PrunePass, Retention, RetentionConfigurationError, parse_retention

# The part of WORKER_DEAD_AFTER that a worker's lease lasts (jobs.worker.lease):
# the rest is the time that a worker waking from a freeze has to stop its runs
# before others may rescue them, and a margin for the peers' clocks, which
# measure the heartbeat's age.
LEASE_SHARE = 0.75
# Heartbeats a worker gets written within one lease, at least: one may be
# late, the next one still renews the lease in time.
HEARTBEATS_PER_LEASE = 2


class OptionValueError(ValueError):
    """An option's value that cannot be used; the message says what it must be."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def seconds(value: object) -> float:
    if not _is_number(value) or value <= 0:
        raise OptionValueError("a positive number of seconds")
    return float(value)


def delay(value: object) -> float:
    if not _is_number(value) or value < 0:
        raise OptionValueError("a number of seconds, 0 or more")
    return float(value)


def seconds_or_none(value: object) -> float | None:
    if value is not None and (not _is_number(value) or value <= 0):
        raise OptionValueError("a positive number of seconds, or None for no limit")
    return None if value is None else float(value)


def delay_or_none(value: object) -> float | None:
    if value is not None and (not _is_number(value) or value < 0):
        raise OptionValueError("a number of seconds, 0 or more, or None for ever")
    return None if value is None else float(value)


def attempts(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionValueError("a whole number of at least 1")
    return value


def snoozes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OptionValueError("a whole number, 0 or more")
    return value


def flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise OptionValueError("True or False")
    return value


def alias(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise OptionValueError("the alias of a database in DATABASES, such as 'default'")
    return value


def limit_set(value: object) -> Limits:
    # A LimitConfigurationError says which entry is wrong: the check shows it as it is.
    return Limits(parse_limits(value))


def retention_rules(value: object) -> Retention:
    # A RetentionConfigurationError says which rule is wrong: the check shows it as it is.
    return parse_retention(value, delay_or_none)


def option(key: str, setting_default: Any, parse: Callable[[Any], Any]) -> Any:
    """A field of QueueOptions: the OPTIONS key it is read from, how, and its default."""
    return field(
        default_factory=lambda: parse(setting_default),
        metadata={"key": key, "default": setting_default, "parse": parse},
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueOptions:
    """A backend's OPTIONS, the defaults filled in."""

    # Which database alias holds the queue's tables.
    database: str = option("DATABASE", "default", alias)
    # Attempts per job unless the task or the enqueue says otherwise.
    max_attempts: int = option("MAX_ATTEMPTS", 3, attempts)
    # Seconds a running job that was cancelled has to end on its own
    # (jobs.cancellation) before its executor is killed; 0: killed at once.
    cancel_grace: float = option("CANCEL_GRACE", 5.0, delay)
    # Times a job may snooze (jobs.exceptions.Snooze) unless its task says.
    max_snoozes: int = option("MAX_SNOOZES", 100, snoozes)
    # Seconds an attempt may run before its executor is killed (None: no limit).
    timeout: float | None = option("TIMEOUT", None, seconds_or_none)
    # Retry n (n >= 1) waits d/2 + random(0, d/2) seconds, d = min(MAX, BASE * 2 ** (n - 1)).
    retry_backoff_base: float = option("RETRY_BACKOFF_BASE", 1.0, delay)
    retry_backoff_max: float = option("RETRY_BACKOFF_MAX", 3600.0, delay)
    # Seconds between a worker's polls, its safety net when no NOTIFY arrives.
    # Jobs due sooner than that are announced by NOTIFY; later ones are found
    # by the poll that precedes them.
    poll_interval: float = option("POLL_INTERVAL", 5.0, seconds)
    # Workers heartbeat this often; one silent for WORKER_DEAD_AFTER seconds is
    # dead and its RUNNING jobs are rescued. See heartbeat_problems().
    heartbeat_interval: float = option("HEARTBEAT_INTERVAL", 5.0, seconds)
    worker_dead_after: float = option("WORKER_DEAD_AFTER", 20.0, seconds)
    # Finished jobs are deleted this many seconds after they finished
    # (None: kept for ever), by the workers, in small batches.
    retain_successful: float | None = option("RETAIN_SUCCESSFUL", 7 * 24 * 3600.0, delay_or_none)
    retain_failed: float | None = option("RETAIN_FAILED", 30 * 24 * 3600.0, delay_or_none)
    # Retention of some tasks' or queues' jobs, overriding the two above:
    # {name: {"tasks" or "queues": [...], "successful": s, "failed": s}}.
    # See jobs.retention.
    retain: Retention = option("RETAIN", {}, retention_rules)
    # Prepare the queue's statements once per connection (planning ENQUEUE
    # costs more than running it). Turn off behind a PgBouncer in transaction
    # mode older than 1.21, which cannot keep prepared statements.
    prepared_statements: bool = option("PREPARED_STATEMENTS", True, flag)
    # Seconds a job whose task does not import on a worker waits, READY and
    # its attempt not spent, for a worker that can import it: during a rolling
    # deploy, new web code enqueues tasks that old workers do not have yet.
    # Counted from when the job was first due (or its last failed attempt);
    # after that it fails with an error that says why. None: for ever.
    missing_task_grace: float | None = option("MISSING_TASK_GRACE", 3600.0, delay_or_none)
    # Concurrency limits, rate limits and fair shares across every worker:
    # {name: {"tasks" or "queues": [...], "key": argument, "concurrency": n,
    # "rate": "n/s"}}. See jobs.limits.
    limits: Limits = option("LIMITS", {}, limit_set)

    @classmethod
    def parse(
        cls, backend_alias: str, setting: Mapping[str, Any]
    ) -> tuple["QueueOptions", list[checks.CheckMessage]]:
        """
        The options that the OPTIONS setting of backend_alias gives, and the
        system check errors of what it gets wrong; an option that has one
        keeps its default.
        """
        known = {spec.metadata["key"]: spec for spec in fields(cls)}
        values, errors = {}, []
        for key, value in setting.items():
            spec = known.get(key)
            if spec is None:
                continue
            try:
                values[spec.name] = spec.metadata["parse"](value)
            except LimitConfigurationError as error:
                errors.append(
                    checks.Error(
                        f"Task backend {backend_alias!r}: {error}",
                        hint="Fix OPTIONS['LIMITS']; see jobs.limits for its form.",
                        id="jobs.E007",
                    )
                )
            except RetentionConfigurationError as error:
                values[spec.name] = Retention(usable=False)
                errors.append(
                    checks.Error(
                        f"Task backend {backend_alias!r}: {error}",
                        hint="Fix OPTIONS['RETAIN']; see jobs.retention for its form. Until "
                        "it is fixed, new jobs are kept as RETAIN_SUCCESSFUL and "
                        "RETAIN_FAILED say, and those of its rules are kept until it is.",
                        id="jobs.E010",
                    )
                )
            except OptionValueError as error:
                errors.append(
                    checks.Error(
                        f"Task backend {backend_alias!r}: OPTIONS[{key!r}] is {value!r}; it must "
                        f"be {error}.",
                        hint=f"Until it is fixed the queue runs with the default, "
                        f"{spec.metadata['default']!r}.",
                        id="jobs.E009",
                    )
                )
        unknown = ", ".join(sorted(set(setting) - set(known)))
        if unknown:
            errors.append(
                checks.Error(
                    f"Unknown OPTIONS for task backend {backend_alias!r}: {unknown}.",
                    hint=f"Known options: {', '.join(known)}.",
                    id="jobs.E001",
                )
            )
        options = cls(**values)
        errors += options.heartbeat_problems(backend_alias)
        return options, errors

    def heartbeat_problems(self, backend_alias: str) -> list[checks.CheckMessage]:
        """
        A worker stops its jobs once it has not heartbeaten for LEASE_SHARE of
        WORKER_DEAD_AFTER: heartbeats further apart would have a healthy
        worker stop its own jobs between two of them.
        """
        interval, dead_after = self.heartbeat_interval, self.worker_dead_after
        longest = dead_after * LEASE_SHARE / HEARTBEATS_PER_LEASE
        if interval <= longest:
            return []
        return [
            checks.Error(
                f"Task backend {backend_alias!r}: HEARTBEAT_INTERVAL ({interval:g} s) is "
                f"too long for WORKER_DEAD_AFTER ({dead_after:g} s): a worker stops its "
                f"jobs when it has not heartbeaten for {dead_after * LEASE_SHARE:g} s.",
                hint=f"Heartbeat every {longest:g} s at most, or raise WORKER_DEAD_AFTER "
                f"to {math.ceil(interval * HEARTBEATS_PER_LEASE / LEASE_SHARE)} s or more.",
                id="jobs.E008",
            )
        ]

    def prune_passes(self, backend: str, *, orphaned: bool = False) -> list[PrunePass]:
        """
        The reads of a whole prune (jobs.retention) for the backend of these
        options: the jobs under no rule of RETAIN, then each rule's; with
        `orphaned`, those of rules taken out of RETAIN. The worker and `jobs
        prune` both prune by these.
        """
        return self.retain.passes(
            self.retain_successful, self.retain_failed, backend=backend, orphaned=orphaned
        )
