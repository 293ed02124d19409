"""
The driver of this queue: `python -m bench.ours --dsn ...`, with the project's Python.

Its workers are the project's own `manage.py runworker` with default settings,
started as processes like any peer's, so whatever the worker becomes is what
is measured. Besides the phases every queue goes through, some are ours
alone: history (throughput with a million finished jobs in jobs_job), scale
(throughput with 1, 2, 4 and 8 runworker processes), limits (the plain
no-op jobs with no LIMITS setting at all, and jobs under a per-key limit),
workflows (a batch of no-op jobs with a callback, beside as many plain jobs),
remote (workers behind a relay that adds a round trip: bench/remote.py) and
neighbour (one tenant's backlog beside another's trickle: bench/neighbour.py).

The project's settings have LIMITS (the signup's), so the process phase
measures jobs under no limit claimed by a worker whose backend has limits.
"""

import os
import secrets
import subprocess
import sys
import time
from contextlib import AbstractContextManager

from bench import driver, neighbour, remote

# Finished jobs as history: `rows` of them spread evenly over `span_hours`
# that end `end_hours_ago`, of `task` over `queues` in turn, one in
# `failed_every` FAILED (NULL: none). Ids time-ordered like uuid7 (48 bits of
# milliseconds first), so new jobs land at the index's right edge as they do
# in production. This benchmark's is a million SUCCESSFUL jobs of the six
# days before the last hour, too young for the workers' pruning
# (HISTORY_PARAMS); bench.dashboard_load fills its own.
HISTORY = """
INSERT INTO jobs_job (id, backend, task_path, queue, priority, args, kwargs, status, run_at,
    attempts, max_attempts, enqueued_at, started_at, last_attempted_at, finished_at,
    worker_ids, return_value, errors)
SELECT
    (lpad(to_hex((extract(epoch FROM t.at) * 1000)::bigint), 12, '0')
        || '7' || substr(md5(i::text), 1, 3) || '8' || substr(md5(i::text), 5, 15))::uuid,
    'default', %(task)s, (%(queues)s::text[])[1 + i %% cardinality(%(queues)s::text[])], 0,
    '[]', '{}', CASE WHEN i %% %(failed_every)s::int = 7 THEN 'FAILED' ELSE 'SUCCESSFUL' END,
    t.at, 1, 3, t.at, t.at + interval '3 milliseconds', t.at + interval '3 milliseconds',
    t.at + interval '8 milliseconds', ARRAY['bench-history']::varchar[], 'null', '[]'
FROM generate_series(1, %(rows)s) AS i
CROSS JOIN LATERAL (
    SELECT now() - %(end_hours_ago)s * interval '1 hour'
           - %(span_hours)s * interval '1 hour' * (1 - i::float8 / %(rows)s) AS at
) AS t
"""
HISTORY_PARAMS = {
    "task": "bench.tasks.noop",
    "queues": ["default"],
    "failed_every": None,
    "span_hours": 6 * 24,
    "end_hours_ago": 1,
}


# The queue of the benchmark's jobs, paused while the scale phase's workers start.
HELD_QUEUE = "default"

COUNT_WORKERS = "SELECT count(*) FROM jobs_worker"


class Ours(driver.Queue):
    name = "ours"
    # Each count reads a partial index (claim, running). `status IN ('READY',
    # 'RUNNING')` can use neither and scans the table: 120 ms a poll with the
    # history phase's million rows, three processes busy every 20 ms, which
    # took a third off the throughput it was measuring.
    remaining_sql = (
        "SELECT (SELECT count(*) FROM jobs_job WHERE status = 'READY')"
        " + (SELECT count(*) FROM jobs_job WHERE status = 'RUNNING')"
        " + (SELECT count(*) FROM jobs_job WHERE status = 'WAITING')"
    )
    tables = ("jobs_job", "jobs_worker", "jobs_limit_key", "jobs_dependency", "jobs_paused_queue")
    workers = 1
    has_batch = True

    def prepare(self) -> None:
        os.environ["DATABASE_URL"] = self.options.dsn
        # As in production: DEBUG's query log would cost every enqueue a quarter.
        os.environ["DJANGO_DEBUG"] = "0"
        os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
        sys.path.insert(0, str(driver.ROOT))
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        from bench import tasks

        self.tasks = tasks

    def enqueue_one(self) -> None:
        self.tasks.noop.enqueue()

    def enqueue_batch(self, count: int) -> None:
        self.tasks.noop.enqueue_many([((), {})] * count)

    def enqueue_probe(self, n: int) -> None:
        self.tasks.record_start.enqueue(n)

    def record_latency_parts(self, enqueued: dict[int, float], starts: dict[int, float]) -> None:
        """
        Split each probe's latency by the queue's own timestamps: the enqueue
        call until its INSERT began (enqueued_at), until the claim that took
        it began (started_at, which includes the NOTIFY reaching the worker),
        and from the claim to the job's first line (the claim's round trip,
        the hand-over to an executor, the job runner).
        """
        rows = self.connection.execute(
            "SELECT (args ->> 0)::int, extract(epoch FROM enqueued_at)::float8,"
            " extract(epoch FROM started_at)::float8"
            " FROM jobs_job WHERE task_path = 'bench.tasks.record_start'"
        ).fetchall()
        times = {n: (inserted, claimed) for n, inserted, claimed in rows}
        parts = {"to_insert_ms": [], "to_claim_ms": [], "claim_to_start_ms": []}
        for n in sorted(enqueued):
            inserted, claimed = times[n]
            parts["to_insert_ms"].append((inserted - enqueued[n]) * 1000)
            parts["to_claim_ms"].append((claimed - inserted) * 1000)
            parts["claim_to_start_ms"].append((starts[n] - claimed) * 1000)
        for name, values in parts.items():
            self.series.setdefault(name, []).append(values)

    def hold(self) -> None:
        from jobs.operations import pause_queue

        pause_queue(HELD_QUEUE, by="bench")

    def release(self, processes: list[subprocess.Popen]) -> None:
        """
        A worker's row is written once it is connected and about to claim;
        the resume's NOTIFY then wakes every worker at once.
        """
        from jobs.operations import resume_queue

        deadline = time.monotonic() + self.options.timeout
        while self.connection.execute(COUNT_WORKERS).fetchone()[0] < len(processes):
            if any(process.poll() is not None for process in processes):
                raise driver.WorkersExited(f"a worker exited; see {self.log_path()}")
            if time.monotonic() > deadline:
                raise driver.Timeout(f"not every worker started in {self.options.timeout:.0f} s")
            time.sleep(driver.POLL_SECONDS)
        resume_queue(HELD_QUEUE)

    def worker_command(self) -> list[str]:
        return [sys.executable, "manage.py", "runworker"]

    def worker_env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.options.dsn,
            "JOBS_LOG_LEVEL": "WARNING",
            **self.settings_env,
        }

    # The workers' environment over the defaults: the settings module of the
    # limits and neighbour phases, the relay's DATABASE_URL of the remote
    # phase; empty: the project's settings, Postgres directly.
    settings_env: dict[str, str] = {}

    def limited(self, limits: str) -> AbstractContextManager:
        """Workers, and this process's enqueues, with bench.limits_settings' LIMITS."""
        from django.test import override_settings

        from bench.limits_settings import tasks_with

        self.settings_env = {
            "DJANGO_SETTINGS_MODULE": "bench.limits_settings",
            "BENCH_LIMITS": limits,
        }
        return override_settings(TASKS=tasks_with(limits))

    def fill_keyed(self, count: int, keys: int) -> None:
        """count jobs of keyed_noop over `keys` keys, in turn."""
        for start in range(0, count, 10_000):
            calls = [((n % keys,), {}) for n in range(start, min(count, start + 10_000))]
            self.tasks.keyed_noop.enqueue_many(calls)

    def measure_history(self, figures: dict[str, list[float | None]]) -> None:
        """The process phase with history_rows finished jobs in the table."""
        rows = self.options.history_rows
        driver.say(f"history: {rows:,} finished jobs")
        self.reset()
        started = time.perf_counter()
        self.connection.execute(HISTORY, {**HISTORY_PARAMS, "rows": rows})
        self.connection.execute("VACUUM ANALYZE jobs_job")
        driver.say(f"  inserted and vacuumed in {time.perf_counter() - started:.0f} s")
        for _ in range(self.options.repeat):
            self.connection.execute(
                "DELETE FROM jobs_job "
                "WHERE worker_ids IS DISTINCT FROM ARRAY['bench-history']::varchar[]"
            )
            self.fill(self.options.jobs)
            measured = self.measure_process(self.options.jobs)
            figures.setdefault("history_jobs_per_s", []).append(measured["jobs_per_s"])
            figures.setdefault("history_steady_per_s", []).append(measured["steady_per_s"])

    def run(self) -> dict[str, list[float | None]]:
        figures = super().run()
        count = self.options.jobs
        if "history" in self.options.phases:
            self.measure_history(figures)
        if "limits" in self.options.phases:
            # Plain jobs, with no LIMITS at all (the process phase has the
            # project's); jobs under 1,000 at once per key over 100 keys (a
            # limit that never binds: its cost); then under 2 at once per
            # key, over 100 keys (200 slots, fewer than a worker holds ahead)
            # and over 4 keys (8 slots: the limit sets the rate).
            runs = (("limits_off_", "none", None), ("limited_wide_", "wide", 100))
            runs += (("limited_100_keys_", "per-key", 100), ("limited_4_keys_", "per-key", 4))
            for prefix, limits, keys in runs:
                driver.say(f"limits: {limits}" + (f", {keys} keys" if keys else ""))
                with self.limited(limits):
                    for _ in range(self.options.repeat):
                        self.reset()
                        if keys is None:
                            self.fill(count)
                        else:
                            self.fill_keyed(count, keys)
                        measured = self.measure_process(count)
                        for figure in ("jobs_per_s", "steady_per_s"):
                            figures.setdefault(f"{prefix}{figure}", []).append(measured[figure])
                self.settings_env = {}
        if "workflows" in self.options.phases:
            from jobs.workflows import batch, step

            driver.say("workflows: plain jobs, then a batch of as many and its callback")
            for _ in range(self.options.repeat):
                self.reset()
                self.fill(count)
                plain = self.measure_process(count)
                self.reset()
                members = [step(self.tasks.noop)] * count
                batch(members, on_finish=step(self.tasks.batch_done)).enqueue()
                grouped = self.measure_process(count + 1)
                for prefix, measured in (("workflow_plain_", plain), ("workflow_batch_", grouped)):
                    for figure in ("jobs_per_s", "steady_per_s"):
                        figures.setdefault(f"{prefix}{figure}", []).append(measured[figure])
        if "scale" in self.options.phases:
            for workers in self.options.scale:
                driver.say(f"scale: {workers} runworker process{'es' if workers > 1 else ''}")
                for _ in range(self.options.repeat):
                    self.reset()
                    self.fill(count)
                    # Timed from when every worker is ready: eight
                    # start-ups at once take seconds of CPU on a small
                    # machine, and the first worker up would otherwise run
                    # most of the jobs beside the others' start-up.
                    measured = self.measure_process(count, workers, held=True)
                    for figure in ("jobs_per_s", "steady_per_s"):
                        figures.setdefault(f"scale_{workers}_{figure}", []).append(measured[figure])
        if "remote" in self.options.phases:
            remote.measure(self, figures)
        if "neighbour" in self.options.phases:
            neighbour.measure(self, figures)
        return figures


if __name__ == "__main__":
    driver.main(Ours)
