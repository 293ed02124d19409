"""
The queue's numbers, read by the admin dashboard and the Prometheus endpoint.

The table may hold millions of finished jobs, so none of the queries (in
jobs/queries/observe.py) reads the whole history: live counts read the partial indexes of
READY and RUNNING rows (as small as the backlog), and the last hour's
throughput and latency read the finished-jobs index over a one-hour window.
"""

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connections
from django.http import Http404, HttpRequest, HttpResponse
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends

from . import queries
from .limit_overrides import describe as describe_override
from .limits import Limit, Limits
from .models import FINISHED_STATUSES, JobStatus, LimitOverride
from .queries.observe import LATENCY_BUCKETS


@dataclass
class QueueStats:
    """A queue's backlog now and what it finished in the last hour."""

    name: str
    ready: int = 0
    scheduled: int = 0
    running: int = 0
    oldest_ready_age: float | None = None
    finished: dict[str, int] = field(default_factory=dict)
    # Paused: no worker starts its jobs (see jobs.operations.pause_queue).
    paused: bool = False

    @property
    def successful(self) -> int:
        return self.finished.get(JobStatus.SUCCESSFUL, 0)

    @property
    def failed(self) -> int:
        return self.finished.get(JobStatus.FAILED, 0)

    @property
    def cancelled(self) -> int:
        return self.finished.get(JobStatus.CANCELLED, 0)


@dataclass(frozen=True)
class Minute:
    """Jobs that finished within one minute, all queues together."""

    start: datetime
    successful: int
    failed: int
    cancelled: int


@dataclass(frozen=True)
class Latency:
    """Enqueue→start waits of the last hour: percentiles and a cumulative histogram."""

    count: int
    total: float
    p50: float | None
    p95: float | None
    p99: float | None
    buckets: tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class WorkerStats:
    """One registered worker, with the jobs it is running now."""

    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_heartbeat: datetime
    heartbeat_age: float
    in_flight: int
    alive: bool


@dataclass(frozen=True)
class KeyVerdict:
    """
    Whether a key of a limit lets a job start now, and when its bucket next
    holds a token: the claim's own count (queries.observe.LIMIT_KEY_VERDICTS), which every
    page that says why a job waits reads as it is.
    """

    key: str
    name: str
    concurrency: int | None
    running: int
    rate: int | None
    period: float | None
    # Its bucket's tokens now; None without a rate.
    tokens: float | None
    # No free slot.
    full: bool
    # No whole token.
    out_of_tokens: bool
    # Seconds until its bucket holds a whole token: 0 when it holds one now.
    next_token_in: float | None

    @property
    def held(self) -> bool:
        """Whether the key lets nothing start now."""
        return self.full or self.out_of_tokens

    @property
    def state(self) -> str:
        if self.full:
            return f"full: {self.running} of {self.concurrency} running"
        if self.out_of_tokens:
            return "rate reached: waits for its next token"
        return "open"


@dataclass(frozen=True)
class KeyStats(KeyVerdict):
    """One key of a limit that runs jobs or has due jobs waiting."""

    waiting: int


@dataclass
class OverrideStats:
    """An override in force: for which key ("" for every key), the values, who set it and when."""

    key: str
    values: str
    changed_by: str
    changed_at: datetime


@dataclass
class LimitStats:
    """A limit of LIMITS: its keys in use, how many of its jobs run and wait."""

    name: str
    rule: str
    keys: int = 0
    running: int = 0
    waiting: int = 0
    # Waiting jobs whose key lets nothing start now.
    held: int = 0
    busiest: list[KeyStats] = field(default_factory=list)
    # Its values changed at runtime (jobs.limit_overrides), for every key or some.
    overrides: list[OverrideStats] = field(default_factory=list)


# Keys of each limit that the dashboard lists, the ones with most waiting first.
BUSIEST_KEYS = 10


@dataclass(frozen=True)
class Snapshot:
    """Everything the dashboard and the Prometheus endpoint show, read at one moment."""

    queues: list[QueueStats]
    minutes: list[Minute]
    latency: Latency
    workers: list[WorkerStats]
    limits: list[LimitStats] = field(default_factory=list)


def _fetch(cursor, statement: str, params: object = None) -> list[tuple]:
    cursor.execute(statement, params)
    return cursor.fetchall()


def snapshot(using: str | None = None, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS) -> Snapshot:
    """
    Read the queue's numbers: a handful of index-bounded queries.

    The backend (a TASKS alias) names the queues to show and when a worker
    counts as dead; its database is read unless `using` names another.
    """
    tasks_backend = task_backends[backend]
    options = tasks_backend.queue_options
    with connections[using or options.database].cursor() as cursor:
        live = _fetch(cursor, queries.observe.LIVE_COUNTS)
        finished = _fetch(cursor, queries.observe.FINISHED_BY_MINUTE)
        paused = {name for (name,) in _fetch(cursor, queries.workers.PAUSED_QUEUES)}
        names = sorted(
            set(tasks_backend.queues or ())
            | {row[0] for row in live}
            | {row[0] for row in finished}
            | paused
        )
        oldest = dict(_fetch(cursor, queries.observe.OLDEST_READY, {"queues": names}))
        latency_row = _fetch(cursor, queries.observe.LATENCY)[0]
        bounds = _fetch(cursor, queries.observe.MINUTES_OF_LAST_HOUR)
        workers = _fetch(cursor, queries.observe.WORKERS)
        keys = _fetch(cursor, queries.observe.LIMIT_KEYS_IN_USE) if options.limits else []
        overrides = _fetch(cursor, queries.observe.LIMIT_OVERRIDES) if options.limits else []
        verdicts = _key_verdicts(cursor, [row[1] for row in keys]) if keys else {}

    queues = {
        name: QueueStats(name, oldest_ready_age=oldest.get(name), paused=name in paused)
        for name in names
    }
    for name, status, due_or_count, scheduled in live:
        if status == JobStatus.READY:
            queues[name].ready, queues[name].scheduled = due_or_count, scheduled
        else:
            queues[name].running = due_or_count
    per_minute: dict[datetime, dict[str, int]] = {start: {} for (start,) in bounds}
    for name, status, minute, count in finished:
        queues[name].finished[status] = queues[name].finished.get(status, 0) + count
        bucket = per_minute.setdefault(minute, {})
        bucket[status] = bucket.get(status, 0) + count
    minutes = [
        Minute(
            start,
            counts.get(JobStatus.SUCCESSFUL, 0),
            counts.get(JobStatus.FAILED, 0),
            counts.get(JobStatus.CANCELLED, 0),
        )
        for start, counts in sorted(per_minute.items())
    ]
    count, total, percentiles, cumulative = latency_row
    p50, p95, p99 = percentiles or (None, None, None)
    return Snapshot(
        queues=list(queues.values()),
        minutes=minutes,
        latency=Latency(
            count, total, p50, p95, p99, tuple(zip(LATENCY_BUCKETS, cumulative, strict=True))
        ),
        workers=[WorkerStats(*row, alive=row[7] <= options.worker_dead_after) for row in workers],
        limits=_limit_stats(options.limits, keys, verdicts, overrides),
    )


def key_verdicts(
    keys: Sequence[str], using: str | None = None, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> dict[str, KeyVerdict]:
    """The verdict on each of these keys that has a row, by key (see KeyVerdict)."""
    with connections[using or task_backends[backend].database].cursor() as cursor:
        return _key_verdicts(cursor, keys)


def _key_verdicts(cursor, keys: Sequence[str]) -> dict[str, KeyVerdict]:
    rows = _fetch(cursor, queries.observe.LIMIT_KEY_VERDICTS, {"keys": list(keys), "limit": 1})
    return {row[0]: KeyVerdict(*row) for row in rows}


def _limit_stats(
    limits: Limits, rows: list[tuple], verdicts: dict[str, KeyVerdict], overrides: list[tuple]
) -> list[LimitStats]:
    """
    Each configured limit with its keys in use (rows of queries.observe.LIMIT_KEYS_IN_USE)
    and the verdict on each of them.
    """
    stats = {limit.name: LimitStats(limit.name, limit.describe()) for limit in limits.all}
    for name, key, *_, waiting in rows:
        verdict = verdicts.get(key)
        if verdict is None:
            # Pruned between the two reads: it held nothing any more.
            continue
        # A limit taken out of settings keeps its rows until its jobs are gone.
        limit = stats.setdefault(name, LimitStats(name, "no longer in LIMITS"))
        limit.keys += 1
        limit.running += verdict.running
        limit.waiting += waiting
        if verdict.held:
            limit.held += waiting
        if len(limit.busiest) < BUSIEST_KEYS:
            limit.busiest.append(KeyStats(**vars(verdict), waiting=waiting))
    for name, key, concurrency, rate, period, burst, changed_by, changed_at in overrides:
        if name in stats:
            override = LimitOverride(
                name=name, key=key, concurrency=concurrency, rate=rate, period=period, burst=burst
            )
            values = describe_override(override, limits.by_name.get(name) or Limit(name))
            stats[name].overrides.append(OverrideStats(key, values, changed_by, changed_at))
    return list(stats.values())


@dataclass(frozen=True)
class Window:
    """One task's finished jobs over a window: counts, run time percentiles, mean wait."""

    runs: int
    failed: int
    runtime: tuple[float | None, float | None, float | None]  # p50, p95, p99 seconds
    mean_wait: float | None

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.runs if self.runs else None


@dataclass(frozen=True)
class TaskStats:
    """A task's last hour and last day, and its latest failure."""

    task_path: str
    hour: Window
    day: Window
    last_failure_at: datetime | None
    last_failure_id: str | None


def task_statistics(
    using: str | None = None, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> list[TaskStats]:
    """Every task that finished a job in the last day, busiest first (see TASK_STATISTICS)."""
    with connections[using or task_backends[backend].database].cursor() as cursor:
        rows = _fetch(cursor, queries.observe.TASK_STATISTICS)
    none = (None, None, None)
    return [
        TaskStats(
            task_path=row[0],
            hour=Window(row[1], row[2], tuple(row[3] or none), row[4]),
            day=Window(row[5], row[6], tuple(row[7] or none), row[8]),
            last_failure_at=row[9],
            last_failure_id=str(row[10]) if row[10] else None,
        )
        for row in rows
    ]


def totals_by_status(
    using: str | None = None, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> dict[str, int]:
    """Every job in the table by status, finished history included."""
    with connections[using or task_backends[backend].database].cursor() as cursor:
        counts = dict(_fetch(cursor, queries.observe.TOTALS_BY_STATUS))
    return {status: counts.get(status, 0) for status in JobStatus.values}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


# One metric family: its name, its help text and its samples (labels, value).
Family = tuple[str, str, list[tuple[dict[str, str], float]]]


def render_prometheus(data: Snapshot, totals: dict[str, int]) -> str:
    """The numbers in Prometheus' text exposition format (version 0.0.4)."""
    lines: list[str] = []
    for name, help_text, samples in [
        *_queue_families(data, totals),
        *_latency_families(data.latency),
        *_limit_families(data.limits),
        (
            "jobs_workers_live",
            "Workers whose heartbeat is fresh.",
            [({}, sum(1 for worker in data.workers if worker.alive))],
        ),
    ]:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            rendered = ",".join(f'{key}="{_label(str(val))}"' for key, val in labels.items())
            lines.append(
                f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


def _queue_families(data: Snapshot, totals: dict[str, int]) -> list[Family]:
    queues = data.queues
    return [
        (
            "jobs_queue_depth",
            "READY jobs due now, per queue.",
            [({"queue": q.name}, q.ready) for q in queues],
        ),
        (
            "jobs_scheduled",
            "READY jobs waiting for a later run_at, per queue.",
            [({"queue": q.name}, q.scheduled) for q in queues],
        ),
        (
            "jobs_running",
            "RUNNING jobs, per queue.",
            [({"queue": q.name}, q.running) for q in queues],
        ),
        (
            "jobs_queue_paused",
            "1 while the queue is paused (no job of it starts), else 0.",
            [({"queue": q.name}, int(q.paused)) for q in queues],
        ),
        (
            "jobs_oldest_ready_age_seconds",
            "Seconds the oldest due READY job of the queue has waited (0 when none waits).",
            [({"queue": q.name}, q.oldest_ready_age or 0.0) for q in queues],
        ),
        (
            "jobs_by_status",
            "Jobs in the table by status, finished history included.",
            [({"status": status}, count) for status, count in totals.items()],
        ),
        (
            "jobs_finished_last_hour",
            "Jobs that finished in the last 60 minutes, per queue and status.",
            [
                ({"queue": q.name, "status": status}, q.finished.get(status, 0))
                for q in queues
                for status in FINISHED_STATUSES
            ],
        ),
    ]


def _latency_families(latency: Latency) -> list[Family]:
    return [
        (
            "jobs_start_latency_last_hour_seconds_bucket",
            "Jobs finished in the last hour whose enqueue-to-start wait was at most le seconds.",
            [({"le": _number(bound)}, count) for bound, count in latency.buckets]
            + [({"le": "+Inf"}, latency.count)],
        ),
        (
            "jobs_start_latency_last_hour_seconds_sum",
            "Sum of those waits, in seconds.",
            [({}, latency.total)],
        ),
        (
            "jobs_start_latency_last_hour_seconds_count",
            "Number of those waits.",
            [({}, latency.count)],
        ),
    ]


def _limit_families(limits: list[LimitStats]) -> list[Family]:
    return [
        (
            "jobs_limit_running",
            "RUNNING jobs counted against the limit, all its keys together.",
            [({"limit": limit.name}, limit.running) for limit in limits],
        ),
        (
            "jobs_limit_waiting",
            "Due READY jobs under the limit, all its keys together.",
            [({"limit": limit.name}, limit.waiting) for limit in limits],
        ),
        (
            "jobs_limit_held",
            "Due READY jobs under the limit whose key lets nothing start now (full or out of "
            "tokens).",
            [({"limit": limit.name}, limit.held) for limit in limits],
        ),
        (
            "jobs_limit_keys",
            "Keys of the limit that run jobs or have due jobs waiting.",
            [({"limit": limit.name}, limit.keys) for limit in limits],
        ),
    ]


def prometheus_view(request: HttpRequest) -> HttpResponse:
    """
    The Prometheus scrape target, behind a bearer token.

    Without JOBS_METRICS_TOKEN the endpoint does not exist (404): queue names
    and volumes are nobody's business by default.
    """
    token = getattr(settings, "JOBS_METRICS_TOKEN", None)
    if not token:
        raise Http404("The metrics endpoint is disabled.")
    supplied = request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(supplied, f"Bearer {token}".encode()):
        return HttpResponse(
            "A valid bearer token is required.\n",
            status=401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="jobs metrics"'},
        )
    return HttpResponse(
        render_prometheus(snapshot(), totals_by_status()),
        content_type="text/plain; version=0.0.4; charset=utf-8",
    )
