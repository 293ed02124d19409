"""
The remote phase: workers on other hosts than Postgres, as most deployments
have them. The workers reach the server through bench/relay.py, which adds
a fixed round trip; the enqueuer stays local, as a web process beside the
database would. For each round trip, and 1, 2 and 4 runworker processes:
throughput on queued jobs (as the process phase measures it) and the idle
enqueue→start latency of PROBES probes.

Beside no relay at all, a relay with no delay: the relay's own cost (a
Python process forwarding every byte, on the same cores) apart from the
delay it adds. A SELECT 1 timed through each relay checks the delay.
"""

import contextlib
import statistics
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench import driver, relay
from bench.stats import percentile

if TYPE_CHECKING:
    from bench.ours import Ours

# Round trips added, in ms; None: the workers connect to Postgres directly.
DELAYS_MS: tuple[float | None, ...] = (None, 0.0, 0.5, 2.0)
WORKERS = (1, 2, 4)
PROBES = 200
PINGS = 200


def label(delay_ms: float | None) -> str:
    """The figures' name for a round trip: local, or the delay in µs (2000us)."""
    return "local" if delay_ms is None else f"{round(delay_ms * 1000)}us"


def relay_target(dsn: str) -> str:
    """Where the relay forwards to: the server's HOST:PORT, or its Unix socket's path."""
    parts = conninfo_to_dict(dsn)
    host, port = parts.get("host") or "/var/run/postgresql", parts.get("port") or "5432"
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"


def relayed(dsn: str, port: int) -> str:
    """The bench database's URL through the relay on 127.0.0.1:port."""
    parts = urlsplit(dsn)
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def select_one_ms(dsn: str, count: int = PINGS) -> list[float]:
    """Round trips of SELECT 1 on one connection, sorted, in ms (after a first untimed one)."""
    times = []
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("SELECT 1")
        for _ in range(count):
            started = time.perf_counter()
            connection.execute("SELECT 1")
            times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


@contextlib.contextmanager
def workers_through(queue: "Ours", delay_ms: float | None) -> Iterator[str]:
    """The workers started in the block reach Postgres through a relay; its URL."""
    if delay_ms is None:
        yield queue.options.dsn
        return
    with relay.running(relay_target(queue.options.dsn), delay_ms) as port:
        dsn = relayed(queue.options.dsn, port)
        queue.settings_env = {"DATABASE_URL": dsn, "BENCH_DSN": dsn}
        try:
            yield dsn
        finally:
            queue.settings_env = {}


def measure(queue: "Ours", figures: dict[str, list[float | None]]) -> None:
    """Every round trip of DELAYS_MS with every count of WORKERS, options.repeat times."""
    count = queue.options.jobs
    for delay_ms in DELAYS_MS:
        name = label(delay_ms)
        with workers_through(queue, delay_ms) as dsn:
            pings = select_one_ms(dsn)
            driver.say(
                f"remote: {'no relay' if delay_ms is None else f'{delay_ms:g} ms relay'}, "
                f"SELECT 1 p50 {statistics.median(pings):.2f} ms"
            )
            figures.setdefault(f"remote_{name}_select1_p50_ms", []).append(percentile(pings, 50))
            figures.setdefault(f"remote_{name}_select1_p99_ms", []).append(percentile(pings, 99))
            for workers in WORKERS:
                prefix = f"remote_{name}_{workers}w_"
                for _ in range(queue.options.repeat):
                    queue.reset()
                    queue.fill(count)
                    measured = queue.measure_process(count, workers)
                    enqueued, starts = queue.time_probes(PROBES, workers)
                    latencies = sorted((starts[n] - enqueued[n]) * 1000 for n in range(PROBES))
                    for figure, value in (
                        ("jobs_per_s", measured["jobs_per_s"]),
                        ("steady_per_s", measured["steady_per_s"]),
                        ("p50_ms", percentile(latencies, 50)),
                        ("p99_ms", percentile(latencies, 99)),
                    ):
                        figures.setdefault(prefix + figure, []).append(value)
