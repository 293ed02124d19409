"""
What an operator (or code) can do to one job: cancel, retry, run now; and to
a queue: pause, resume and purge.

Each is one statement that checks the job's state in its WHERE clause, so a
job that moved on in the meantime is left alone and the caller is told.
"""

import json
import uuid

from django.db import connections, transaction
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends

from . import sql
from .exceptions import JobCancelled, JobStateError, class_path
from .jsonb import unstorable
from .models import Job, JobStatus, PausedQueue
from .workflows import advance


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
    Cancel a WAITING, READY or RUNNING job; return the status it had.

    A WAITING or READY job never runs. A RUNNING one ends CANCELLED at once,
    and its worker kills the executor running it within moments. The jobs of
    a workflow that needed it to succeed are cancelled with it, in the same
    transaction (jobs.workflows.advance).
    """
    database = _database(using, backend)
    with transaction.atomic(using=database), connections[database].cursor() as cursor:
        cursor.execute(
            sql.CANCEL,
            {
                "id": _job_id(job_id),
                "reason": reason,
                "exception_class_path": class_path(JobCancelled),
            },
        )
        found = cursor.fetchone()
        if found is not None and found[3]:
            advance(cursor, [str(_job_id(job_id))])
    if found is None:
        raise Job.DoesNotExist(f"No job with id {job_id}.")
    previous = found[0]
    if previous not in (JobStatus.WAITING, JobStatus.READY, JobStatus.RUNNING):
        raise JobStateError(
            f"Job {job_id} is {previous}: only WAITING, READY or RUNNING jobs can be cancelled."
        )
    return previous


def cancel_workflow(
    workflow_id: str,
    *,
    reason: str = "Workflow cancelled",
    using: str | None = None,
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
) -> int:
    """Cancel every job of a workflow that has not finished; return how many were."""
    database = _database(using, backend)
    jobs = Job.objects.using(database).filter(workflow_id=_job_id(workflow_id))
    # The waiting ones first: a callback cancelled before the last member is
    # cannot be made due by that member's cancel.
    waiting = jobs.filter(status=JobStatus.WAITING).order_by("id").values_list("id", flat=True)
    live = jobs.filter(status__in=(JobStatus.READY, JobStatus.RUNNING))
    cancelled = 0
    for job_id in [*waiting, *live.order_by("id").values_list("id", flat=True)]:
        try:
            cancel(str(job_id), reason=reason, using=database, backend=backend)
        except JobStateError:
            # It finished, or a parent's cancel took it, meanwhile.
            continue
        cancelled += 1
    return cancelled


def retry(
    job_id: str, *, using: str | None = None, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> None:
    """
    Send a FAILED or CANCELLED job round again, with one more attempt to
    spend. A job of a workflow resumes it: what was cancelled because it
    failed waits for it again (sql.RESUME_DEPENDANTS).
    """
    database = _database(using, backend)
    with transaction.atomic(using=database), connections[database].cursor() as cursor:
        cursor.execute(sql.RETRY, {"id": _job_id(job_id)})
        row = cursor.fetchone()
        if row is not None:
            _, has_dependants, given_results = row
            if has_dependants:
                cursor.execute(sql.RESUME_DEPENDANTS, {"id": _job_id(job_id)})
            if given_results:
                cursor.execute(sql.RESOLVE_PARENT_RESULTS, {"ids": [str(_job_id(job_id))]})
            return
    _refuse(job_id, database, "only FAILED or CANCELLED jobs can be retried")


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
    _refuse(job_id, database, rule)


def _refuse(job_id: str, database: str, rule: str) -> None:
    """Raise why the job was not changed: it does not exist, or its status forbids it."""
    status = Job.objects.using(database).filter(id=job_id).values_list("status", flat=True).first()
    if status is None:
        raise Job.DoesNotExist(f"No job with id {job_id}.")
    raise JobStateError(f"Job {job_id} is {status}: {rule}.")


def pause_queue(
    queue: str,
    *,
    by: str = "",
    using: str | None = None,
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
) -> bool:
    """
    Stop every worker from starting jobs of a queue, until resume_queue().

    Jobs running now finish. No claim that begins after this returns takes
    a job of the queue, and each worker gives back the jobs of it that it
    holds and has not begun as soon as the NOTIFY reaches it (milliseconds;
    a worker reconnecting to the database looks again), so only a job
    claimed just before the pause can still start. The pause is a row in
    the database: it holds through restarts. Returns False when the queue was
    paused already. `by` says who paused it, for the admin and `queues list`.
    """
    with connections[_database(using, backend)].cursor() as cursor:
        cursor.execute(sql.PAUSE_QUEUE, {"queue": _queue_name(queue, backend), "by": by[:150]})
        return cursor.fetchone()[0]


def resume_queue(
    queue: str, *, using: str | None = None, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> bool:
    """Let the workers claim a paused queue's jobs again; False when it was not paused."""
    # Any name goes: a queue paused, then taken out of QUEUES, can be resumed.
    with connections[_database(using, backend)].cursor() as cursor:
        cursor.execute(sql.RESUME_QUEUE, {"queue": _queue_name(queue, backend, known=False)})
        return cursor.fetchone()[0]


def purge_queue(
    queue: str, *, using: str | None = None, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> int:
    """
    Delete the READY jobs of a queue (due or not), in one statement; return
    how many. Running jobs are left to finish.
    """
    with connections[_database(using, backend)].cursor() as cursor:
        cursor.execute(sql.PURGE_QUEUE, {"queue": queue})
        return cursor.rowcount


def paused_queues(
    *, using: str | None = None, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> list[PausedQueue]:
    """The paused queues, by name, with when and by whom each was paused."""
    return list(PausedQueue.objects.using(_database(using, backend)))


def _queue_name(queue: object, backend: str, *, known: bool = True) -> str:
    """
    The queue's name, or a ValueError saying why it cannot be one of this
    backend's; known=False accepts a name its QUEUES no longer lists.
    """
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"A queue name is a non-empty string, not {queue!r}.")
    allowed = task_backends[backend].queues
    if known and allowed and queue not in allowed:
        raise ValueError(
            f"Unknown queue {queue!r}: the {backend!r} backend's QUEUES are "
            f"{', '.join(sorted(allowed))}."
        )
    limit = PausedQueue._meta.get_field("queue").max_length
    if len(queue) > limit:
        raise ValueError(f"A queue name is at most {limit} characters long.")
    if reason := unstorable(json.dumps(queue)):
        raise ValueError(f"A queue name cannot hold {reason}.")
    return queue
