"""
The completer: writes batches of outcomes on a connection of its own, in a
thread, while the coordinator goes on claiming and dealing jobs.

Writing 350 outcomes keeps Postgres busy for about 7 ms. Done inline, the
coordinator could neither claim nor hand out jobs meanwhile, and its
executors ran dry; here, psycopg waits for the server without the GIL, and
the coordinator keeps the next batch growing until this one is written.
"""

import logging
import os
import threading
from collections.abc import Sequence
from queue import Empty, SimpleQueue

import psycopg

from .database import QueueDatabase
from .executor import ClaimedJob, Outcome, error_entry

logger = logging.getLogger("jobs.worker")

Finished = list[tuple[ClaimedJob, Outcome]]

# Errors of a statement that Postgres refused for what one of its rows holds,
# not for the connection: the rows are written apart to find that one.
REFUSED_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


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
                answer = self._write([outcome for _, outcome in finished])
            except BaseException as error:
                # The coordinator always gets an answer: it would wait for
                # ever for one that never comes.
                answer = error
            self._answers.put((finished, answer))
            os.write(self._writer, b"\0")
        self.db.close()

    def _write(self, outcomes: Sequence[Outcome]) -> set[str] | Exception:
        try:
            if not self.db.connected:
                self.db.connect(listen=False)
            return self._complete_isolating(outcomes)
        except Exception as error:
            # Whatever went wrong, the batch goes back to the coordinator,
            # which holds it and tries again (a database error) or stops.
            try:
                self.db.close()
            except Exception:
                self.db.conn = None
            return error

    def _complete_isolating(self, outcomes: Sequence[Outcome]) -> set[str]:
        """
        Write the outcomes; when Postgres refuses the batch for what a row
        holds, write each half apart, down to the row it refuses, whose
        attempt fails with Postgres's reason instead. So one outcome that
        cannot be stored never takes the others, or the worker, with it.
        Each statement is its own transaction (autocommit): a refused one
        wrote nothing, and the fence keeps a retried row from being written
        twice.
        """
        try:
            return self.db.complete(outcomes)
        except REFUSED_ROW_ERRORS as error:
            if len(outcomes) > 1:
                middle = len(outcomes) // 2
                return self._complete_isolating(outcomes[:middle]) | self._complete_isolating(
                    outcomes[middle:]
                )
            [refused] = outcomes
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            logger.error(
                "Job %s attempt %d: Postgres refused to store its outcome (%s); failing the "
                "attempt instead",
                refused.id,
                refused.attempt,
                reason,
            )
            message = f"Postgres refused to store this attempt's outcome: {reason}"
            cls = type(error)
            return self.db.complete(
                [
                    Outcome(
                        refused.id,
                        refused.attempt,
                        "FAILED",
                        refused.finished_at,
                        None,
                        None,
                        error_entry(
                            f"{cls.__module__}.{cls.__qualname__}",
                            message,
                            message,
                            refused.attempt,
                            self.worker_id,
                        ),
                        refused.duration,
                    )
                ]
            )
