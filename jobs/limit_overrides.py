"""
Limits changed at runtime, without a deploy: "lower the SMS rate now".

An override replaces some values of a limit of LIMITS (its concurrency, its
rate) for every key of it, or for one key, until it is removed. It is a row
of jobs_limit_override; setting or removing one rewrites the key rows of its
limit in the same transaction (sync_limit), and the claims of every worker
read the key rows, so no job starts beyond a lowered value once the change
commits, and workers are told at once when a key gets more room. Each change
is recorded (jobs_limit_change: who, when, through what, before and after)
and logged on the `jobs.limits` logger.

    from jobs import limit_overrides

    limit_overrides.set_override("sms-provider", rate="2/s", by="alice")
    limit_overrides.set_override("per-tenant", key="acme", concurrency=10, by="alice")
    limit_overrides.remove_override("sms-provider", by="alice")

The admin (Limit overrides) and `manage.py jobs limits set|reset` call these.
"""

import itertools
import json
import logging
from typing import Any

from django.db import connections, transaction
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends
from django.tasks.exceptions import InvalidTask
from django.utils import timezone

from . import queries
from .limits import Limit, LimitConfigurationError, Values, parse_values
from .models import LimitChange, LimitOverride

logger = logging.getLogger("jobs.limits")

# Key rows rewritten per statement.
SYNC_BATCH = 1000
# Seconds during which the workers settle again, at each heartbeat, the key
# rows of a limit that changed (see RECENTLY_CHANGED): a row made by an enqueue
# that read the overrides just before a change committed has the old values.
RECENT_CHANGES = 60.0

RECENTLY_CHANGED = """
SELECT DISTINCT name FROM jobs_limit_change
WHERE changed_at > statement_timestamp() - make_interval(secs => %(seconds)s)
"""


class LimitOverrideError(ValueError):
    """An override that cannot be set: the message says which value and why."""


def set_override(
    name: str,
    *,
    key: str | None = None,
    concurrency: int | None = None,
    rate: str | None = None,
    burst: int | None = None,
    exact: bool = False,
    by: str = "",
    via: str = "code",
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
) -> LimitChange:
    """
    Override a limit's concurrency and/or rate (with its burst: the rate's
    count unless given), for every key or one. Values already overridden and
    not given here stay overridden, unless `exact`: then the override is
    what is given, no more. Returns the change recorded.
    """
    limit, values = checked_override(name, key, concurrency, rate, burst, backend=backend)
    database = task_backends[backend].database
    with transaction.atomic(using=database):
        override, _ = (
            LimitOverride.objects.using(database)
            .select_for_update()
            .get_or_create(name=name, key=key or "", defaults={"changed_at": timezone.now()})
        )
        before = describe(override, limit)
        if values.concurrency is not None or exact:
            override.concurrency = values.concurrency
        if values.rate is not None or exact:
            override.rate, override.period, override.burst = (
                values.rate,
                values.period,
                values.burst,
            )
        override.changed_at, override.changed_by = timezone.now(), by[:150]
        override.save(using=database)
        return _record(limit, key, before, describe(override, limit), by, via, database)


def checked_override(
    name: str,
    key: str | None,
    concurrency: int | None,
    rate: str | None,
    burst: int | None,
    *,
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
) -> tuple[Limit, Values]:
    """The limit and the values of an override, or a LimitOverrideError saying what is wrong."""
    limit = _limit(name, key, backend)
    if concurrency is None and rate is None:
        raise LimitOverrideError("Give a concurrency, a rate or both.")
    given = {"concurrency": concurrency, "rate": rate, "burst": burst}
    try:
        values = parse_values(
            {field: value for field, value in given.items() if value is not None},
            Values(None, None, None, None),
            "The override",
        )
    except LimitConfigurationError as error:
        raise LimitOverrideError(str(error)) from None
    return limit, values


def remove_override(
    name: str,
    *,
    key: str | None = None,
    by: str = "",
    via: str = "code",
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
) -> LimitChange | None:
    """Give a limit (or one key of it) its settings' values again; None when it had no override."""
    limit = _limit(name, key, backend, known=False)
    database = task_backends[backend].database
    with transaction.atomic(using=database):
        override = (
            LimitOverride.objects.using(database)
            .select_for_update()
            .filter(name=name, key=key or "")
            .first()
        )
        if override is None:
            return None
        before = describe(override, limit)
        override.delete(using=database)
        after = describe(LimitOverride(name=name, key=key or ""), limit)
        return _record(limit, key, before, after, by, via, database)


def overrides(*, backend: str = DEFAULT_TASK_BACKEND_ALIAS) -> list[LimitOverride]:
    """The overrides in force, by limit and key."""
    return list(LimitOverride.objects.using(task_backends[backend].database))


def sync_limit(cursor: Any, limit: Limit) -> int:
    """
    Bring every key row of a limit to the values it should run with (its
    settings' for its key, under the overrides in force); return how many
    changed. The one place that rewrites key rows' values: a worker that
    starts, a change of an override, and the heartbeat after one call it.
    """
    cursor.execute(queries.limit_values.KEYS_OF_LIMIT, {"name": limit.name})
    keys = [key for (key,) in cursor.fetchall()]
    changed = 0
    for batch in itertools.batched(keys, SYNC_BATCH):
        rows = json.dumps([_row(limit, key) for key in batch], separators=(",", ":"))
        cursor.execute(queries.limit_values.SYNC_LIMIT_KEYS, {"limit_keys": rows})
        changed += cursor.fetchone()[0]
    return changed


def _row(limit: Limit, key: str) -> list[Any]:
    """
    A key row's settings; the limit's own when its per_key callable fails
    for the key: a project's callable that raises must not stop a worker.
    """
    try:
        return limit.row(key)
    except Exception as error:
        logger.warning(
            "Limit %s: per_key failed for %r (%s); its defaults apply", limit.name, key, error
        )
        return [key, limit.name, *limit.defaults]


def recently_changed(cursor: Any) -> list[str]:
    """The limits changed in the last RECENT_CHANGES seconds (see RECENTLY_CHANGED)."""
    cursor.execute(RECENTLY_CHANGED, {"seconds": RECENT_CHANGES})
    return [name for (name,) in cursor.fetchall()]


def _limit(name: str, key: str | None, backend: str, *, known: bool = True) -> Limit:
    limits = task_backends[backend].queue_options.limits
    limit = limits.by_name.get(name)
    if limit is None:
        if not known:
            return Limit(name=name)
        names = ", ".join(sorted(limits.by_name)) or "none"
        raise LimitOverrideError(f"No limit named {name!r} in LIMITS (limits: {names}).")
    if key is not None and not limit.keyed:
        raise LimitOverrideError(f"Limit {name!r} has no key: override it whole, without a key.")
    if key is not None and (not isinstance(key, str) or not key):
        raise LimitOverrideError(f"A key is a non-empty string, not {key!r}.")
    return limit


def describe(override: LimitOverride, limit: Limit) -> str:
    """The values a limit (or its key) runs with under an override, in words."""
    base = limit.defaults
    if override.key:
        try:
            base = limit.values(limit.key_of(override.key))
        except InvalidTask:
            pass
    if override.concurrency is None and override.rate is None:
        return f"{base.describe()} (settings)"
    rated = override if override.rate is not None else base
    return Values(
        override.concurrency if override.concurrency is not None else base.concurrency,
        rated.rate,
        rated.period,
        rated.burst,
    ).describe()


def _record(
    limit: Limit, key: str | None, before: str, after: str, by: str, via: str, database: str
) -> LimitChange:
    """Rewrite the limit's key rows and record the change, in the caller's transaction."""
    with connections[database].cursor() as cursor:
        cursor.execute(queries.limit_values.LOCK_LIMIT, {"name": limit.name})
        sync_limit(cursor, limit)
    change = LimitChange.objects.using(database).create(
        changed_at=timezone.now(),
        changed_by=by[:150],
        via=via,
        name=limit.name,
        key=key or "",
        before=before[:200],
        after=after[:200],
    )
    logger.info(
        "Limit %s%s: %s → %s, by %s (%s)",
        limit.name,
        f" key {key!r}" if key else "",
        before,
        after,
        by or "unknown",
        via,
    )
    return change
