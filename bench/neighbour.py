"""
The neighbour phase: one tenant floods the queue, another keeps sending a
trickle, and fair shares (bench.limits_settings' "tenant": a key and no
limit) should keep the trickle's jobs from waiting behind the flood.

Tenant A enqueues options.large_jobs jobs at once (enqueue_many, in batches);
from A's first batch until A's last job is done, tenant B enqueues
B_PER_SECOND jobs a second; one runworker with its defaults serves both.
B's wait is read from the table: enqueued_at (the INSERT) to started_at (the
claim that took it), and to the job's first line (the probe's own record).
A's drain rate is its jobs over the span from its first start to its last
finish. The bar: B's p99 within BAR_P99_MS.
"""

import threading
import time
from typing import TYPE_CHECKING

from bench import driver
from bench.stats import percentile

if TYPE_CHECKING:
    from django.tasks import Task

    from bench.ours import Ours

B_PER_SECOND = 10
BATCH = 10_000
BAR_P99_MS = 50.0
POLL_SECONDS = 0.05

# Each count reads a partial index (see Ours.remaining_sql), then A's rows.
A_LEFT = """
SELECT (SELECT count(*) FROM jobs_job WHERE status = 'READY' AND args ->> 0 = 'A')
     + (SELECT count(*) FROM jobs_job WHERE status = 'RUNNING' AND args ->> 0 = 'A')
"""
B_WAITS = """
SELECT extract(epoch FROM job.started_at - job.enqueued_at)::float8 * 1000,
       (start.started - extract(epoch FROM job.enqueued_at)::float8) * 1000
FROM jobs_job AS job JOIN bench_start AS start ON start.n = (job.args ->> 1)::int
WHERE job.task_path = 'bench.tasks.tenant_job' AND job.args ->> 0 = 'B' AND start.n >= 0
ORDER BY start.n
"""
A_DRAIN = """
SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))::float8
FROM jobs_job WHERE task_path = 'bench.tasks.tenant_job' AND args ->> 0 = 'A'
"""


def measure(queue: "Ours", figures: dict[str, list[float | None]]) -> None:
    """The flood and the trickle, options.repeat times, each with a fresh runworker."""
    count = queue.options.large_jobs
    driver.say(f"neighbour: tenant A queues {count:,} at once, B {B_PER_SECOND} a second")
    with queue.limited("tenant"):
        for _ in range(queue.options.repeat):
            queue.reset()
            processes = queue.start_workers(1)
            try:
                queue.tasks.tenant_job.enqueue("B", -1)
                queue.wait_for_starts(1)
                sent = flood_and_trickle(queue, count)
                queue.wait_for_starts(sent + 1)
            finally:
                queue.stop_workers(processes)
            record(queue, figures)
    queue.settings_env = {}


def flood_and_trickle(queue: "Ours", count: int) -> int:
    """
    Queue A's count jobs in batches and B's one by one from A's first batch
    until A's last job is done; how many of B's were sent.
    """
    stop = threading.Event()
    sent: list[int] = []
    trickle = threading.Thread(target=tenant_b, args=(queue.tasks.tenant_job, stop, sent))
    try:
        for start in range(0, count, BATCH):
            queue.tasks.tenant_job.enqueue_many([(("A",), {})] * min(BATCH, count - start))
            if start == 0:
                trickle.start()
        wait_drained(queue)
    finally:
        stop.set()
        if trickle.is_alive():
            trickle.join()
    return len(sent)


def tenant_b(task: "Task", stop: threading.Event, sent: list[int]) -> None:
    """B_PER_SECOND enqueues a second, on schedule, until stopped; each one's number in sent."""
    from django.db import connection

    first = time.monotonic()
    try:
        while not stop.wait(max(0.0, first + len(sent) / B_PER_SECOND - time.monotonic())):
            task.enqueue("B", len(sent))
            sent.append(len(sent))
    finally:
        # This thread's own connection, which Django would otherwise leave open.
        connection.close()


def wait_drained(queue: "Ours") -> None:
    deadline = time.monotonic() + queue.options.timeout
    while queue.connection.execute(A_LEFT).fetchone()[0]:
        if time.monotonic() > deadline:
            raise driver.Timeout(f"tenant A's jobs not done after {queue.options.timeout:.0f} s")
        time.sleep(POLL_SECONDS)


def record(queue: "Ours", figures: dict[str, list[float | None]]) -> None:
    """B's waits (each one in the series too) and A's drain rate."""
    rows = queue.connection.execute(B_WAITS).fetchall()
    claimed = sorted(row[0] for row in rows)
    started = sorted(row[1] for row in rows)
    queue.series.setdefault("neighbour_b_claim_ms", []).append([row[0] for row in rows])
    a_jobs, a_span = queue.connection.execute(A_DRAIN).fetchone()
    values = {
        "neighbour_b_jobs": float(len(rows)),
        "neighbour_b_claim_p50_ms": percentile(claimed, 50),
        "neighbour_b_claim_p99_ms": percentile(claimed, 99),
        "neighbour_b_claim_max_ms": claimed[-1],
        "neighbour_b_start_p50_ms": percentile(started, 50),
        "neighbour_b_start_p99_ms": percentile(started, 99),
        "neighbour_b_start_max_ms": started[-1],
        "neighbour_a_per_s": a_jobs / a_span if a_span else None,
    }
    for name, value in values.items():
        figures.setdefault(name, []).append(value)
