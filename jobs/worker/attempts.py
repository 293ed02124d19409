"""
The retry policy: what each way an attempt can end becomes.

An attempt whose task raised is retried while attempts remain, as the task's
retry rules say (jobs.retries.RetryRules, failed_outcome); one whose task
snoozed goes back unspent (snoozed_outcome). One that the worker could not
see to its end (timed out, interrupted, cancelled, its executor crashed)
fails its attempt the same way or goes back to the queue unspent
(lost_attempts, given_back). A worker that vanished has its jobs rescued by
queries.finish.RESCUE with WORKER_LOST, and a cancelled job gets CANCELLED in
queries.finish.CANCEL. Every decision about attempts is here, so the
executor, the coordinator, the rescue and the cancel agree.
"""

import json
import time
from collections.abc import Callable

from ..exceptions import (
    MAX_DELAY,
    ExecutorDied,
    JobInterrupted,
    JobTimeout,
    WorkerLost,
    class_path,
)
from ..jsonb import storable_text
from ..options import QueueOptions
from ..retries import Retry, RetryRules
from .connection import first_line
from .executor_handle import LostWork
from .protocol import FAILED, POSTPONED, READY, SNOOZED, ClaimedJob, Finished, Outcome

# A job whose task does not load here waits a tenth of the time it has waited
# so far, within these bounds (seconds), for a worker that can load it.
MISSING_TASK_DELAY_MIN = 1.0
MISSING_TASK_DELAY_MAX = 60.0


# Passed to queries.finish.RESCUE as its error entry's class (jobs.operations.cancel
# passes JobCancelled's to queries.finish.CANCEL likewise).
WORKER_LOST = class_path(WorkerLost)


def backend_backoff(options: QueueOptions) -> Retry:
    """The backoff of tasks without their own (RETRY_BACKOFF_BASE, RETRY_BACKOFF_MAX)."""
    return Retry(base=options.retry_backoff_base, cap=min(options.retry_backoff_max, MAX_DELAY))


def exception_message(error: BaseException) -> str:
    """str(error), or a stand-in when the exception's own __str__ fails."""
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__}: str() failed>"


def error_entry(
    exception_class_path: str,
    message: str,
    traceback_text: str,
    attempt: int,
    worker_id: str,
    retry: str | None = None,
) -> str:
    """One entry of a job's errors, as JSON text; `retry` says what the attempt led to."""
    # jsonb cannot hold a NUL or a lone surrogate, and one in a message
    # would make the whole batch of outcomes fail to write.
    entry = {
        "exception_class_path": exception_class_path,
        "message": storable_text(message),
        "traceback": storable_text(traceback_text),
        "attempt": attempt,
        "worker_id": worker_id,
        "at": time.time(),
    }
    if retry is not None:
        entry["retry"] = storable_text(retry)
    return json.dumps(entry)


def failed_outcome(
    job: ClaimedJob,
    *,
    exception_class_path: str,
    message: str,
    traceback_text: str,
    worker_id: str,
    duration: float,
    retry_in: float | None,
    reason: str,
) -> Outcome:
    """
    The outcome of a failed attempt: a retry in retry_in seconds while
    attempts remain, else FAILED. None: FAILED now, for `reason`.
    """
    now = time.time()
    retry_at = None
    status = FAILED
    if retry_in is None:
        note = reason
    elif job.attempt < job.max_attempts:
        status = READY
        retry_at = now + retry_in
        note = f"next attempt in {retry_in:.3g} s: {reason}"
    else:
        note = f"not retried: {job.attempt} of {job.max_attempts} attempts spent"
    return Outcome(
        job.id,
        job.attempt,
        status,
        now,
        retry_at,
        None,
        error_entry(
            exception_class_path, message, traceback_text, job.attempt, worker_id, retry=note
        ),
        duration,
    )


def postponed_outcome(job: ClaimedJob, waited: float, reason: str) -> Outcome:
    """
    A job whose task does not load here, due again a tenth of the time it has
    waited (see MISSING_TASK_DELAY_MIN), its attempt not spent.
    """
    now = time.time()
    delay = min(MISSING_TASK_DELAY_MAX, max(MISSING_TASK_DELAY_MIN, waited / 10))
    return Outcome(job.id, job.attempt, POSTPONED, now, now + delay, None, reason, 0.0)


def snoozed_outcome(job: ClaimedJob, seconds: float, duration: float) -> Outcome:
    """
    A job whose task asked to run again in `seconds` (jobs.exceptions.Snooze):
    given back due then, its attempt not spent, with an entry for its snoozes.
    """
    now = time.time()
    entry = json.dumps({"at": now, "seconds": seconds, "attempt": job.attempt})
    return Outcome(job.id, job.attempt, SNOOZED, now, now + seconds, None, entry, duration)


def refused_outcome(outcome: Outcome, error: Exception, worker_id: str) -> Outcome:
    """
    What an outcome that Postgres refused to store becomes: its attempt
    fails, for good, with Postgres's reason (a retry would be refused again).
    """
    message = f"Postgres refused to store this attempt's outcome: {first_line(error)}"
    entry = error_entry(class_path(type(error)), message, message, outcome.attempt, worker_id)
    return Outcome(
        outcome.id,
        outcome.attempt,
        FAILED,
        outcome.finished_at,
        None,
        None,
        entry,
        outcome.duration,
    )


def lost_attempts(
    work: LostWork,
    *,
    worker_id: str,
    rules: Callable[[ClaimedJob], RetryRules],
    timed_out: set[str] | frozenset[str] = frozenset(),
    cancelled: str | None = None,
) -> tuple[Finished, list[ClaimedJob]]:
    """
    What the jobs of a dead or killed executor become: (the outcomes, the
    outcomes it sent before it went among them; the jobs to give back).

    An executor is killed whole: when one of its threads runs past its
    timeout or is cancelled, the jobs running beside it are interrupted
    too, and fail their attempt like the jobs of an executor that died.
    Jobs that had finished but whose outcome was lost with the process go
    back to the queue when the coordinator killed it (they caused
    nothing), and fail their attempt when it died on its own (any of them
    may be why). A cancelled job has its outcome written already, by the
    cancel. Jobs it never began go back, their attempt not spent. A failed
    attempt is retried as the task's rules say for the exception named
    (`dont_retry_on=[JobTimeout]` fails a job that timed out for good).
    """
    released = list(work.unstarted)
    finished = list(work.finished)
    lost = [(job, running_for, True) for job, running_for in work.running]
    if work.died:
        lost += [(job, 0.0, False) for job in work.unreported]
    else:
        released += work.unreported
    for job, running_for, was_running in lost:
        if job.id == cancelled:
            continue
        exception, message = _why_lost(job, running_for, was_running, work, timed_out, cancelled)
        retry_in, reason = rules(job).after(exception(message), job.attempt)
        outcome = failed_outcome(
            job,
            exception_class_path=class_path(exception),
            message=message,
            traceback_text=message,
            worker_id=worker_id,
            duration=running_for,
            retry_in=retry_in,
            reason=reason,
        )
        finished.append((job, outcome))
    return finished, released


def _why_lost(
    job: ClaimedJob,
    running_for: float,
    was_running: bool,
    work: LostWork,
    timed_out: set[str] | frozenset[str],
    cancelled: str | None,
) -> tuple[type[Exception], str]:
    if job.id in timed_out:
        return JobTimeout, f"Timed out after {running_for:.1f} s"
    if timed_out or cancelled:
        cause = (
            f"job {cancelled} was cancelled"
            if cancelled
            else f"job {', '.join(sorted(timed_out))} timed out"
        )
        return (
            JobInterrupted,
            f"Interrupted after {running_for:.1f} s: {cause} in the same executor",
        )
    return ExecutorDied, f"The executor process died (exit code {work.exitcode}) " + (
        "while running the job"
        if was_running
        else "after the job began; its outcome was lost with it"
    )


def given_back(work: LostWork) -> tuple[Finished, list[ClaimedJob]]:
    """
    What the jobs of an executor stopped at shutdown become: the outcomes it
    sent stand; every job it had not answered goes back, its attempt not
    spent (the worker, not the job, ended it).
    """
    released = [job for job, _ in work.running] + work.unreported + work.unstarted
    return list(work.finished), released
