"""
results.await_result() and wait(): woken by the NOTIFY of whatever ends the
job (the worker's outcome, a cancel), with a deadline, on a job of any
status, and told when the job is deleted meanwhile.
"""

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.tasks import TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils import timezone

from jobs import operations, queries, results
from jobs.models import Job, JobStatus
from tests.conftest import wait_until
from tests.tasks import add, sleep_for

await_result = async_to_sync(results.await_result)


def test_await_result_returns_when_a_worker_finishes_the_job(start_worker):
    start_worker("--concurrency", "1")
    result = sleep_for.enqueue(0.5)
    fetched = await_result(result.id, timeout=30)
    assert fetched.id == result.id
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 0.5


@pytest.mark.django_db(transaction=True)
def test_await_result_of_a_finished_job_returns_at_once():
    result = add.enqueue(2, 3)
    now = timezone.now()
    Job.objects.filter(id=result.id).update(
        status=JobStatus.SUCCESSFUL, attempts=1, started_at=now, finished_at=now, return_value=5
    )
    fetched = await_result(result.id, timeout=0)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 5


@pytest.mark.django_db(transaction=True)
def test_await_result_gives_up_at_its_deadline():
    pending = add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 2)
    with pytest.raises(TimeoutError):
        await_result(pending.id, timeout=0.3)


@pytest.mark.django_db(transaction=True)
def test_await_result_of_an_unknown_job_says_so():
    with pytest.raises(TaskResultDoesNotExist):
        await_result("0190d3c4-0000-7000-8000-000000000000", timeout=1)


def waited_in_a_thread(wait: Callable[[], object]) -> tuple[threading.Thread, list]:
    """wait() in a thread, listening by the time this returns; its outcome goes in the list."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(wait())
        except Exception as error:
            outcome.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()

    def listening() -> bool:
        """the waiter listens, read the job's status and sleeps until a notification"""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle' AND query = %s",
                [queries.observe.JOB_STATUS.replace("%s", "$1")],
            )
            return cursor.fetchone()[0] > 0

    wait_until(listening, timeout=10)
    return thread, outcome


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("waiter", ["wait", "await_result"])
def test_a_wait_ends_when_the_job_is_cancelled_not_at_its_deadline(waiter):
    """A cancel announces the job as finished, as an outcome does."""
    job = add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 2)
    wait = results.wait if waiter == "wait" else await_result
    thread, outcome = waited_in_a_thread(lambda: wait(job.id, timeout=60))
    started = time.monotonic()
    operations.cancel(job.id)
    thread.join(timeout=30)
    assert time.monotonic() - started < 10
    [fetched] = outcome
    # Django's statuses have no CANCELLED: a cancelled job reads as FAILED.
    assert fetched.status == TaskResultStatus.FAILED
    assert Job.objects.get(id=job.id).status == JobStatus.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_a_wait_on_a_job_purged_meanwhile_says_it_is_gone():
    job = add.using(queue_name="reports").enqueue(1, 2)
    thread, outcome = waited_in_a_thread(lambda: results.wait(job.id, timeout=60))
    operations.purge_queue("reports")
    thread.join(timeout=30)
    [error] = outcome
    assert isinstance(error, TaskResultDoesNotExist)
    assert "deleted while waited for" in str(error)
