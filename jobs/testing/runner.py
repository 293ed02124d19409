"""
Running the queue's due jobs in a test's own process, as a worker runs them.

The same statements and the same code as `runworker`: CLAIM marks the jobs
RUNNING and spends an attempt, the worker's JobRunner runs each one and says
how it ended, COMPLETE writes that, fenced. So retries and their backoff,
RetryJob, DoNotRetry and max_attempts behave as they do in production.

Everything goes through Django's connection for the backend's database: the
jobs a test enqueued inside its transaction (a TestCase, pytest's `db`) are
visible only there.
"""

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q, QuerySet
from django.db.models.functions import Now
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, TaskResult, task_backends
from psycopg.pq import TransactionStatus

from .. import transitions
from ..backend import PostgresBackend
from ..models import Job, JobStatus
from ..worker.job_runner import JobRunner
from ..worker.key_scan import KEYS_SKIPPED
from ..worker.protocol import POSTPONED, SNOOZED, ClaimedJob, Outcome, complete_batch

# Jobs claimed at once; a round claims this many at most.
BATCH_SIZE = 100


@dataclass(frozen=True, slots=True)
class JobsRun:
    """What run_due_jobs() did."""

    # The jobs it ran, in the order they first ran, as they stand after it.
    results: list[TaskResult]
    # Attempts it ran, retries included.
    attempts: int

    @property
    def counts(self) -> dict[str, int]:
        """How many of the jobs stand in each status: {"SUCCESSFUL": 2, "READY": 1}."""
        return dict(Counter(result.status.value for result in self.results))


def run_due_jobs(
    *,
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
    queues: Iterable[str] | None = None,
    include_retries: bool = False,
    max_rounds: int = 100,
) -> JobsRun:
    """
    Run the jobs that are due, in this process, until none is: jobs that the
    jobs enqueue are run too, when they are due.

    `queues` limits the run to some of the backend's queues (all of them by
    default, and every queue when its QUEUES is empty).

    A failed attempt with attempts left goes back to READY for later, after
    its backoff or RetryJob's countdown, and so does a snooze: neither is
    due now; `include_retries=True` makes every such job due at once, before
    each round, so each job runs until it succeeds or fails for good. A job
    enqueued for later (`countdown`, `run_after`) is not run:
    `jobs.operations.run_now(id)` makes it due.

    A round claims up to BATCH_SIZE jobs, runs them and writes their
    outcomes. Jobs still due after `max_rounds` rounds (a task that enqueues
    itself, say) raise RuntimeError rather than run for ever.
    """
    jobs_backend = task_backends[backend]
    if not isinstance(jobs_backend, PostgresBackend):
        raise TypeError(
            f"run_due_jobs() runs the jobs of a PostgresBackend; task backend {backend!r} "
            f"is a {type(jobs_backend).__name__}."
        )
    # No names means every queue, as for the worker.
    names = sorted(jobs_backend.queues if queues is None else set(queues))
    unknown = set(names) - jobs_backend.queues
    if unknown and jobs_backend.queues:
        raise ValueError(
            f"Task backend {backend!r} has no queue {', '.join(sorted(unknown))}; "
            f"its queues are {', '.join(sorted(jobs_backend.queues))}."
        )
    connection = connections[jobs_backend.database]
    limited = bool(jobs_backend.queue_options.limits)
    runner = JobRunner(f"run_due_jobs-{os.getpid()}", backend, close_connections=False)
    ran: dict[str, None] = {}  # the ids of the jobs that ran, in the order they first ran
    attempts = 0
    for _ in range(max_rounds):
        if include_retries:
            _make_retries_due(connection, names)
        jobs = _claim(connection, runner.worker_id, names, limited=limited)
        if not jobs:
            break
        outcomes = [_run(runner, job, connection) for job in jobs]
        attempts += len(outcomes)
        ran.update(dict.fromkeys(job.id for job in jobs))
        _complete(connection, outcomes, {job.id for job in jobs if job.has_dependants})
    else:
        if _due(connection, names, include_retries):
            raise RuntimeError(
                f"Jobs were still due after {max_rounds} rounds of up to {BATCH_SIZE} "
                "jobs: does a task enqueue itself? Pass max_rounds to allow more."
            )
    # Read back by this backend, whose database holds them all, whatever
    # backend each names.
    results = [jobs_backend.get_result(job_id) for job_id in ran]
    return JobsRun(results=results, attempts=attempts)


def _claim(
    connection: BaseDatabaseWrapper, worker_id: str, queues: list[str], *, limited: bool
) -> list[ClaimedJob]:
    """
    The worker's claim; with limits, its LIMITED_CLAIM, which holds them as
    runworker does: a job held back by one stays READY.
    """
    params = {"queues": queues, "limit": BATCH_SIZE, "worker_id": worker_id}
    if limited:
        params.update(after="{}", visit=BATCH_SIZE, skip=KEYS_SKIPPED, plain_served=None)
    with connection.cursor() as cursor:
        rows = transitions.claim(cursor, params, limited=limited, every_queue=not queues)
        # LIMITED_CLAIM's last row, with no id, says where its scan stopped.
        jobs = [ClaimedJob(*row) for row in rows if row[0] is not None]
    # The worker's order: RETURNING keeps none.
    jobs.sort(key=lambda job: (-job.priority, job.run_at, job.id))
    return jobs


def _run(runner: JobRunner, job: ClaimedJob, connection: BaseDatabaseWrapper) -> Outcome:
    """
    Run one job; in a transaction, in a savepoint of its own.

    A worker runs each job in autocommit, where a statement that fails takes
    only itself with it. In a test's transaction it would leave the whole
    transaction unusable, and the test with it: the job's savepoint is rolled
    back instead, its writes with it, and the test goes on.
    """
    if not connection.in_atomic_block:
        return runner.run(job)
    outcome = None
    try:
        with transaction.atomic(using=connection.alias):
            outcome = runner.run(job)
            if (
                connection.needs_rollback
                or connection.connection.info.transaction_status == TransactionStatus.INERROR
            ):
                raise _RollBack
    except _RollBack:
        pass
    return outcome


class _RollBack(Exception):
    """Leaves a job's savepoint by rolling it back."""


# Outcomes given back to READY, their attempt not spent, as the worker's
# completer gives them back.
GIVEN_BACK = (POSTPONED, SNOOZED)


def _complete(
    connection: BaseDatabaseWrapper, outcomes: list[Outcome], dependants: set[str]
) -> None:
    """
    Write outcomes as the worker does: COMPLETE, with the same JSON batch as
    its completer (QueueDatabase.complete); a job whose task does not load
    (POSTPONED) or that snoozed (SNOOZED) goes back to READY with RELEASE,
    its attempt not spent. Their LIMITED_ forms, which free the slots of jobs
    under limits and are the plain ones for the others. The jobs of
    workflows that wait for them move as the worker moves them
    (jobs.transitions).
    """
    postponed = [outcome for outcome in outcomes if outcome.status in GIVEN_BACK]
    finished = [outcome for outcome in outcomes if outcome.status not in GIVEN_BACK]
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        if finished:
            transitions.complete(
                cursor, complete_batch(finished), limited=True, dependants=frozenset(dependants)
            )
        if postponed:
            transitions.release(
                cursor,
                [outcome.id for outcome in postponed],
                [outcome.attempt for outcome in postponed],
                [outcome.retry_at for outcome in postponed],
                limited=True,
                begun=[outcome.status == SNOOZED for outcome in postponed],
                snoozes=[
                    outcome.error if outcome.status == SNOOZED else None for outcome in postponed
                ],
            )


def _ready(connection: BaseDatabaseWrapper, queues: list[str]) -> QuerySet:
    ready = Job.objects.using(connection.alias).filter(status=JobStatus.READY)
    return ready.filter(queue__in=queues) if queues else ready


# A retry is a READY job with an attempt spent, or one that snoozed.
_RETRIED = Q(attempts__gt=0) | Q(snoozes__isnull=False)


def _make_retries_due(connection: BaseDatabaseWrapper, queues: list[str]) -> None:
    _ready(connection, queues).filter(_RETRIED, run_at__gt=Now()).update(run_at=Now())


def _due(connection: BaseDatabaseWrapper, queues: list[str], include_retries: bool) -> bool:
    due = Q(run_at__lte=Now())
    if include_retries:
        due |= _RETRIED
    return _ready(connection, queues).filter(due).exists()
