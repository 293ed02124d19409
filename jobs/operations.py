"""
What an operator (or code) can do to one job: cancel, retry, run now.

Each is one statement that checks the job's state in its WHERE clause, so a
job that moved on in the meantime is left alone and the caller is told.
"""

import uuid

from django.db import connections
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends

from . import sql
from .exceptions import JobCancelled, JobStateError, class_path
from .models import Job, JobStatus


def _database(using: str | None, backend: str) -> str:
    return using or task_backends[backend].database


def _job_id(job_id: object) -> str:
    try:
        return str(uuid.UUID(str(job_id)))
    except ValueError:
        raise Job.DoesNotExist(f"{job_id!r} is not a job id.") from None


def cancel(
    job_id: str,
    *,
    reason: str = "Cancelled",
    using: str | None = None,
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
) -> str:
    """
    Cancel a READY or RUNNING job; return the status it had.

    A READY job never runs. A RUNNING one ends CANCELLED at once, and its worker
    kills the executor running it within moments.
    """
    with connections[_database(using, backend)].cursor() as cursor:
        cursor.execute(
            sql.CANCEL,
            {
                "id": _job_id(job_id),
                "reason": reason,
                "exception_class_path": class_path(JobCancelled),
            },
        )
        row = cursor.fetchone()
    if row is None:
        raise Job.DoesNotExist(f"No job with id {job_id}.")
    previous = row[0]
    if previous not in (JobStatus.READY, JobStatus.RUNNING):
        raise JobStateError(
            f"Job {job_id} is {previous}: only READY or RUNNING jobs can be cancelled."
        )
    return previous


def retry(
    job_id: str, *, using: str | None = None, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> None:
    """Send a FAILED or CANCELLED job round again, with one more attempt to spend."""
    _update_one(
        sql.RETRY, job_id, _database(using, backend), "only FAILED or CANCELLED jobs can be retried"
    )


def run_now(
    job_id: str, *, using: str | None = None, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> None:
    """Make a READY job that waits for its run_at due now."""
    _update_one(sql.RUN_NOW, job_id, _database(using, backend), "only READY jobs can be run now")


def _update_one(statement: str, job_id: str, database: str, rule: str) -> None:
    with connections[database].cursor() as cursor:
        cursor.execute(statement, {"id": _job_id(job_id)})
        if cursor.fetchone() is not None:
            return
    status = Job.objects.using(database).filter(id=job_id).values_list("status", flat=True).first()
    if status is None:
        raise Job.DoesNotExist(f"No job with id {job_id}.")
    raise JobStateError(f"Job {job_id} is {status}: {rule}.")
