"""
The queue's numbers, read by the admin dashboard and the Prometheus endpoint.

The table may hold millions of finished jobs, so no query here reads the whole
history: live counts read the partial indexes of READY and RUNNING rows (as
small as the backlog), and the last hour's throughput and latency read the
finished-jobs index over a one-hour window.
"""

import hmac
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connections
from django.http import Http404, HttpRequest, HttpResponse

from .models import FINISHED_STATUSES, JobStatus

# Upper bounds, in seconds, of the enqueue→start latency histogram's buckets.
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)

LIVE_COUNTS = """
SELECT queue, 'READY',
       count(*) FILTER (WHERE run_at <= now()), count(*) FILTER (WHERE run_at > now())
FROM jobs_job WHERE status = 'READY' GROUP BY queue
UNION ALL
SELECT queue, 'RUNNING', count(*), 0
FROM jobs_job WHERE status = 'RUNNING' GROUP BY queue
"""

# How long the oldest due READY job of each queue has waited: one probe per
# queue of the (queue, run_at) index of READY rows.
OLDEST_READY = """
SELECT q.name, extract(epoch FROM now() - oldest.run_at)::float8
FROM unnest(%(queues)s::text[]) AS q(name)
CROSS JOIN LATERAL (
    SELECT run_at FROM jobs_job
    WHERE status = 'READY' AND queue = q.name AND run_at <= now()
    ORDER BY run_at
    LIMIT 1
) AS oldest
"""

# Jobs finished per queue, status and minute over the last 60 minutes (the
# current minute included), read from the (status, finished_at) index.
FINISHED_BY_MINUTE = """
SELECT queue, status, date_trunc('minute', finished_at), count(*)
FROM jobs_job
WHERE status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
  AND finished_at >= date_trunc('minute', now()) - interval '59 minutes'
GROUP BY 1, 2, 3
"""

# Seconds from when a job was due (enqueued, or its run_at if later) to when a
# worker started it, for jobs that finished in the last hour on their first
# attempt: a retried job's run_at has moved to its retry time, so its first
# wait can no longer be told.
_WAITS = """
SELECT GREATEST(0, extract(epoch FROM started_at - GREATEST(enqueued_at, run_at)))::float8 AS wait
FROM jobs_job
WHERE status IN ('SUCCESSFUL', 'FAILED')
  AND finished_at >= now() - interval '1 hour'
  AND attempts = 1
  AND started_at IS NOT NULL
"""
LATENCY = f"""
WITH waits AS ({_WAITS})
SELECT count(*), COALESCE(sum(wait), 0),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY wait),
       ARRAY[{", ".join(f"count(*) FILTER (WHERE wait <= {bound})" for bound in LATENCY_BUCKETS)}]
FROM waits
"""

# Every job by status. READY and RUNNING rows are counted on their partial
# indexes, finished ones on the (status, finished_at) index.
TOTALS_BY_STATUS = """
SELECT 'READY', count(*) FROM jobs_job WHERE status = 'READY'
UNION ALL
SELECT 'RUNNING', count(*) FROM jobs_job WHERE status = 'RUNNING'
UNION ALL
SELECT status, count(*) FROM jobs_job
WHERE status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED') GROUP BY status
"""

WORKERS = """
SELECT w.id, w.hostname, w.pid, w.queues, w.concurrency, w.started_at, w.last_heartbeat,
       extract(epoch FROM now() - w.last_heartbeat)::float8,
       (SELECT count(*) FROM jobs_job AS j
        WHERE j.status = 'RUNNING' AND j.worker_ids[cardinality(j.worker_ids)] = w.id)
FROM jobs_worker AS w
ORDER BY w.started_at, w.id
"""


@dataclass
class QueueStats:
    """A queue's backlog now and what it finished in the last hour."""

    name: str
    ready: int = 0
    scheduled: int = 0
    running: int = 0
    oldest_ready_age: float | None = None
    finished: dict[str, int] = field(default_factory=dict)

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
class Snapshot:
    """Everything the dashboard and the Prometheus endpoint show, read at one moment."""

    queues: list[QueueStats]
    minutes: list[Minute]
    latency: Latency
    workers: list[WorkerStats]


def _backend():
    from django.tasks import task_backends

    return task_backends["default"]


def _fetch(cursor, statement: str, params: object = None) -> list[tuple]:
    cursor.execute(statement, params)
    return cursor.fetchall()


def snapshot(using: str | None = None) -> Snapshot:
    """Read the queue's numbers: a handful of index-bounded queries."""
    backend = _backend()
    dead_after = backend.config["WORKER_DEAD_AFTER"]
    with connections[using or backend.database].cursor() as cursor:
        live = _fetch(cursor, LIVE_COUNTS)
        finished = _fetch(cursor, FINISHED_BY_MINUTE)
        names = sorted(
            set(backend.queues or ()) | {row[0] for row in live} | {row[0] for row in finished}
        )
        oldest = dict(_fetch(cursor, OLDEST_READY, {"queues": names}))
        latency_row = _fetch(cursor, LATENCY)[0]
        bounds = _fetch(
            cursor,
            "SELECT date_trunc('minute', now()) - interval '59 minutes' + m * interval '1 minute'"
            " FROM generate_series(0, 59) AS m",
        )
        workers = _fetch(cursor, WORKERS)

    queues = {name: QueueStats(name, oldest_ready_age=oldest.get(name)) for name in names}
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
        workers=[WorkerStats(*row, alive=row[7] <= dead_after) for row in workers],
    )


def totals_by_status(using: str | None = None) -> dict[str, int]:
    """Every job in the table by status, finished history included."""
    with connections[using or _backend().database].cursor() as cursor:
        counts = dict(_fetch(cursor, TOTALS_BY_STATUS))
    return {status: counts.get(status, 0) for status in JobStatus.values}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render_prometheus(data: Snapshot, totals: dict[str, int]) -> str:
    """The numbers in Prometheus' text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def family(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            rendered = ",".join(f'{key}="{_label(str(val))}"' for key, val in labels.items())
            lines.append(
                f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}"
            )

    queues = data.queues
    family(
        "jobs_queue_depth",
        "READY jobs due now, per queue.",
        [({"queue": q.name}, q.ready) for q in queues],
    )
    family(
        "jobs_scheduled",
        "READY jobs waiting for a later run_at, per queue.",
        [({"queue": q.name}, q.scheduled) for q in queues],
    )
    family(
        "jobs_running", "RUNNING jobs, per queue.", [({"queue": q.name}, q.running) for q in queues]
    )
    family(
        "jobs_oldest_ready_age_seconds",
        "Seconds the oldest due READY job of the queue has waited (0 when none waits).",
        [({"queue": q.name}, q.oldest_ready_age or 0.0) for q in queues],
    )
    family(
        "jobs_by_status",
        "Jobs in the table by status, finished history included.",
        [({"status": status}, count) for status, count in totals.items()],
    )
    family(
        "jobs_finished_last_hour",
        "Jobs that finished in the last 60 minutes, per queue and status.",
        [
            ({"queue": q.name, "status": status}, q.finished.get(status, 0))
            for q in queues
            for status in FINISHED_STATUSES
        ],
    )
    latency = data.latency
    family(
        "jobs_start_latency_last_hour_seconds_bucket",
        "Jobs finished in the last hour whose enqueue-to-start wait was at most le seconds.",
        [({"le": _number(bound)}, count) for bound, count in latency.buckets]
        + [({"le": "+Inf"}, latency.count)],
    )
    family(
        "jobs_start_latency_last_hour_seconds_sum",
        "Sum of those waits, in seconds.",
        [({}, latency.total)],
    )
    family(
        "jobs_start_latency_last_hour_seconds_count",
        "Number of those waits.",
        [({}, latency.count)],
    )
    family(
        "jobs_workers_live",
        "Workers whose heartbeat is fresh.",
        [({}, sum(1 for worker in data.workers if worker.alive))],
    )
    return "\n".join(lines) + "\n"


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
