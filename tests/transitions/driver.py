"""
A worker's part played in the test's own process: claim, finish and give
back jobs one at a time, with the worker's own statements (those of
jobs.testing, on Django's connection, inside the test's transaction), so a
test can stop a workflow or a limit at any state it needs.
"""

import json
import time

from django.db import connection

from jobs import queries
from jobs.testing.runner import _complete
from jobs.worker.protocol import POSTPONED, ClaimedJob, Outcome
from jobs.workflows import batch, step
from tests.tasks import add, batch_callback

WORKER = "driver"


def claim(limit: int = 100, queues: tuple[str, ...] = ("default",)) -> list[ClaimedJob]:
    """Claim due jobs as a worker with limits does: held-back jobs stay READY."""
    params = {
        "queues": list(queues),
        "limit": limit,
        "worker_id": WORKER,
        "after": "{}",
        "visit": max(limit, 16),
        "skip": 0,
        "plain_served": None,
    }
    with connection.cursor() as cursor:
        cursor.execute(queries.limits.LIMITED_CLAIM, params)
        # The last row, with no id, says where the scan of keys stopped.
        return [ClaimedJob(*row) for row in cursor.fetchall() if row[0] is not None]


def claim_one(job_id: str) -> ClaimedJob:
    """Claim due jobs until the one wanted comes; give the others back."""
    jobs = claim()
    wanted = [job for job in jobs if job.id == str(job_id)]
    give_back(*[job for job in jobs if job.id != str(job_id)])
    assert wanted, f"job {job_id} was not claimed"
    return wanted[0]


def succeeded(job: ClaimedJob, value: object = None) -> Outcome:
    """The outcome of an attempt that succeeded."""
    return outcome(job, "SUCCESSFUL", value)


def outcome(job: ClaimedJob, status: str = "SUCCESSFUL", value: object = None) -> Outcome:
    """How an attempt ended: SUCCESSFUL with value, FAILED, or READY for a retry now."""
    if status == "SUCCESSFUL":
        return Outcome(job.id, job.attempt, status, time.time(), None, json.dumps(value), None, 0.0)
    error = {
        "exception_class_path": "builtins.ValueError",
        "message": f"{job.id} failed",
        "traceback": f"ValueError: {job.id} failed",
        "attempt": job.attempt,
        "at": time.time(),
    }
    retry_at = time.time() if status == "READY" else None
    return Outcome(job.id, job.attempt, status, time.time(), retry_at, None, json.dumps(error), 0.0)


def finish(job: ClaimedJob, status: str = "SUCCESSFUL", value: object = None) -> None:
    """Write how an attempt ended, as the worker's completer does."""
    _complete(connection, [outcome(job, status, value)], {job.id} if job.has_dependants else set())


def two_and_a_callback(when: str) -> list:
    """
    A batch of two adds with a callback `on_<when>` ("success", "failure",
    "finish"): the results of the two members and of the callback.
    """
    callback = {f"on_{when}": step(batch_callback, label=when)}
    return batch([step(add, 1, 1), step(add, 2, 2)], **callback).enqueue().results


def give_back(*jobs: ClaimedJob) -> None:
    """Give claimed jobs back unstarted, as a worker that will not run them."""
    if jobs:
        outcomes = [
            Outcome(job.id, job.attempt, POSTPONED, time.time(), None, None, None, 0.0)
            for job in jobs
        ]
        _complete(connection, outcomes, set())


def age(job_id: str, seconds: float) -> None:
    """Make a finished job look as if it had finished `seconds` ago."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE jobs_job SET finished_at = finished_at - make_interval(secs => %s) "
            "WHERE id = %s",
            [seconds, str(job_id)],
        )


def limit_key(key: str) -> tuple[int, float] | None:
    """A key row's running count and tokens (refilled to now), or None when it is gone."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT running, "
            + queries.limits.TOKENS.format(row="k")
            + " FROM jobs_limit_key AS k "
            "WHERE key = %s",
            [key],
        )
        row = cursor.fetchone()
    return None if row is None else (row[0], row[1] if row[1] is not None else 0.0)
