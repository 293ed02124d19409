"""
What open dashboards cost the worker: one runworker's throughput on no-op
jobs with no dashboard open, and with --pollers dashboards each fetching the
live part (admin/jobs/job/dashboard/live/) every --interval seconds, as the
page's script does (the next fetch planned when the last one has answered).

    python -m bench.dashboard_load [--dsn URL] [--pairs 6] [--pollers 20]

The database (--dsn, else BENCH_DSN, else bench_dashboard_load on the server
of BENCH_DATABASE_URL, created when missing) gets --history-rows finished
jobs spread over the last --history-hours (so the last hour's charts read
rows/hours of them, besides what the worker finishes), kept between runs.
Each round queues --jobs no-op jobs and times one runworker on them with
bench.ours' own measure, the steady rate (held until the worker is ready;
the jobs of earlier rounds deleted and vacuumed first, so every round reads
the same table, and a round stays short of what sets autovacuum off on it).
Rounds go in pairs, one without dashboards and one with, the order
alternating (bench.paired); the figure is the ratio within each pair.

The dashboards are threads of this process asking, over HTTP and signed in
as a superuser, the project's WSGI application (DEBUG off) served by --threads
threads that keep their database connections (serve()). The server and the
dashboards run on the machine of the worker and Postgres, so the figure
counts their CPU as well as the queries'. Not part of CI.
"""

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bench import database, driver
from bench.ours import HISTORY, Ours
from bench.paired import A, median_interval, pair_order, paired_ratios

LIVE_PATH = "/admin/jobs/job/dashboard/live/"
HISTORY_TASK = "bench.history"


@dataclass
class Dashboards:
    """
    Threads that each fetch the live part every interval while entered; what
    they saw, and the server's CPU time meanwhile, summed over every entry.
    """

    url: str
    cookie: str
    count: int
    interval: float
    server: int
    answered: list[float] = field(default_factory=list)
    failed: int = 0
    seconds: float = 0.0
    cpu: float = 0.0

    def __enter__(self) -> "Dashboards":
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.poll) for _ in range(self.count)]
        self.started, self.cpu_before = time.perf_counter(), cpu_seconds(self.server)
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.seconds += time.perf_counter() - self.started
        self.cpu += cpu_seconds(self.server) - self.cpu_before

    def poll(self) -> None:
        # Opened at different moments, as people open dashboards.
        self.stop.wait(random.uniform(0, self.interval))
        request = urllib.request.Request(self.url, headers={"Cookie": self.cookie})
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    live = response.read().lstrip().startswith(b'<div id="jobs-live"')
            except OSError:
                live = False
            if live:
                self.answered.append(time.perf_counter() - started)
            else:
                self.failed += 1
            self.stop.wait(self.interval)


class DashboardLoad(Ours):
    """This queue's driver, with a history that its rounds leave in place."""

    name = "dashboard-load"

    def fill_history(self, rows: int, hours: float) -> None:
        """
        Kept from an earlier run while its newest job is recent: as it ages,
        the last hour, which the dashboard's charts read, holds fewer of it.
        """
        present, recent = self.connection.execute(
            "SELECT count(*), max(finished_at) > now() - interval '10 minutes'"
            " FROM jobs_job WHERE task_path = %s",
            (HISTORY_TASK,),
        ).fetchone()
        if present == rows and recent:
            driver.say(f"history: {rows:,} finished jobs already there")
            return
        driver.say(f"history: inserting {rows:,} finished jobs over the last {hours:g} h")
        self.reset()
        # Up to now, one in 50 FAILED, over the three queues of the project's settings.
        self.connection.execute(
            HISTORY,
            {
                "rows": rows,
                "task": HISTORY_TASK,
                "queues": ["default", "communications", "reports"],
                "failed_every": 50,
                "span_hours": hours,
                "end_hours_ago": 0,
            },
        )
        self.connection.execute("VACUUM ANALYZE jobs_job")

    def round(self, count: int, dashboards: Dashboards | None) -> float | None:
        """One timed run of count no-op jobs; the steady rate, jobs per second."""
        self.connection.execute("DELETE FROM jobs_job WHERE task_path <> %s", (HISTORY_TASK,))
        self.connection.execute("VACUUM jobs_job")
        self.fill(count)
        if dashboards is None:
            return self.measure_process(count, held=True)["steady_per_s"]
        with dashboards:
            return self.measure_process(count, held=True)["steady_per_s"]


def ensure_database(dsn: str) -> None:
    name = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(database.admin_dsn(dsn), autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if exists.fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, threads: int) -> subprocess.Popen:
    """serve() in a process of its own, with the bench process's secret key (its sessions)."""
    env = {**os.environ, "DJANGO_DEBUG": "0", "DJANGO_HTTPS": "0", "JOBS_LOG_LEVEL": "WARNING"}
    log = open(driver.LOG_DIR / "dashboard-load-server.log", "ab")
    with log:
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.dashboard_load", "--serve", str(port), str(threads)],
            cwd=driver.ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=5):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise driver.Timeout("the server did not answer in 60 s")


def serve(port: int, threads: int) -> None:
    """
    The project's WSGI application on a fixed pool of threads, each keeping
    its database connection (CONN_MAX_AGE) from one request to the next, as
    a production server's threads do. runserver would not do: it closes
    every connection after each request, so that each answer would cost
    Postgres a new backend.
    """
    from concurrent.futures import ThreadPoolExecutor
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(driver.ROOT))
    from django.core.wsgi import get_wsgi_application

    pool = ThreadPoolExecutor(threads)

    class PooledServer(WSGIServer):
        def process_request(self, request, client_address) -> None:
            pool.submit(self.answer, request, client_address)

        def answer(self, request, client_address) -> None:
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    application = get_wsgi_application()
    make_server("127.0.0.1", port, application, PooledServer, QuietHandler).serve_forever()


def session_cookie() -> str:
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    admin, _ = User.objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def cpu_seconds(pid: int) -> float:
    """A process's user and system time, from Linux's /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dashboard_load",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DSN"), help="database URL")
    parser.add_argument("--history-rows", type=int, default=1_000_000, help="finished jobs")
    parser.add_argument("--history-hours", type=float, default=24.0, help="spread over")
    parser.add_argument("--pollers", type=int, default=20, help="open dashboards")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between fetches")
    parser.add_argument("--pairs", type=int, default=12, help="rounds without and with")
    parser.add_argument("--jobs", type=int, default=100_000, help="no-op jobs a round")
    parser.add_argument("--threads", type=int, default=4, help="the server's threads")
    parser.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: the worker and the server are stopped on the way out."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve:
        serve(*args.serve)
        return
    signal.signal(signal.SIGTERM, interrupt)
    dsn = args.dsn or database.dsn_for(database.server_url(), "dashboard_load")
    ensure_database(dsn)
    driver.LOG_DIR.mkdir(parents=True, exist_ok=True)
    queue = DashboardLoad(driver.Options(dsn=dsn, jobs=0, repeat=1, phases=[], timeout=900.0))
    queue.prepare()
    queue.fill_history(args.history_rows, args.history_hours)
    count = args.jobs
    driver.say(f"warm-up: {queue.round(count, None) or 0:,.0f} jobs/s, not counted")
    server = start_server(port := free_port(), args.threads)
    try:
        dashboards = Dashboards(
            f"http://127.0.0.1:{port}{LIVE_PATH}",
            session_cookie(),
            args.pollers,
            args.interval,
            server.pid,
        )
        rates: dict[bool, list[float | None]] = {False: [], True: []}
        for index in range(args.pairs):
            for side in pair_order(index):
                loaded = side != A
                rates[loaded].append(queue.round(count, dashboards if loaded else None))
                driver.say(
                    f"pair {index + 1}, {'with' if loaded else 'without'} dashboards: "
                    f"{rates[loaded][-1] or 0:,.0f} jobs/s"
                )
    finally:
        server.terminate()
        server.wait()
    report(args, rates, dashboards)


def report(
    args: argparse.Namespace,
    rates: dict[bool, list[float | None]],
    seen: Dashboards,
) -> None:
    ratios = paired_ratios(rates[False], rates[True])
    interval = median_interval(ratios)
    without = [rate for rate in rates[False] if rate]
    with_ = [rate for rate in rates[True] if rate]
    print(f"{args.pollers} dashboards every {args.interval:g} s, {len(ratios)} pairs")
    print(
        f"  without: median {statistics.median(without):,.0f} jobs/s "
        f"({min(without):,.0f} to {max(without):,.0f})"
    )
    print(
        f"  with:    median {statistics.median(with_):,.0f} jobs/s "
        f"({min(with_):,.0f} to {max(with_):,.0f})"
    )
    print(f"  with/without per pair: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(
        f"  median {statistics.median(ratios):.3f}"
        + (f", 95% interval {interval[0]:.3f} to {interval[1]:.3f}" if interval else "")
    )
    if seen.answered:
        times = sorted(seen.answered)
        print(
            f"  live part: {len(times) / seen.seconds:.1f} answers/s, {seen.failed} failed, "
            f"median {statistics.median(times) * 1000:.0f} ms, "
            f"p95 {times[int(len(times) * 0.95)] * 1000:.0f} ms, "
            f"server CPU {seen.cpu / seen.seconds:.0%} of a core "
            f"({seen.cpu / len(times) * 1000:.0f} ms an answer)"
        )


if __name__ == "__main__":
    main()
