"""
What travels between the coordinator and its executors, and to and from SQL.

A claimed job is a row of queries.claim.CLAIM, field for field: its RETURNING names
each column as the field it fills (tests/worker/test_worker_parts.py checks that).
An outcome's leading fields are the JSON positions that queries.finish.COMPLETE reads.
Both cross the pipe as plain tuples with their JSON still as text: decoding
and encoding happen in the executors, so the coordinator (one process for the
whole pool) does as little per job as possible.

The pipe carries ("run", [ClaimedJob tuples]) and ("skip", (job id, attempt))
to an executor, None to end it, and lists of Outcome tuples back.
"""

import json
import pickle
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

# Outcome.status: the jobs.models.JobStatus value that COMPLETE writes, as a
# plain string (cheaper to pickle than the enum member, and this module is
# imported by a spawned executor before Django, and so the models, is set
# up), or one of three that are not job statuses: the coordinator gives a
# SKIPPED, POSTPONED or SNOOZED job back instead. tests/worker/test_worker_parts.py checks
# that the first three are JobStatus values.
SUCCESSFUL = "SUCCESSFUL"
FAILED = "FAILED"
READY = "READY"
SKIPPED = "SKIPPED"
POSTPONED = "POSTPONED"
SNOOZED = "SNOOZED"


def send_message(conn: Connection, message: object) -> None:
    """
    Send one message over a coordinator-executor pipe.

    pickle.dumps in C, then the bytes: Connection.send() builds a Python-level
    ForkingPickler for every message, which cost more than the no-op job
    it carried. The messages are tuples of plain values and never need its
    reducers.
    """
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def receive_message(conn: Connection) -> Any:
    return pickle.loads(conn.recv_bytes())


class ClaimedJob(NamedTuple):
    """One claimed attempt, as CLAIM returns it (JSON as text, times as epoch seconds)."""

    id: str
    backend: str
    task_path: str
    queue: str
    priority: int
    run_at: float
    args: str
    kwargs: str
    attempt: int
    max_attempts: int
    timeout: float | None
    enqueued_at: float
    started_at: float
    last_attempted_at: float
    worker_ids: list[str]
    errors: str
    run_after: float | None
    trace_context: str | None  # JSON text; see jobs.tracing
    # Under a limit (jobs.limits): its end must free its slots (COMPLETE_LIMITED).
    limited: bool
    # Jobs of a workflow wait for it: its outcome moves them (ADVANCE_WORKFLOWS).
    has_dependants: bool


class Outcome(NamedTuple):
    """
    How one attempt ended. The first COMPLETE_FIELDS fields are COMPLETE's
    columns, in its order: the coordinator sends them as they are.
    """

    id: str
    attempt: int
    # SUCCESSFUL, FAILED, READY for a retry, SKIPPED for a job the
    # coordinator withdrew before it started (cancelled, rescued, or shutting
    # down), POSTPONED for one whose task does not load here, or SNOOZED for
    # one whose task asked to run later: the coordinator gives the last three
    # back with a fenced release, their attempt not spent, a POSTPONED or
    # SNOOZED one due at retry_at.
    status: str
    finished_at: float  # epoch seconds
    retry_at: float | None  # epoch seconds, for status READY, POSTPONED and SNOOZED
    return_value: str | None  # JSON text
    # JSON text of one errors entry; POSTPONED: why, as plain text; SNOOZED:
    # the entry of the job's snoozes, as JSON text.
    error: str | None
    duration: float  # seconds the attempt ran


# Outcome's fields up to `duration`: what queries.finish.COMPLETE reads from each entry.
COMPLETE_FIELDS = Outcome._fields.index("duration")

# A finished attempt with the job it ran, as the coordinator keeps them.
Finished = list[tuple[ClaimedJob, Outcome]]


def complete_batch(outcomes: Sequence[Outcome]) -> str:
    """
    COMPLETE's `outcomes` parameter: one JSON array, an array per outcome, in
    id order. COMPLETE locks the rows in the order of the array, and a cancel
    of several jobs locks them in id order: in the same order, the two wait
    for each other and never deadlock.
    """
    return json.dumps([outcome[:COMPLETE_FIELDS] for outcome in sorted(outcomes, key=_by_id)])


def _by_id(outcome: Outcome) -> str:
    return outcome.id


def skipped(job: ClaimedJob, now: float) -> Outcome:
    """The answer for a job withdrawn before it started."""
    return Outcome(job.id, job.attempt, SKIPPED, now, None, None, None, 0.0)
