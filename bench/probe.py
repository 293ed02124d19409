"""
The two jobs every queue runs: a no-op, and a probe that records when it started.

Plain functions with no dependency but psycopg, so that each queue wraps the
very same code in its own task decorator and the latency is measured the same
way everywhere: the enqueuer notes time.time() just before its enqueue call,
the probe notes time.time() as its first act, and both land in bench_start.
"""

import os
import time

import psycopg

_connection: psycopg.Connection | None = None

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS bench_start (n integer PRIMARY KEY, started float8 NOT NULL)
"""


def noop() -> None:
    """The job of the throughput figures: nothing, so the queue is all that is measured."""


def record_start(n: int) -> None:
    """Write this job's start time; one connection per worker process, kept open."""
    started = time.time()
    global _connection
    if _connection is None or _connection.closed:
        _connection = psycopg.connect(os.environ["BENCH_DSN"], autocommit=True)
    _connection.execute(
        "INSERT INTO bench_start (n, started) VALUES (%s, %s) ON CONFLICT (n) DO NOTHING",
        (n, started),
    )
