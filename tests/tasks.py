"""Tasks the tests enqueue and the worker subprocesses run."""

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from django.db import connection
from django.dispatch import receiver
from django.tasks import TaskResult, task
from django.tasks.signals import task_finished, task_started

from jobs.cancellation import cancel_requested, wait_for_cancel
from jobs.exceptions import JobTimeout, Snooze
from jobs.retries import Retry


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


@task(takes_context=True, max_attempts=10)
def sleep_then_record(context, seconds: float) -> int:
    """Sleep, then count the run in the ledger: a run stopped before its end counts nothing."""
    note_start(context)
    time.sleep(seconds)
    return record_run.call(context, "slept")


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


class CustomInterruption(BaseException):
    """A BaseException of the project's own, not an Exception."""


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot say what it is")


@task(max_attempts=1)
def raises_system_exit() -> None:
    raise SystemExit(4)


@task(max_attempts=1)
def calls_exit() -> None:
    exit(5)


@task(max_attempts=1)
def raises_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


@task(max_attempts=1)
def raises_custom_base_exception() -> None:
    raise CustomInterruption("stop right there")


@task(max_attempts=1)
def raises_unprintable() -> None:
    raise UnprintableError


@task(max_attempts=2)
def fails_twice() -> None:
    raise ValueError("not this time")


@task(aliases=["tests.tasks.old_name_of_multiply", "tests.legacy_tasks.multiply"])
def multiply(a: int, b: int) -> int:
    return a * b


def describe_result(signal_name: str, result: TaskResult) -> dict:
    """What a task signal's TaskResult says, as JSON."""
    try:
        return_value = result.return_value
    except ValueError:
        return_value = "<not available>"
    return {
        "signal": signal_name,
        "id": result.id,
        "status": result.status,
        "started": result.started_at is not None,
        "finished": result.finished_at is not None,
        "return_value": return_value,
        "errors": [error.exception_class_path for error in result.errors],
        "run_after": result.task.run_after.isoformat() if result.task.run_after else None,
        "queue_name": result.task.queue_name,
    }


@receiver(task_started, dispatch_uid="tests.tasks.record_started")
@receiver(task_finished, dispatch_uid="tests.tasks.record_finished")
def record_signal(sender, task_result: TaskResult, signal, **kwargs) -> None:
    """With TEST_SIGNALS_FILE set, append what each task signal carried to that file."""
    path = os.environ.get("TEST_SIGNALS_FILE")
    if not path:
        return
    name = "task_started" if signal is task_started else "task_finished"
    with open(path, "a") as file:
        file.write(json.dumps(describe_result(name, task_result)) + "\n")


@task(takes_context=True, max_attempts=1)
def record_and_return(context, value: str) -> str:
    """Count the run in the ledger, then return value with "<surrogate>" as a lone surrogate."""
    record_run.call(context, "record_and_return")
    return value.replace("<surrogate>", "\ud800")


@task(max_attempts=1)
def raises_with_a_lone_surrogate() -> None:
    raise ValueError("bad \ud800 input")


@task(takes_context=True)
def limited_run(context, key: str, seconds: float = 0.02) -> None:
    """Write when this run started and ended, by the database's clock, to test_limit_ledger."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO test_limit_ledger (job_id, attempt, key, started_at) "
            "VALUES (%s, %s, %s, clock_timestamp())",
            [context.task_result.id, context.attempt, key],
        )
        time.sleep(seconds)
        cursor.execute(
            "UPDATE test_limit_ledger SET ended_at = clock_timestamp() "
            "WHERE job_id = %s AND attempt = %s",
            [context.task_result.id, context.attempt],
        )


@task
def rate_limited_run() -> None:
    return None


@task
def hourly_run() -> None:
    return None


@task
def keyed_noop(tenant: str) -> None:
    return None


@task(takes_context=True)
def tiered_run(context, key: str, seconds: float = 0.02) -> None:
    """limited_run under the "tiered" limit, whose keys have values of their own."""
    limited_run.call(context, key, seconds)


@task
def tenant_noop(tenant: str) -> None:
    return None


def tier_of(key: str) -> dict | None:
    """The "by-tenant" limit's values of a key: what a project would read from its plans."""
    if key.startswith("premium-"):
        return {"concurrency": 4, "rate": "100/s"}
    return None


@task(takes_context=True, max_attempts=3)
def limited_sleep(context, user_id: int, seconds: float) -> None:
    note_start(context)
    time.sleep(seconds)


@task(takes_context=True, max_attempts=3)
def chain_link(context, previous: str = "", label: str = "", seconds: float = 0.0) -> str:
    """A step of a chain: its side effect (the ledger's row) comes after its work."""
    note_start(context)
    time.sleep(seconds)
    record_run.call(context, label)
    return f"{previous}>{label}" if previous else label


@task(takes_context=True, max_attempts=3)
def graph_node(
    context, previous: str | list | None = None, label: str = "", seconds: float = 0.0
) -> str:
    """
    A node of a nested workflow: its side effect (the ledger's row) comes
    after its work, and it returns what it was given, then its label:
    "(a+b)>c" is c given a's and b's results.
    """
    note_start(context)
    time.sleep(seconds)
    record_run.call(context, label)
    if isinstance(previous, list):
        previous = "(" + "+".join(previous) + ")"
    return f"{previous}>{label}" if previous else label


@task(takes_context=True, max_attempts=1)
def batch_member(context, n: int, fail: bool = False) -> int:
    record_run.call(context, str(n))
    if fail:
        raise ValueError(f"member {n} failed")
    return n


@task(takes_context=True, max_attempts=3)
def batch_callback(context, results: list, label: str = "") -> int:
    record_run.call(context, label)
    return len(results)


@task(takes_context=True)
def reports_progress(context, steps: int, seconds: float = 0.0) -> int:
    from jobs.progress import report_progress

    note_start(context)
    for done in range(1, steps + 1):
        report_progress(context, done / steps, f"{done} of {steps}")
        time.sleep(seconds)
    return steps


class ProviderBusy(Exception):
    """A failure worth another attempt (jobs.retries)."""


class BadNumber(Exception):
    """A failure that no other attempt would mend."""


@task(
    max_attempts=3,
    retry=Retry(base=0.05, factor=3, cap=1.0, jitter=0),
    retry_on=[ProviderBusy, BadNumber],
    dont_retry_on=[BadNumber],
)
def send_under_policy(raising: str) -> None:
    """Raises the exception it is named, of this module or builtins, on every attempt."""
    raise {"ProviderBusy": ProviderBusy, "BadNumber": BadNumber, "KeyError": KeyError}[raising]()


def provider_delay(attempt: int, error: BaseException) -> float:
    """A callable retry policy: a tenth of a second per attempt spent."""
    return 0.1 * attempt


@task(max_attempts=2, retry=provider_delay)
def send_with_delay_callable() -> None:
    raise ProviderBusy("come back later")


@task(max_attempts=3, timeout=0.5, dont_retry_on=[JobTimeout])
def hang_once() -> None:
    """Runs past its timeout; a timed-out attempt is not retried."""
    time.sleep(30)


@task(takes_context=True, max_attempts=1)
def snooze_twice(context) -> int:
    """Snoozes 0.1 s the first two times it runs; then returns how many times it snoozed."""
    from jobs.models import Job

    snoozed = len(Job.objects.get(id=context.task_result.id).snoozes or ())
    if snoozed < 2:
        raise Snooze(0.1)
    return snoozed


@task(max_snoozes=2)
def always_snooze() -> None:
    raise Snooze(0.05)


@task(takes_context=True)
def stops_when_cancelled(context) -> str:
    """Waits up to a minute for its cancel, then says it ended on its own (jobs.cancellation)."""
    note_start(context)
    if wait_for_cancel(60):
        Path(os.environ["TEST_STARTED_DIR"], f"{context.task_result.id}-stopped").touch()
        return "stopped"
    return "never cancelled"


@task(takes_context=True)
async def async_stops_when_cancelled(context) -> str:
    """stops_when_cancelled as a coroutine, polling cancel_requested()."""
    note_start(context)
    for _ in range(600):
        if cancel_requested():
            Path(os.environ["TEST_STARTED_DIR"], f"{context.task_result.id}-stopped").touch()
            return "stopped"
        await asyncio.sleep(0.1)
    return "never cancelled"


@task(takes_context=True)
async def async_wait(context, seconds: float) -> float:
    """An I/O-bound async task: it awaits, as a call to a provider would, and reports progress."""
    from jobs.progress import areport_progress

    note_start(context)
    await asyncio.sleep(seconds)
    await areport_progress(context, 1.0, "waited")
    return seconds


@task(takes_context=True)
async def async_wait_timed(context, seconds: float) -> list[float]:
    """async_wait that returns when its await began and ended (epoch seconds), to count overlaps."""
    from jobs.progress import areport_progress

    began = time.time()
    await asyncio.sleep(seconds)
    ended = time.time()
    await areport_progress(context, 1.0, "waited")
    return [began, ended]


@task(max_attempts=1, timeout=1)
async def async_blocks_its_loop() -> None:
    """Awaits a little, then blocks its event loop (a sync sleep) far past its timeout."""
    await asyncio.sleep(0.3)
    time.sleep(60)


@task(max_attempts=1, timeout=1)
async def async_awaits_past_its_timeout() -> None:
    await asyncio.sleep(60)


@task(max_attempts=1)
async def async_ignores_its_cancel() -> None:
    """Never looks at cancel_requested(): its coroutine is cancelled for it."""
    await asyncio.sleep(60)
