"""
What an operator (or code) can do to jobs: cancel, retry, run now, delete,
prune; and to a queue: pause, resume and purge.

Each change of a job goes through jobs.transitions, whose statements check
the job's state as they lock it, so a job that moved on in the meantime is
left alone and the caller is told.
"""

import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import connections
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends

from . import queries, transitions
from .exceptions import JobStateError
from .jsonb import unstorable
from .models import Job, JobStatus, PausedQueue
from .retention import PrunePass

# Jobs a purge deletes per transaction.
PURGE_BATCH = 5000
# Finished jobs a prune deletes per transaction, and idle limit keys it looks at.
PRUNE_BATCH = 1000


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

    A WAITING or READY job never runs. A RUNNING one ends CANCELLED at once;
    its worker tells the task (jobs.cancellation) and kills the executor
    running it if it still runs CANCEL_GRACE seconds later. The jobs of
    a workflow that needed it to succeed are cancelled with it, in the same
    transaction (jobs.transitions.cancel).
    """
    database = _database(using, backend)
    with connections[database].cursor() as cursor:
        found = transitions.cancel(cursor, [_job_id(job_id)], reason)
    if not found:
        raise Job.DoesNotExist(f"No job with id {job_id}.")
    [outcome] = found.values()
    if not outcome.cancelled:
        raise JobStateError(
            f"Job {job_id} is {outcome.previous}: only WAITING, READY or RUNNING jobs can be "
            "cancelled."
        )
    return outcome.previous


def cancel_workflow(
    workflow_id: str,
    *,
    reason: str = "Workflow cancelled",
    using: str | None = None,
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
) -> int:
    """
    Cancel every job of a workflow that has not finished, in one
    transaction; return how many were.
    """
    database = _database(using, backend)
    live = Job.objects.using(database).filter(
        workflow_id=_job_id(workflow_id),
        status__in=(JobStatus.WAITING, JobStatus.READY, JobStatus.RUNNING),
    )
    with connections[database].cursor() as cursor:
        found = transitions.cancel(cursor, live.values_list("id", flat=True), reason)
    return sum(outcome.cancelled for outcome in found.values())


def retry(
    job_id: str, *, using: str | None = None, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> None:
    """
    Send a FAILED or CANCELLED job round again, with one more attempt to
    spend. A job of a workflow resumes it: what waits for it counts it as
    unfinished again, and what was cancelled because it failed waits for it
    again (jobs.transitions.retry). Its limit keys are made again if a prune
    of idle keys deleted them meanwhile.
    """
    database = _database(using, backend)
    limits = task_backends[backend].queue_options.limits
    with connections[database].cursor() as cursor:
        if transitions.retry(cursor, _job_id(job_id), limits):
            return
    _refuse(job_id, database, "only FAILED or CANCELLED jobs can be retried")


def run_now(
    job_id: str, *, using: str | None = None, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> None:
    """Make a READY job that waits for its run_at due now."""
    database = _database(using, backend)
    with connections[database].cursor() as cursor:
        if transitions.run_now(cursor, _job_id(job_id)):
            return
    _refuse(job_id, database, "only READY jobs can be run now")


def delete(
    job_ids: Iterable[object],
    *,
    using: str | None = None,
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
) -> int:
    """
    Delete jobs, in one transaction; return how many. A live one is cancelled
    first, so its slots are freed and the jobs of a workflow that wait for it
    move on; a deleted job's outcome stays readable for them.
    """
    with connections[_database(using, backend)].cursor() as cursor:
        return transitions.delete(cursor, [_job_id(job_id) for job_id in job_ids])


@dataclass(frozen=True)
class Pruned:
    """
    What a prune deleted, or with dry_run would delete: for each read of its
    finished jobs (jobs.retention.PrunePass: a group of statuses, of no RETAIN
    rule, of one, or of rules taken out of RETAIN), how many went; and how
    many idle limit keys went (None: none were looked at).
    """

    jobs: list[tuple[PrunePass, int]]
    limit_keys: int | None


def prune(
    *,
    dry_run: bool = False,
    batch_size: int = PRUNE_BATCH,
    using: str | None = None,
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
    progress: Callable[[PrunePass, int], None] | None = None,
) -> Pruned:
    """
    Delete the finished jobs past their retention (RETAIN_SUCCESSFUL,
    RETAIN_FAILED and the rules of RETAIN), batch_size at a time, each batch
    a transaction that holds no long lock and keeps what the jobs of
    workflows waiting for them read (jobs.transitions.prune); then, under
    limits, the rows of limit keys that hold nothing. Workers do this a
    batch per heartbeat; this does it all now. `progress` is told each
    read's count so far after each full batch.
    """
    options = task_backends[backend].queue_options
    rules = options.retain.names
    groups = []
    with connections[using or options.database].cursor() as cursor:
        for prune_pass in options.prune_passes(backend, orphaned=True):
            count = 0
            if prune_pass.older_than is not None and dry_run:
                cursor.execute(
                    queries.finish.COUNT_PRUNABLE[transitions.prune_kind(prune_pass)],
                    transitions.prunable_params(prune_pass, rules),
                )
                count = cursor.fetchone()[0]
            elif prune_pass.older_than is not None:
                while (batch := transitions.prune(cursor, prune_pass, batch_size, rules=rules)) > 0:
                    count += batch
                    if batch < batch_size:
                        break
                    if progress is not None:
                        progress(prune_pass, count)
            groups.append((prune_pass, count))
        limit_keys = None
        if options.limits and not dry_run:
            limit_keys, after = 0, ""
            while after is not None:
                batch, after = transitions.prune_limit_keys(cursor, after, batch_size)
                limit_keys += batch
    return Pruned(groups, limit_keys)


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
        cursor.execute(
            queries.workers.PAUSE_QUEUE, {"queue": _queue_name(queue, backend), "by": by[:150]}
        )
        return cursor.fetchone()[0]


def resume_queue(
    queue: str, *, using: str | None = None, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> bool:
    """Let the workers claim a paused queue's jobs again; False when it was not paused."""
    # Any name goes: a queue paused, then taken out of QUEUES, can be resumed.
    with connections[_database(using, backend)].cursor() as cursor:
        cursor.execute(
            queries.workers.RESUME_QUEUE, {"queue": _queue_name(queue, backend, known=False)}
        )
        return cursor.fetchone()[0]


def purge_queue(
    queue: str,
    *,
    using: str | None = None,
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
    progress: Callable[[int], None] | None = None,
) -> int:
    """
    Delete the READY jobs of a queue (due or not), PURGE_BATCH at a time,
    each batch a transaction; return how many. Running jobs are left to
    finish. The jobs of workflows that waited for a purged job move as for a
    cancel (jobs.transitions.purge). `progress` is told the count so far
    after each batch.
    """
    deleted = 0
    database = _database(using, backend)
    while True:
        with connections[database].cursor() as cursor:
            batch = transitions.purge(cursor, queue, PURGE_BATCH)
        deleted += batch
        if progress is not None and batch:
            progress(deleted)
        if batch < PURGE_BATCH:
            return deleted


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
