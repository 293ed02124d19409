"""
results.await_result(), the async waiter: woken by the worker's NOTIFY as the
outcome is written, with a deadline, on a job of any status.
"""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.tasks import TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils import timezone

from jobs import results
from jobs.models import Job, JobStatus
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
