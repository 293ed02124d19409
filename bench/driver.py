"""
The phases every queue goes through, and how each is timed.

A driver (bench/ours.py, bench/peers/<name>.py) describes its queue with a
Queue subclass: how to enqueue one job, a batch, a probe; how to start its
workers; how many jobs are still unfinished. This module runs the phases the
same way for all of them and prints one JSON object on stdout. It needs
nothing but the standard library and psycopg, since it runs inside each peer's
own virtualenv.

Every figure is measured from outside the queue: throughput by polling the
queue's own tables for unfinished jobs, cost from pg_stat_database and the WAL
position, latency from the start times the probe job writes itself.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench import probe
from bench.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "bench" / "results" / "logs"
# Bytecode as a deployment has it: compiled once, then read from the cache.
# Where the environment says not to write it (PYTHONDONTWRITEBYTECODE, set on
# some CI machines), every worker would compile the queue's modules from
# source at each start, tens of milliseconds that a processing run counts as
# start-up, more for a larger package; the peers, installed into their
# virtualenvs by pip, have theirs compiled. The cache goes to a folder of the
# benchmark's own (PYTHONPYCACHEPREFIX): the checkout is left as it was.
BYTECODE_ENV = {
    "PYTHONDONTWRITEBYTECODE": "",
    "PYTHONPYCACHEPREFIX": str(ROOT / "bench" / ".pycache"),
}

# How often the unfinished jobs are counted while workers run.
POLL_SECONDS = 0.02
# Time for exiting backends to report their statistics.
BACKEND_EXIT_SECONDS = 0.3
LATENCY_JOBS = 1000
LATENCY_GAP_SECONDS = 0.02
LATENCY_PERCENTILES = (50, 95, 99, 99.9)
# The large run is left out for a queue whose 10,000-job rate says it would
# take longer than this to process (filling the queue not counted).
LARGE_BUDGET_SECONDS = 60.0

COST_SNAPSHOT = """
SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
       xact_commit,
       pg_current_wal_lsn()::text,
       tup_inserted + tup_updated + tup_deleted
FROM pg_stat_database WHERE datname = current_database()
"""


class Timeout(Exception):
    """The workers did not finish in the time allowed."""


class WorkersExited(Exception):
    """Every worker process ended before its jobs were done."""


@dataclass
class Options:
    dsn: str
    jobs: int
    repeat: int
    phases: list[str]
    timeout: float
    history_rows: int = 1_000_000
    scale: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    large_jobs: int = 100_000
    latency_probes: int = LATENCY_JOBS


class Queue:
    """
    One queue under test. Subclasses fill in what differs; every method that
    enqueues runs in the driver process, every worker in a process of its own.
    """

    # Names the workers' log, bench/results/logs/<name>-workers.log.
    name: str = ""
    # The SQL that counts jobs not finished yet, on the bench database.
    remaining_sql: str = ""
    # The tables a reset empties.
    tables: Sequence[str] = ()
    # Worker processes started for the throughput and latency phases.
    workers: int = 1
    has_batch: bool = False

    def __init__(self, options: Options) -> None:
        self.options = options
        self.connection = psycopg.connect(options.dsn, autocommit=True)
        self.figures: dict[str, list[float | None]] = {}
        # Per-job values of a phase, one list per repeat: each latency
        # probe's, in the order they were enqueued, to see bursts.
        self.series: dict[str, list[list[float | None]]] = {}
        # What went wrong in a phase that was given up, for the report.
        self.notes: list[str] = []

    def prepare(self) -> None:
        """Create the queue's schema in the bench database."""

    def enqueue_one(self) -> None:
        raise NotImplementedError

    def enqueue_batch(self, count: int) -> None:
        """Enqueue count no-op jobs with the queue's batch API, where it has one."""
        raise NotImplementedError

    def enqueue_probe(self, n: int) -> None:
        raise NotImplementedError

    def fill(self, count: int) -> None:
        """Queue count no-op jobs, the fastest way the queue allows (not timed)."""
        if self.has_batch:
            for start in range(0, count, 10_000):
                self.enqueue_batch(min(10_000, count - start))
        else:
            for _ in range(count):
                self.enqueue_one()

    def worker_command(self) -> list[str]:
        raise NotImplementedError

    def worker_env(self) -> dict[str, str]:
        return {}

    def remaining(self, connection: psycopg.Connection) -> int:
        """How many jobs are not finished yet, read on the monitor's connection."""
        return connection.execute(self.remaining_sql).fetchone()[0]

    def reset(self) -> None:
        """
        Empty the queue's tables. A table its schema does not have is left
        out: --compare runs this harness on older versions of this queue too.
        """
        present = [
            table
            for table in self.tables
            if self.connection.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0]
        ]
        if present:
            self.connection.execute(f"TRUNCATE {', '.join(present)} CASCADE")
        self.connection.execute(probe.CREATE_TABLE)
        self.connection.execute("TRUNCATE bench_start")

    def cost_snapshot(self) -> tuple[int, int, str, int] | None:
        """
        (next transaction id, commits in this database, WAL position, rows
        written in this database), or None for a queue that is not in Postgres.

        On a connection of its own, closed at once: a backend reports its
        commits to pg_stat_database when it exits, but otherwise only every
        second or, once idle, ten.
        """
        with psycopg.connect(self.options.dsn, autocommit=True) as connection:
            return connection.execute(COST_SNAPSHOT).fetchone()

    # The phases.

    def start_workers(self, count: int | None = None) -> list[subprocess.Popen]:
        """Start the workers, each in a process group of its own so it can be stopped whole."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **BYTECODE_ENV,
            "PYTHONPATH": str(ROOT),
            "BENCH_DSN": self.options.dsn,
            **self.worker_env(),
        }
        log = open(self.log_path(), "ab")
        with log:
            return [
                subprocess.Popen(
                    self.worker_command(),
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                for _ in range(count or self.workers)
            ]

    def log_path(self) -> Path:
        return LOG_DIR / f"{self.name}-workers.log"

    def stop_workers(self, processes: list[subprocess.Popen]) -> None:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Pool children that outlived their parent.
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def measure_enqueue(self, count: int) -> float:
        """Jobs per second, one enqueue call at a time; leaves the jobs queued."""
        self.reset()
        started = time.perf_counter()
        for _ in range(count):
            self.enqueue_one()
        return count / (time.perf_counter() - started)

    def measure_batch(self, count: int) -> float:
        """Jobs per second through the batch API, in batches of 10,000."""
        self.reset()
        started = time.perf_counter()
        for start in range(0, count, 10_000):
            self.enqueue_batch(min(10_000, count - start))
        rate = count / (time.perf_counter() - started)
        self.reset()
        return rate

    def hold(self) -> None:
        """Keep the queued jobs from being started until release(); see measure_process."""
        raise NotImplementedError

    def release(self, processes: list[subprocess.Popen]) -> None:
        """Wait until every worker of processes is ready, then let them start the held jobs."""
        raise NotImplementedError

    def measure_process(
        self, count: int, workers: int | None = None, *, held: bool = False
    ) -> dict[str, float | None]:
        """
        Start the workers on count queued jobs and time them until none is left.

        jobs_per_s counts from the moment the workers are started, so it
        includes their start-up; held (for queues that have hold() and
        release()) times from the moment every worker is ready instead, so
        that workers still starting do not share the CPU with the ones
        already working. steady_per_s is the rate between 10% and 90%
        done; first_done_s is when the first poll saw a job done, which is
        mostly the start-up. The database is analyzed first. Cost is read
        around the whole run, from the workers' start to their exit: commits
        in this database (less this monitor's own), rows inserted, updated and
        deleted in this database (the monitor writes none), transaction ids
        (every transaction that wrote, in the whole cluster) and WAL bytes
        (the whole cluster too).
        """
        # A bulk load leaves the queue's tables without planner statistics
        # (or with those of an empty table), which a user's autovacuum would
        # fix within a minute: analyzed here, every queue's plans are those
        # it would have in production, not its plans for an empty table.
        self.connection.execute("ANALYZE")
        before = self.cost_snapshot()
        polls = 0
        samples: list[tuple[float, int]] = []
        if held:
            self.hold()
        processes = self.start_workers(workers)
        started = time.perf_counter()
        try:
            if held:
                self.release(processes)
                started = time.perf_counter()
            with psycopg.connect(self.options.dsn, autocommit=True) as monitor:
                while True:
                    left = self.remaining(monitor)
                    polls += 1
                    now = time.perf_counter()
                    samples.append((now - started, count - left))
                    if left == 0:
                        break
                    if all(process.poll() is not None for process in processes):
                        raise WorkersExited(f"the workers exited; see {self.log_path()}")
                    if now - started > self.options.timeout:
                        raise Timeout(
                            f"{count - left} of {count} jobs done "
                            f"after {self.options.timeout:.0f} s"
                        )
                    time.sleep(POLL_SECONDS)
        finally:
            self.stop_workers(processes)
        elapsed = samples[-1][0]
        # The workers' and the monitor's backends have exited and so reported
        # their commits; give them a moment to finish doing so.
        time.sleep(BACKEND_EXIT_SECONDS)
        after = self.cost_snapshot()
        figures: dict[str, float | None] = {
            "jobs_per_s": count / elapsed,
            "steady_per_s": steady_rate(samples, count),
            "first_done_s": next((moment for moment, done in samples if done > 0), None),
            "commits_per_job": None,
            "write_xacts_per_job": None,
            "wal_bytes_per_job": None,
            "rows_written_per_job": None,
        }
        if before is not None and after is not None:
            figures |= self.cost_per_job(before, after, polls, count)
        return figures

    def cost_per_job(
        self,
        before: tuple[int, int, str, int],
        after: tuple[int, int, str, int],
        polls: int,
        count: int,
    ) -> dict[str, float]:
        """The difference of two cost snapshots, per job; polls: the monitor's own commits."""
        wal = self.connection.execute(
            "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (after[2], before[2])
        ).fetchone()[0]
        return {
            # Less the monitor's polls and the first snapshot's own commit.
            "commits_per_job": (after[1] - before[1] - polls - 1) / count,
            "write_xacts_per_job": (after[0] - before[0]) / count,
            "wal_bytes_per_job": float(wal) / count,
            "rows_written_per_job": (after[3] - before[3]) / count,
        }

    def measure_latency(self) -> dict[str, float]:
        """
        Enqueue→start latency on an idle worker: options.latency_probes probes
        LATENCY_GAP_SECONDS apart (see time_probes). Each probe's latency goes
        into the series, in the order enqueued.
        """
        probes = self.options.latency_probes
        enqueued, starts = self.time_probes(probes)
        in_order = [(starts[n] - enqueued[n]) * 1000 for n in range(probes)]
        self.series.setdefault("latency_ms", []).append(in_order)
        self.record_latency_parts(enqueued, starts)
        latencies = sorted(in_order)
        figures = {
            f"latency_p{p:g}_ms".replace(".", "_"): percentile(latencies, p)
            for p in LATENCY_PERCENTILES
        }
        figures["latency_max_ms"] = latencies[-1]
        return figures

    def time_probes(
        self, count: int, workers: int | None = None
    ) -> tuple[dict[int, float], dict[int, float]]:
        """
        When each of count probes was enqueued and when it started, by probe
        number, on idle workers: a warm-up probe first, a second of quiet,
        then the probes LATENCY_GAP_SECONDS apart, so that each finds the
        workers waiting.
        """
        self.reset()
        processes = self.start_workers(workers)
        try:
            self.enqueue_probe(-1)
            self.wait_for_starts(1)
            time.sleep(1.0)
            enqueued: dict[int, float] = {}
            first = time.time()
            for n in range(count):
                delay = first + n * LATENCY_GAP_SECONDS - time.time()
                if delay > 0:
                    time.sleep(delay)
                enqueued[n] = time.time()
                self.enqueue_probe(n)
            starts = self.wait_for_starts(count + 1)
        finally:
            self.stop_workers(processes)
        return enqueued, starts

    def record_latency_parts(self, enqueued: dict[int, float], starts: dict[int, float]) -> None:
        """
        Where a queue can tell when it took each probe (its own timestamps),
        the series of each part of the latency; none by default.
        """

    def wait_for_starts(self, count: int) -> dict[int, float]:
        deadline = time.monotonic() + max(60.0, self.options.timeout / 10)
        while True:
            rows = self.connection.execute("SELECT n, started FROM bench_start").fetchall()
            if len(rows) >= count:
                return dict(rows)
            if time.monotonic() > deadline:
                raise Timeout(f"{len(rows)} of {count} probe jobs started")
            time.sleep(0.05)

    def run(self) -> dict[str, list[float | None]]:
        """Every requested phase, options.repeat times; each figure a list, one per repeat."""
        figures = self.figures

        def record(values: dict[str, float | None]) -> None:
            for name, value in values.items():
                figures.setdefault(name, []).append(value)

        count = self.options.jobs
        phases = self.options.phases
        for round_ in range(1, self.options.repeat + 1):
            say(f"round {round_} of {self.options.repeat}")
            if "enqueue" in phases:
                say(f"enqueue {count:,} one at a time")
                record({"enqueue_per_s": self.measure_enqueue(count)})
            if "process" in phases:
                if "enqueue" not in phases:
                    self.reset()
                    self.fill(count)
                say(f"process {count:,}")
                record(self.measure_process(count))
            if "enqueue" in phases:
                if self.has_batch:
                    say(f"enqueue {count:,} in batches")
                    record({"batch_per_s": self.measure_batch(count)})
                else:
                    record({"batch_per_s": None})
            if "latency" in phases:
                say("latency")
                record(self.measure_latency())
        if "large" in phases:
            self.measure_large()
        return figures

    def measure_large(self) -> None:
        """
        The process phase again with options.large_jobs queued, unless the
        queue's rate on the smaller run says it would not finish within
        LARGE_BUDGET_SECONDS; the report then says so.
        """
        count = self.options.large_jobs
        rates = [rate for rate in self.figures.get("jobs_per_s", []) if rate]
        if rates and count / statistics.median(rates) > LARGE_BUDGET_SECONDS:
            self.notes.append(
                f"{count:,} jobs not run: at {statistics.median(rates):,.0f} jobs/s they would "
                f"take {count / statistics.median(rates) / 60:.0f} min"
            )
            return
        for round_ in range(1, self.options.repeat + 1):
            say(f"process {count:,}, round {round_} of {self.options.repeat}")
            self.reset()
            self.fill(count)
            measured = self.measure_process(count)
            for figure in ("jobs_per_s", "steady_per_s"):
                self.figures.setdefault(f"large_{figure}", []).append(measured[figure])


def steady_rate(samples: list[tuple[float, int]], count: int) -> float | None:
    """Jobs per second between 10% and 90% done, interpolated between polls."""

    def crossing(target: float) -> float | None:
        previous = (0.0, 0)
        for moment, done in samples:
            if done >= target:
                if done == previous[1]:
                    return moment
                fraction = (target - previous[1]) / (done - previous[1])
                return previous[0] + fraction * (moment - previous[0])
            previous = (moment, done)
        return None

    low, high = crossing(0.1 * count), crossing(0.9 * count)
    if low is None or high is None or high <= low:
        return None
    return 0.8 * count / (high - low)


def run_checked(command: list[str], env: dict[str, str] | None = None) -> None:
    """Run a set-up command; its output is shown only when it fails."""
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")


def say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DSN"))
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--phases", default="enqueue,process,latency")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--history-rows", type=int, default=1_000_000)
    parser.add_argument("--scale", default="1,2,4,8")
    parser.add_argument("--large-jobs", type=int, default=100_000)
    parser.add_argument("--latency-probes", type=int, default=LATENCY_JOBS)
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("give --dsn or set BENCH_DSN")
    return Options(
        dsn=args.dsn,
        jobs=args.jobs,
        repeat=args.repeat,
        phases=args.phases.split(","),
        timeout=args.timeout,
        history_rows=args.history_rows,
        scale=[int(n) for n in args.scale.split(",")],
        large_jobs=args.large_jobs,
        latency_probes=args.latency_probes,
    )


def main(queue_class: Callable[[Options], Queue]) -> None:
    """Run a driver: prepare the queue, run its phases, print the figures as JSON."""
    queue = queue_class(parse_options())
    queue.prepare()
    try:
        queue.run()
    except (Timeout, WorkersExited) as error:
        queue.notes.append(f"stopped: {error}")
    print(json.dumps({"figures": queue.figures, "series": queue.series, "notes": queue.notes}))
