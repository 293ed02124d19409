"""
The log line of each attempt, once its outcome is written.

Logged after the write, not when the executor reports it: only then is it
known whether the fence accepted the outcome, or discarded it because the
job was cancelled, or rescued and re-run elsewhere.
"""

import json
import logging

from .protocol import READY, SUCCESSFUL, Finished, Outcome

logger = logging.getLogger("jobs.worker")


def error_summary(outcome: Outcome) -> str:
    """The exception and the first line of its message, from a failed outcome's error entry."""
    error = json.loads(outcome.error or "{}")
    message = (error.get("message") or "").strip()
    first = message.splitlines()[0] if message else ""
    return f"{error.get('exception_class_path', 'unknown error')}: {first}".rstrip(": ")


def log_outcomes(finished: Finished, accepted: set[str]) -> float | None:
    """
    Log each written attempt: discarded, SUCCESSFUL, retried (a warning) or
    FAILED (an error). Returns when the earliest accepted retry is due
    (epoch seconds), or None.
    """
    retry_times = [
        outcome.retry_at
        for _, outcome in finished
        if outcome.retry_at is not None and outcome.id in accepted
    ]
    log_each = logger.isEnabledFor(logging.INFO)
    for job, outcome in finished:
        if outcome.id not in accepted:
            logger.warning(
                "Job %s attempt %d: result discarded, the job was cancelled, or rescued "
                "and re-run while this worker was unreachable",
                outcome.id,
                outcome.attempt,
            )
        elif outcome.status == SUCCESSFUL:
            if log_each:
                logger.info(
                    "Job %s %s SUCCESSFUL in %.1f ms (attempt %d of %d)",
                    outcome.id,
                    job.task_path,
                    outcome.duration * 1000,
                    outcome.attempt,
                    job.max_attempts,
                )
        else:
            # A retried attempt is a warning, the last failure an error.
            retried = outcome.status == READY
            logger.log(
                logging.WARNING if retried else logging.ERROR,
                "Job %s %s %s in %.1f ms (attempt %d of %d): %s%s",
                outcome.id,
                job.task_path,
                "failed" if retried else "FAILED",
                outcome.duration * 1000,
                outcome.attempt,
                job.max_attempts,
                error_summary(outcome),
                f"; retry in {outcome.retry_at - outcome.finished_at:.1f} s" if retried else "",
            )
    return min(retry_times, default=None)
