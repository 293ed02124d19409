"""Cancel, retry and run-now of single jobs, without a worker."""

import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.tasks import TaskResultStatus

from jobs import operations
from jobs.exceptions import JobStateError
from jobs.models import Job
from jobs.results import wait
from jobs.testing import run_due_jobs
from tests.conftest import wait_until
from tests.docs.pages import python_blocks, section
from tests.tasks import add

pytestmark = pytest.mark.django_db


def test_cancel_a_ready_job():
    result = add.enqueue(1, 2)
    assert operations.cancel(result.id, reason="Not needed any more") == "READY"
    job = Job.objects.get(id=result.id)
    assert job.status == "CANCELLED" and job.finished_at is not None
    assert job.errors[-1]["exception_class_path"] == "jobs.exceptions.JobCancelled"
    assert job.errors[-1]["message"] == "Not needed any more"
    with pytest.raises(JobStateError, match="is CANCELLED"):
        operations.cancel(result.id)


def test_retry_a_failed_job_gives_it_one_more_attempt():
    result = add.using(max_attempts=1).enqueue(1, 2)
    Job.objects.filter(id=result.id).update(status="FAILED", attempts=1)
    operations.retry(result.id)
    job = Job.objects.get(id=result.id)
    assert (job.status, job.attempts, job.max_attempts, job.finished_at) == ("READY", 1, 2, None)
    with pytest.raises(JobStateError, match="is READY: only FAILED or CANCELLED"):
        operations.retry(result.id)


def test_run_now_makes_a_scheduled_job_due():
    result = add.using(countdown=3600).enqueue(1, 2)
    operations.run_now(result.id)
    job = Job.objects.get(id=result.id)
    assert (job.run_at - job.enqueued_at).total_seconds() < 60


def test_operations_on_unknown_or_malformed_ids():
    for operation in (operations.cancel, operations.retry, operations.run_now):
        with pytest.raises(Job.DoesNotExist):
            operation(str(uuid.uuid4()))
        with pytest.raises(Job.DoesNotExist):
            operation("nonsense")


def inside(thread_id: int, function) -> bool:
    """Whether the thread is running function now."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        if frame.f_code is function.__code__:
            return True
        frame = frame.f_back
    return False


@pytest.mark.django_db(transaction=True)
def test_the_docs_operations_cancel_retry_run_now_and_wait_for_the_job():
    [block] = python_blocks(section("What happens when things go wrong"))
    task_id = add.using(countdown=3600).enqueue(1, 2).id
    example = threading.get_ident()

    def run_the_job_once_waited_for():
        """A worker's part, played once the example blocks in wait()."""
        wait_until(lambda: inside(example, wait))
        try:
            return run_due_jobs()
        finally:
            connection.close()

    namespace = {"task_id": task_id}
    with ThreadPoolExecutor(1) as pool:
        ran = pool.submit(run_the_job_once_waited_for)
        exec(block, namespace)
    assert ran.result().attempts == 1
    result = namespace["result"]
    assert (result.id, result.status, result.return_value) == (
        task_id,
        TaskResultStatus.SUCCESSFUL,
        3,
    )
    # The cancel is on record, and the retry kept the attempts the job had left.
    assert [error.exception_class_path for error in result.errors] == [
        "jobs.exceptions.JobCancelled"
    ]
    assert (result.attempts, Job.objects.get(id=task_id).max_attempts) == (1, 3)
