"""
How a unique key holds beyond "one live job per key", the default (READY or
RUNNING, kept by the partial unique index jobs_job_unique_key_live):

    send_digest.using(unique_key=f"digest:{user.id}", unique_for=3600).enqueue(user.id)
    build_report.using(unique_key=key, unique_states=["READY", "RUNNING", "SUCCESSFUL"])
    reindex.using(unique_key=f"reindex:{page.id}", replace=True, countdown=2).enqueue(page.id)

`unique_for` (seconds): no second job with the key is enqueued within that
time of the last one's enqueue, whatever its status (or of `unique_states`,
when given). `unique_states` alone: none while a job with the key is in one of
them. Either returns the existing job instead. `replace`: a new enqueue with
the key of a job that has not started (READY, no attempt spent, never
snoozed) replaces its arguments and when it is due (debounce: "reindex 2 s
after the last edit"); a RUNNING one, or one waiting for its retry, is left
alone and returned.

A key is held by the jobs in the table: one that prune, purge or a delete
removed holds nothing any more, so a period or a finished status holds at
most as long as that status's retention. The enqueues of a key serialize on
its lock and read what the last one committed: in a caller's transaction
that is READ COMMITTED, Django's default (a REPEATABLE READ one reads its
snapshot, taken before the lock).
"""

from typing import Any

from django.tasks.exceptions import InvalidTask

from . import queries
from .models import JobStatus

STATES = tuple(JobStatus.values)


def check_uniqueness(task: object) -> None:
    """The uniqueness options of a task or an enqueue, or an InvalidTask saying what is wrong."""
    unique_for = getattr(task, "unique_for", None)
    unique_states = getattr(task, "unique_states", None)
    replace = getattr(task, "replace", False)
    given = [
        name
        for name, value in (
            ("unique_for", unique_for),
            ("unique_states", unique_states),
            ("replace", replace or None),
        )
        if value is not None
    ]
    if given and getattr(task, "unique_key", None) is None:
        raise InvalidTask(f"{', '.join(given)} goes with a unique_key, which this enqueue has not.")
    if unique_for is not None and (
        isinstance(unique_for, bool) or not isinstance(unique_for, int | float) or unique_for <= 0
    ):
        raise InvalidTask("unique_for is a positive number of seconds.")
    if unique_states is not None and (
        isinstance(unique_states, str) or not unique_states or not set(unique_states) <= set(STATES)
    ):
        raise InvalidTask(f"unique_states is a list of statuses among {', '.join(STATES)}.")
    if not isinstance(replace, bool):
        raise InvalidTask("replace is True or False.")
    if replace and (unique_for is not None or unique_states is not None):
        raise InvalidTask(
            "replace works on the key's job that has not started: it goes with a unique_key "
            "alone, not with unique_for or unique_states."
        )


def held_over_time(task: object) -> bool:
    """Whether the key holds by time or by states, beyond the live job the index keeps."""
    return getattr(task, "unique_for", None) is not None or (
        getattr(task, "unique_states", None) is not None
    )


def replace_unstarted(cursor: Any, params: dict[str, Any], limited: bool) -> str | None:
    """The id of the key's unstarted job, given this enqueue's call; None: there is none."""
    statement = (
        queries.enqueue.REPLACE_UNSTARTED_LIMITED if limited else queries.enqueue.REPLACE_UNSTARTED
    )
    cursor.execute(statement, params)
    row = cursor.fetchone()
    return None if row is None else row[0]


def existing_job(cursor: Any, task: Any) -> str | None:
    """
    The id of the job that the key of this enqueue is held by, or None: then
    the caller inserts its job in the same transaction.

    The advisory lock on the key, held until the caller's transaction ends,
    makes every enqueue of one key through here wait for the one before it
    to commit or roll back: each reads the jobs as the last one left them,
    so two enqueues can never both find the key free (the read alone could).
    """
    cursor.execute(queries.enqueue.LOCK_UNIQUE_KEY, {"key": task.unique_key})
    cursor.execute(
        queries.enqueue.JOB_HOLDING_UNIQUE_KEY,
        {
            "key": task.unique_key,
            "states": list(task.unique_states or STATES),
            "period": task.unique_for,
        },
    )
    row = cursor.fetchone()
    return None if row is None else row[0]
