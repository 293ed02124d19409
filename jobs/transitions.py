"""
Every change of a job's status, in one place.

A job's status changes by enqueue, claim, completion (success, failure,
retry), give-back, rescue, cancel, operator retry, purge, delete and prune.
Each change implies others: a run that ends frees its slots under limits, a
give-back returns its token too, a parent that finishes moves, cancels or
resumes the jobs that wait for it, a deleted parent leaves its outcome for
them to read. Those rules hold only if every path keeps them, so every path
is a function here, and the worker, `jobs.operations`, the admin, the
commands and `jobs.testing` call these functions; no other module runs a
statement that changes `jobs_job.status` (tests/transitions/test_door.py checks).

Each function runs on the caller's cursor (Django's or psycopg's), inside
the caller's transaction when it has one; one that runs several statements
opens a transaction of its own otherwise, so what it does is all or
nothing. Every path takes its row locks in one order: jobs by id (a batch
of outcomes or give-backs is sent in id order, since their statements lock
rows in the order given), then limit keys by key, then dependants by id. So
two paths that meet on the same rows wait for each other, and never
deadlock. A dependant is a job too: it holds because a workflow's jobs are
inserted together and its edges never form a cycle, and only the retry
locks a job's dependants while it holds the job. The FOR KEY SHARE holds of
limit keys conflict only with the prune of idle keys, which skips what it
cannot lock.
"""

import json
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.tasks.exceptions import InvalidTask

from . import queries
from .exceptions import JobCancelled, class_path
from .limits import Limits
from .retention import PrunePass

# How many times enqueue makes and holds its limit keys before it gives up
# (see queries.enqueue.ENSURE_LIMIT_KEYS): each try loses only to a prune of the same
# idle key that committed meanwhile.
HOLD_LIMIT_KEYS_TRIES = 5


def _atomic(cursor: Any) -> AbstractContextManager:
    """A transaction on the cursor's connection, or the caller's if it is in one."""
    database = getattr(cursor, "db", None)
    if database is not None:
        return transaction.atomic(using=database.alias, savepoint=False)
    return cursor.connection.transaction()


def _ids(ids: Iterable[object]) -> list[str]:
    return [str(job_id) for job_id in ids]


# Enqueue.


def hold_limit_keys(cursor: Any, key_rows: list[list[Any]]) -> None:
    """
    Make the limit key rows that jobs about to be enqueued count against, and
    hold them until the caller's transaction commits, which must also insert
    the jobs: a prune of idle keys cannot delete a row they rely on. Each
    row is [key, limit name, concurrency, rate, period, burst].
    """
    rows = json.dumps(key_rows, separators=(",", ":"))
    with _atomic(cursor):
        for _ in range(HOLD_LIMIT_KEYS_TRIES):
            cursor.execute(queries.enqueue.ENSURE_LIMIT_KEYS, {"limit_keys": rows})
            if cursor.fetchone()[0]:
                return
    raise RuntimeError(
        f"The limit keys could not be held in {HOLD_LIMIT_KEYS_TRIES} tries: each was "
        "deleted as idle meanwhile."
    )


# The worker's paths: claim, completion, give-back and rescue.


def claim(cursor: Any, params: dict[str, Any], *, limited: bool, every_queue: bool) -> list[tuple]:
    """
    Claim due jobs (queries.claim.CLAIM's parameters: queues, limit, worker_id), each
    RUNNING with an attempt spent. `limited` runs LIMITED_CLAIM (with `after`
    and `visit`), which takes the jobs under limits their keys let start and
    counts them in, and ends with a row whose id is None; `every_queue`
    claims from every queue that has jobs.
    """
    statement = queries.limits.claim_statement(limited=limited, every_queue=every_queue)
    cursor.execute(statement, params)
    return cursor.fetchall()


def complete(
    cursor: Any, outcomes: str, *, limited: bool, dependants: frozenset[str] = frozenset()
) -> set[str]:
    """
    Write the outcomes of attempts (queries.finish.COMPLETE's JSON batch); return the
    ids the fence accepted. `limited=False` says none of their jobs is under
    a limit; `dependants` are the ids of those that jobs of a workflow wait
    for, which move in the same transaction.
    """
    statement = queries.finish.complete_statement(limited=limited)
    if not dependants:
        cursor.execute(statement, {"outcomes": outcomes})
        return {row[0] for row in cursor.fetchall()}
    with _atomic(cursor):
        cursor.execute(statement, {"outcomes": outcomes})
        accepted = {row[0] for row in cursor.fetchall()}
        advance(cursor, sorted(accepted & dependants))
    return accepted


def release(
    cursor: Any,
    ids: Sequence[str],
    attempts: Sequence[int],
    run_at: Sequence[float] | None = None,
    *,
    limited: bool,
    begun: Sequence[bool] | None = None,
    snoozes: Sequence[str | None] | None = None,
) -> int:
    """
    Give claimed jobs back, READY, their attempt not spent and, under limits,
    their slots returned, and the tokens of those that never began (`begun`,
    a flag per job; none began when it is left out); due at once or at
    run_at. `snoozes` adds an entry (JSON text) to the snoozes of the jobs
    that snoozed (None for the others). Returns how many the fence let through.
    """
    # In id order, as a cancel locks them (see protocol.complete_batch).
    given_back = sorted(
        zip(
            ids,
            attempts,
            run_at or [None] * len(ids),
            begun or [False] * len(ids),
            snoozes or [None] * len(ids),
            strict=True,
        ),
        key=lambda job: job[0],
    )
    cursor.execute(
        queries.finish.release_statement(limited=limited),
        {
            "ids": [job[0] for job in given_back],
            "attempts": [job[1] for job in given_back],
            "run_at": None if run_at is None else [job[2] for job in given_back],
            "begun": [job[3] for job in given_back],
            "snoozes": [job[4] for job in given_back],
        },
    )
    return len(cursor.fetchall())


@dataclass(frozen=True)
class Rescued:
    """What a rescue did."""

    dead_workers: int
    ready: int
    failed: int


def rescue(cursor: Any, dead_after: float, exception_class_path: str) -> Rescued:
    """Put the jobs of dead workers back (queries.finish.RESCUE), and move their dependants."""
    with _atomic(cursor):
        cursor.execute(
            queries.finish.RESCUE,
            {"dead_after": dead_after, "exception_class_path": exception_class_path},
        )
        dead, ready, failed, _, failed_with_dependants = cursor.fetchone()
        advance(cursor, failed_with_dependants)
    return Rescued(dead, ready, failed)


# What an operator does.


@dataclass(frozen=True)
class Cancelled:
    """One job a cancel found: the status it had, and whether this cancelled it."""

    previous: str
    cancelled: bool


def cancel(cursor: Any, ids: Iterable[object], reason: str) -> dict[str, Cancelled]:
    """
    Cancel the WAITING, READY and RUNNING jobs among `ids` (queries.finish.CANCEL): the
    running ones' workers kill them, their slots are freed, and the jobs of
    workflows that needed them move. Returns each job found.
    """
    with _atomic(cursor):
        cursor.execute(
            queries.finish.CANCEL,
            {"ids": _ids(ids), "reason": reason, "exception_class_path": class_path(JobCancelled)},
        )
        rows = cursor.fetchall()
        waited_for = [job_id for job_id, _, cancelled, dependants, _ in rows if dependants]
        advance(cursor, waited_for)
    return {job_id: Cancelled(previous, cancelled) for job_id, previous, cancelled, _, _ in rows}


def retry(cursor: Any, job_id: object, limits: Limits | None = None) -> bool:
    """
    Send a FAILED or CANCELLED job round again, with one more attempt; False
    when it is not one. A job of a workflow resumes it: its dependants count
    it as unfinished again, and those cancelled because it failed wait again
    (LOCK_RESUMED, RECOUNT_DEPENDANTS). A dependant itself cancelled before
    its parents finished waits for them again.
    """
    with _atomic(cursor):
        cursor.execute(queries.finish.RETRY, {"id": str(job_id)})
        row = cursor.fetchone()
        if row is None:
            return False
        _, has_dependants, waits_for_parents = row
        if not (has_dependants or waits_for_parents):
            _hold_limit_keys_of(cursor, [str(job_id)], limits)
        else:
            cursor.execute(
                queries.workflows.LOCK_RESUMED,
                {"id": str(job_id), "recount_retried": waits_for_parents},
            )
            locked, restored = cursor.fetchone()
            _hold_limit_keys_of(cursor, [str(job_id), *restored], limits)
            if locked:
                cursor.execute(
                    queries.workflows.RECOUNT_DEPENDANTS,
                    {"ids": locked, "unfinished": [str(job_id), *restored]},
                )
                given = [job for job, status, _, _ in cursor.fetchall() if status == "READY"]
                if given:
                    cursor.execute(queries.workflows.RESOLVE_PARENT_RESULTS, {"ids": given})
    return True


def _hold_limit_keys_of(cursor: Any, ids: list[str], limits: Limits | None) -> None:
    """
    Make and hold the limit key rows of jobs that come back to life: a prune
    of idle keys may have deleted them while the jobs were finished, and a
    READY job whose key has no row is never claimed. A key whose limit is no
    longer in the settings gets a row of no limit. FOR KEY SHARE, taken after
    the jobs' and the dependants' locks, conflicts only with that prune,
    which never waits for a job's lock.
    """
    if not limits or not ids:
        return
    cursor.execute(queries.limits.LIMIT_KEYS_OF_JOBS, {"ids": ids})
    rows: dict[str, list[Any]] = {}
    for task_path, queue, own, shared in cursor.fetchall():
        try:
            job_limits = limits.of(task_path, queue)
        except InvalidTask:
            job_limits = None
        for key, limit in (
            (own, job_limits and job_limits.own),
            (shared, job_limits and job_limits.shared),
        ):
            if key is None:
                continue
            name = key.split(":", 1)[0]
            row = limit.row(key) if limit and limit.name == name else [key, name] + [None] * 4
            rows.setdefault(key, row)
    if rows:
        hold_limit_keys(cursor, list(rows.values()))


def run_now(cursor: Any, job_id: object) -> bool:
    """Make a READY job that waits for its run_at due now; False when it is not one."""
    cursor.execute(queries.finish.RUN_NOW, {"id": str(job_id)})
    return cursor.fetchone() is not None


def delete(cursor: Any, ids: Iterable[object], reason: str = "Deleted") -> int:
    """
    Delete jobs, whatever their status: a live one is cancelled first, with
    `reason`, so that its slots are freed and its dependants move; the
    outcome of one that others wait for is kept on their edges. Returns how
    many were deleted.
    """
    ids = _ids(ids)
    with _atomic(cursor):
        cancel(cursor, ids, reason)
        cursor.execute(queries.finish.DELETE_FINISHED, {"ids": ids})
        return cursor.fetchone()[0]


def purge(cursor: Any, queue: str, limit: int) -> int:
    """
    Delete up to `limit` READY jobs of a queue, as delete() does (cancelled
    first: "Purged"); returns how many. Jobs that run are left to finish.
    """
    with _atomic(cursor):
        cursor.execute(queries.finish.PURGEABLE, {"queue": queue, "limit": limit})
        ids = [job_id for (job_id,) in cursor.fetchall()]
        return delete(cursor, ids, "Purged") if ids else 0


def prune(cursor: Any, prune_pass: PrunePass, limit: int, *, rules: Sequence[str]) -> int:
    """
    Delete up to `limit` of the jobs that prune_pass reads, past its
    retention, keeping what their dependants read; returns how many. An
    orphaned pass reads the jobs of its backend's rules not among `rules`,
    the names RETAIN has.
    """
    with _atomic(cursor):
        cursor.execute(
            queries.finish.PRUNABLE[prune_kind(prune_pass)],
            {**prunable_params(prune_pass, rules), "limit": limit},
        )
        ids = [job_id for (job_id,) in cursor.fetchall()]
        if not ids:
            return 0
        cursor.execute(queries.finish.DELETE_FINISHED, {"ids": ids})
        return cursor.fetchone()[0]


def prune_kind(prune_pass: PrunePass) -> str:
    """Which of queries.finish.PRUNABLE reads the pass's jobs."""
    if prune_pass.orphaned:
        return "orphaned"
    return "default" if prune_pass.rule is None else "rule"


def prunable_params(prune_pass: PrunePass, rules: Sequence[str]) -> dict[str, Any]:
    """The parameters of queries.finish.PRUNABLE and COUNT_PRUNABLE for the pass."""
    return {
        "statuses": list(prune_pass.statuses),
        "older_than": prune_pass.older_than,
        "rule": prune_pass.rule,
        "rules": list(rules),
        "backend": prune_pass.backend,
    }


def prune_limit_keys(cursor: Any, after: str, limit: int) -> tuple[int, str | None]:
    """
    Delete idle limit key rows (no run, a full bucket, no live job), up to
    `limit` looked at from key `after` on. Returns how many were deleted and
    where the next call goes on (None: the end was reached).
    """
    with _atomic(cursor):
        cursor.execute(queries.limits.IDLE_LIMIT_KEYS, {"after": after, "limit": limit})
        keys = [key for (key,) in cursor.fetchall()]
        if not keys:
            return 0, None
        cursor.execute(queries.limits.PRUNE_LIMIT_KEYS, {"keys": keys})
        return cursor.rowcount, keys[-1] if len(keys) == limit else None


# Workflows.


def advance(cursor: Any, finished: Sequence[str]) -> tuple[int, int]:
    """
    Move the dependants of jobs that just finished (queries.workflows.ADVANCE_WORKFLOWS),
    then the dependants of the ones that were cancelled, and so on down the
    graph, in the transaction that wrote the finished jobs' outcomes.
    Returns how many became READY and how many were cancelled.
    """
    ready = cancelled = 0
    ids = list(finished)
    while ids:
        cursor.execute(
            queries.workflows.ADVANCE_WORKFLOWS,
            {"ids": ids, "exception_class_path": class_path(JobCancelled)},
        )
        ids, given_results, made_ready, _ = cursor.fetchone()
        if given_results:
            cursor.execute(queries.workflows.RESOLVE_PARENT_RESULTS, {"ids": given_results})
        ready += made_ready
        cancelled += len(ids)
    return ready, cancelled
