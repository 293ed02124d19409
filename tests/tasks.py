"""Tasks the tests enqueue and the worker subprocesses run."""

import os
import sys
import time
from pathlib import Path

from django.db import connection
from django.tasks import task


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def noop() -> None:
    return None


@task(takes_context=True)
def record_run(context, label: str = "") -> int:
    """Count this run in the ledger: one row per job, runs += 1 on every run."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO test_ledger (job_id, runs, last_attempt, pid) VALUES (%s, 1, %s, %s)
            ON CONFLICT (job_id) DO UPDATE SET runs = test_ledger.runs + 1,
                last_attempt = EXCLUDED.last_attempt, pid = EXCLUDED.pid
            """,
            [context.task_result.id, context.attempt, os.getpid()],
        )
    return context.attempt


def note_start(context) -> None:
    """
    Leave a file named after the attempt in TEST_STARTED_DIR, so that a test
    can wait until the job's code runs in an executor (RUNNING in the table
    means claimed: the job may still wait in its executor's queue).
    """
    directory = os.environ.get("TEST_STARTED_DIR")
    if directory:
        Path(directory, f"{context.task_result.id}-{context.attempt}").touch()


@task(takes_context=True)
def sleep_for(context, seconds: float) -> float:
    note_start(context)
    time.sleep(seconds)
    return seconds


@task(max_attempts=1)
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@task
async def async_add(a: int, b: int) -> int:
    return a + b


@task(max_attempts=5, timeout=30)
def patient() -> None:
    return None


@task(takes_context=True, max_attempts=3)
def slow_on_first_attempt(context, seconds: float) -> int:
    """Sleep on attempt 1 only, then count a completed run in the ledger."""
    note_start(context)
    if context.attempt == 1:
        time.sleep(seconds)
    record_run.call(context, "completed")
    return context.attempt


@task(takes_context=True, max_attempts=4)
def always_fails(context) -> None:
    record_run.call(context, "failed")
    raise RuntimeError(f"attempt {context.attempt} failed")


@task(max_attempts=2, timeout=1)
def sleeps_past_timeout() -> None:
    time.sleep(30)


@task(max_attempts=1)
def exits_the_process() -> None:
    os._exit(3)


@task(takes_context=True, max_attempts=10)
def record_run_patiently(context, label: str = "") -> int:
    """record_run with attempts to spare for a database that goes away."""
    return record_run.call(context, label)


@task(takes_context=True)
def rendezvous(context, count: int) -> int:
    """
    Count this run in the ledger, then wait until `count` runs are counted:
    it returns only if that many jobs run at the same time.
    """
    record_run.call(context, "rendezvous")
    deadline = time.monotonic() + 20
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT count(*) FROM test_ledger")
            if cursor.fetchone()[0] >= count:
                return os.getpid()
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} jobs ran at once")
            time.sleep(0.01)


@task(max_attempts=1, timeout=1)
def times_out() -> None:
    time.sleep(30)


@task(max_attempts=1)
def calls_sys_exit() -> None:
    sys.exit(3)
