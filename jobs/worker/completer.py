"""
The completer: holds the outcomes the executors report and writes them in
batches, on a connection of its own, in a thread, while the coordinator goes
on claiming and dealing jobs.

Writing 350 outcomes keeps Postgres busy for about 7 ms. Done inline, the
coordinator could neither claim nor hand out jobs meanwhile, and its
executors ran dry; here, psycopg waits for the server without the GIL, and
the coordinator keeps the next batch growing until this one is written
(HeldWrites). A batch the database cannot take is held and tried again with
backoff; nothing is lost.
"""

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from queue import Empty, SimpleQueue

from .connection import DATABASE_ERRORS, Backoff, first_line
from .database import QueueDatabase
from .outcome_log import log_outcomes
from .protocol import POSTPONED, SKIPPED, SNOOZED, ClaimedJob, Finished

logger = logging.getLogger("jobs.worker")

# Outcomes are written together: at once when nothing else is running (an
# idle worker reports its one job without delay), otherwise at most this many
# seconds after the first of them arrived, or when this many are held.
OUTCOME_DELAY = 0.005
OUTCOME_BATCH = 1000
# How long shutdown waits for the completer's last write.
SHUTDOWN_WRITE_TIMEOUT = 10.0


class Completer:
    """
    One batch in flight at a time: submit() hands it over, and the read end
    of a pipe (fileno(), among the coordinator's waitables) wakes the
    coordinator when collect() has its answer: the ids the fence accepted,
    or the database error that stopped the write, with the batch, so that
    nothing is lost.
    """

    def __init__(self, database: QueueDatabase, worker_id: str) -> None:
        self.db = database
        self.worker_id = worker_id
        self.in_flight: Finished | None = None
        self._requests: SimpleQueue[Finished | None] = SimpleQueue()
        self._answers: SimpleQueue[tuple[Finished, set[str] | Exception]] = SimpleQueue()
        self._reader, self._writer = os.pipe()
        os.set_blocking(self._reader, False)
        self._thread: threading.Thread | None = None

    def fileno(self) -> int:
        return self._reader

    @property
    def busy(self) -> bool:
        return self.in_flight is not None

    def start(self) -> None:
        """Start the thread; only after the first executors were forked."""
        self._thread = threading.Thread(target=self._run, name="jobs-completer", daemon=True)
        self._thread.start()

    def submit(self, finished: Finished) -> None:
        if self.in_flight is not None:
            raise RuntimeError("submit() while a batch is being written")
        self.in_flight = finished
        self._requests.put(finished)

    def collect(self) -> tuple[Finished, set[str] | Exception] | None:
        """The answer for the batch in flight, once it has come."""
        try:
            os.read(self._reader, 64)
        except BlockingIOError:
            pass
        try:
            answer = self._answers.get_nowait()
        except Empty:
            return None
        self.in_flight = None
        return answer

    def wait(self, timeout: float) -> tuple[Finished, set[str] | Exception] | None:
        """
        Block until the batch in flight is written (or failed); None when
        none is, or when the timeout passed first (then it stays in flight).
        """
        if self.in_flight is None:
            return None
        try:
            answer = self._answers.get(timeout=timeout)
        except Empty:
            return None
        self.in_flight = None
        return answer

    def stop(self) -> None:
        """End the thread and close its connection; call with no batch in flight."""
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join()
            self._thread = None
        os.close(self._reader)
        os.close(self._writer)

    def _run(self) -> None:
        while (finished := self._requests.get()) is not None:
            try:
                answer = self._write(finished)
            except BaseException as error:
                # The coordinator always gets an answer: it would wait for
                # ever for one that never comes.
                answer = error
            self._answers.put((finished, answer))
            os.write(self._writer, b"\0")
        self.db.close()

    def _write(self, finished: Finished) -> set[str] | Exception:
        try:
            if not self.db.connected:
                self.db.connect(listen=False)
            return write_outcomes(self.db, finished, self.worker_id)
        except Exception as error:
            # Whatever went wrong, the batch goes back to the coordinator,
            # which holds it and tries again (a database error) or stops.
            try:
                self.db.close()
            except Exception:
                self.db.conn = None
            return error


class HeldWrites:
    """
    The writes the coordinator owes the database, held until they are due:
    outcomes, written together by the Completer (see OUTCOME_DELAY); and
    jobs to give back, released at once on the coordinator's connection,
    fenced, so that one cancelled, or rescued and claimed elsewhere, in the
    meantime stays as it is.

    While the completer's writes fail, its batch is held again and retried
    with a backoff of its own, and claims pause (`paused`), so that outcomes
    nobody can write do not pile up.
    """

    def __init__(self, completer: "Completer", worker_id: str, hurry: Callable[[], bool]) -> None:
        self.completer = completer
        self.worker_id = worker_id
        # Whether held outcomes go at once: nothing else runs, or the worker stops.
        self._hurry = hurry
        self.outcomes: Finished = []
        self.releases: list[ClaimedJob] = []
        # The ids of released jobs that had begun (see release()).
        self.begun: set[str] = set()
        # Jobs whose task does not load here, or that snoozed, each with
        # when it is due again and, for a snooze, its entry.
        self.postponements: list[tuple[ClaimedJob, float, str | None]] = []
        self.since = 0.0
        # Set while the completer's writes fail: when it may try again.
        self.retry_at: float | None = None
        self._backoff = Backoff()

    def hold(self, finished: Finished) -> float | None:
        """
        Keep outcomes until they are written together. A job left unstarted
        on request (SKIPPED) is given back instead, and one whose task does
        not load here (POSTPONED) or that snoozed (SNOOZED) is given back due
        later. Returns the monotonic time the earliest snooze is due (no
        NOTIFY announces it: this worker claims it then), or None.
        """
        snoozed_until = None
        for job, outcome in finished:
            if outcome.status == SKIPPED:
                self.releases.append(job)
                continue
            if outcome.status == POSTPONED:
                logger.warning(
                    "Job %s: task %s does not load on worker %s (%s); READY again in %.0f s, "
                    "its attempt not spent, for a worker that has it",
                    job.id,
                    job.task_path,
                    self.worker_id,
                    outcome.error,
                    outcome.retry_at - time.time(),
                )
                self.postponements.append((job, outcome.retry_at, None))
                continue
            if outcome.status == SNOOZED:
                logger.info(
                    "Job %s %s snoozed for %.3g s (attempt %d, not spent)",
                    job.id,
                    job.task_path,
                    outcome.retry_at - outcome.finished_at,
                    job.attempt,
                )
                self.postponements.append((job, outcome.retry_at, outcome.error))
                due = time.monotonic() + max(outcome.retry_at - time.time(), 0.0)
                snoozed_until = due if snoozed_until is None else min(snoozed_until, due)
                continue
            if not self.outcomes:
                self.since = time.monotonic()
            self.outcomes.append((job, outcome))
        return snoozed_until

    def release(self, jobs: Sequence[ClaimedJob], begun: Collection[str] = ()) -> None:
        """
        Give jobs back to the queue with the next write, their attempt not
        spent; those whose ids are in `begun` had started, and keep their
        rate tokens spent.
        """
        self.releases.extend(jobs)
        self.begun.update(begun)

    @property
    def holding(self) -> bool:
        return bool(self.outcomes or self.releases or self.postponements or self.completer.busy)

    @property
    def paused(self) -> bool:
        """Whether the completer's writes fail: no claims until they are written."""
        return self.retry_at is not None

    def due_at(self) -> float:
        """
        When the held writes are due (see OUTCOME_DELAY). Outcomes wait while
        the completer writes the previous batch: the next one grows meanwhile.
        """
        if self.releases or self.postponements:
            return 0.0
        if not self.outcomes or self.completer.busy:
            return math.inf
        if self.retry_at is not None:
            return self.retry_at
        if self._hurry() or len(self.outcomes) >= OUTCOME_BATCH:
            return 0.0
        return self.since + OUTCOME_DELAY

    def write(self, db: QueueDatabase) -> None:
        """Releases on the coordinator's connection, at once; outcomes through the completer."""
        self.write_releases(db)
        if self.outcomes and not self.completer.busy:
            self.completer.submit(self.outcomes)
            self.outcomes = []

    def write_releases(self, db: QueueDatabase) -> None:
        if self.releases:
            db.release(self.releases, begun=self.begun)
            self.releases = []
            self.begun = set()
        if self.postponements:
            jobs, run_at, snoozes = zip(*self.postponements, strict=True)
            # A snoozed job ran: its rate token stays spent.
            begun = {job.id for job, _, snooze in self.postponements if snooze is not None}
            db.release(jobs, run_at, begun=begun, snoozes=snoozes)
            self.postponements = []

    def collect(self) -> float | None:
        """
        Take the completer's answer: the fence's verdicts, logged, or a batch
        to hold again. Returns the monotonic time the earliest retry written
        is due, which may be before the next claim the coordinator planned.
        """
        answer = self.completer.collect()
        if answer is None:
            return None
        finished, accepted = answer
        if isinstance(accepted, Exception):
            self.outcomes = finished + self.outcomes
            if not isinstance(accepted, DATABASE_ERRORS):
                raise accepted
            self._failed(accepted)
            return None
        if self.retry_at is not None:
            logger.info("Outcomes are written again")
        self.retry_at = None
        self._backoff.reset()
        retry_at = log_outcomes(finished, accepted)
        return None if retry_at is None else time.monotonic() + max(retry_at - time.time(), 0.0)

    def _failed(self, error: Exception) -> None:
        """The completer's connection failed; the coordinator's is left as it is."""
        if self.retry_at is None:
            logger.error(
                "Outcomes cannot be written (%s); holding %d, no claims until they are, "
                "retrying with backoff up to %.0f s",
                first_line(error),
                len(self.outcomes),
                self._backoff.maximum,
            )
        self.retry_at = time.monotonic() + self._backoff.next()

    def finish(self, db: QueueDatabase) -> None:
        """
        At shutdown: the batch the completer is writing, then the rest, on
        the coordinator's connection. A write that hangs (a connection
        dropped without a word) is given up on: the rescue puts those jobs
        back.
        """
        answer = self.completer.wait(timeout=SHUTDOWN_WRITE_TIMEOUT)
        if self.completer.busy:
            logger.error(
                "The last batch of %d outcome(s) was not written within %.0f s: the "
                "rescue will put those jobs back",
                len(self.completer.in_flight),
                SHUTDOWN_WRITE_TIMEOUT,
            )
        else:
            self.completer.stop()
        finished, accepted = answer or ([], set())
        if isinstance(accepted, Exception):
            self.outcomes = finished + self.outcomes
        else:
            log_outcomes(finished, accepted)
        if not db.connected:
            db.connect()
        self.write_releases(db)
        if self.outcomes:
            log_outcomes(
                self.outcomes,
                write_outcomes(db, self.outcomes, self.worker_id),
            )
            self.outcomes = []


def write_outcomes(db: QueueDatabase, finished: Finished, worker_id: str) -> set[str]:
    """
    Write the outcomes of finished attempts; the statements follow what
    their jobs are: under limits or not, waited for by others or not.
    """
    return db.complete(
        [outcome for _, outcome in finished],
        worker_id,
        limited=any(job.limited for job, _ in finished),
        dependants=frozenset(job.id for job, _ in finished if job.has_dependants),
    )
