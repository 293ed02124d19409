"""Cancel, retry and run-now of single jobs, without a worker."""

import uuid

import pytest

from jobs import operations
from jobs.exceptions import JobStateError
from jobs.models import Job
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
