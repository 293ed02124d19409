"""
Exceptions of the queue, all JobsError.

The queue records the first five as a failed or cancelled attempt's exception
class when the attempt ended without the task raising anything itself: they
are never raised, only named in a job's errors by class_path(), and that path
is what TaskError.exception_class imports back. Moving or renaming one would
orphan the entries already stored.
"""

# The longest delay a retry or a snooze may ask for, in seconds (a year): a
# due time must stay within what Postgres's timestamps hold.
MAX_DELAY = 366 * 24 * 3600.0


def class_path(cls: type[BaseException]) -> str:
    """The dotted path by which a job's errors entry names an exception class."""
    return f"{cls.__module__}.{cls.__qualname__}"


class JobsError(Exception):
    """Base of the queue's exceptions: `except JobsError` catches every one of them."""


class JobTimeout(JobsError):
    """The attempt ran past its timeout; its executor process was killed."""


class ExecutorDied(JobsError):
    """The executor process running the attempt exited (a crash, os._exit, the OOM killer)."""


class JobInterrupted(JobsError):
    """
    The attempt ran in an executor with threads that was killed because
    another of its jobs timed out or was cancelled.
    """


class WorkerLost(JobsError):
    """The worker running the attempt stopped heartbeating; the job was rescued."""


class JobCancelled(JobsError):
    """The job was cancelled before it finished."""


class WorkerCannotStart(JobsError):
    """The database answers but cannot hold a worker (its tables are missing); says what to do."""


class JobStateError(JobsError):
    """The job is not in a state that allows the operation (retry a READY job, say)."""


class RetryJob(JobsError):
    """
    Raised by a task to ask for another attempt, after `countdown` seconds if
    given (else the backoff's delay). Attempts are still counted: once
    max_attempts is spent the job ends FAILED.
    """

    def __init__(self, message: str = "Retry requested", *, countdown: float | None = None) -> None:
        if countdown is not None and not (0 <= countdown <= MAX_DELAY):
            raise ValueError(
                f"countdown must be a number of seconds, from 0 to {MAX_DELAY:g} (a year); "
                f"got {countdown!r}"
            )
        super().__init__(message)
        self.countdown = countdown


class Snooze(JobsError):
    """
    Raised by a task to run again in `seconds`, its attempt not spent: "the
    provider says come back in 30 s" is not a failure. A job snoozes at most
    max_snoozes times (the task's, else the backend's MAX_SNOOZES); one more
    fails it.
    """

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError(f"Snooze takes a number of seconds; got {seconds!r}")
        if not 0 <= seconds <= MAX_DELAY:
            raise ValueError(
                f"Snooze takes a number of seconds, from 0 to {MAX_DELAY:g} (a year); "
                f"got {seconds!r}"
            )
        super().__init__(f"Snoozed for {seconds:g} s")
        self.seconds = float(seconds)


class DoNotRetry(JobsError):
    """Raised by a task to fail the job now, whether attempts are left or not."""
