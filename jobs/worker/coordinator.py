"""
The coordinator: one process per `runworker` that owns the database side of work.

It claims due jobs in one statement, hands them to its executor processes,
has their outcomes written back in batches (by its completer thread, on a
second connection), and sleeps on LISTEN/NOTIFY, the next run_at, or a slow
poll, whichever comes first. Executors never touch the queue's tables; only
the coordinator does.

When the database goes away the executors go on; the coordinator holds the
outcomes they produce, reconnects with capped backoff, and writes them when
the database is back. The fence of every write makes that safe even when the
jobs were rescued in the meantime.
"""

import json
import logging
import math
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import wait

import psycopg
from django.tasks import task_backends

from ..stop_signals import StopSignals
from .completer import Completer
from .database import QueueDatabase, describe
from .executor import ClaimedJob, Outcome, RetryPolicy, failed_outcome
from .pool import ExecutorPool, LostWork

logger = logging.getLogger("jobs.worker")

DATABASE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
RECONNECT_DELAY_MIN = 0.5
RECONNECT_BACKOFF_MAX = 10.0
# A worker waiting for the database at start tries at least this often, so
# that it starts within seconds of the database answering.
START_BACKOFF_MAX = 2.0
# How long shutdown waits for the completer's last write.
SHUTDOWN_WRITE_TIMEOUT = 10.0
PRUNE_BATCH_SIZE = 500
# Outcomes are written together: at once when nothing else is running (an
# idle worker reports its one job without delay), otherwise at most this many
# seconds after the first of them arrived, or when this many are held.
OUTCOME_DELAY = 0.005
OUTCOME_BATCH = 1000
# A second stop signal within this many seconds of the first is the same request.
REPEATED_SIGNAL_WINDOW = 1.0


@dataclass(frozen=True)
class WorkerConfig:
    queues: tuple[str, ...]  # empty: every queue
    concurrency: int
    prefetch: int | None = None  # None: adaptive
    threads: int = 1  # per executor process
    backend: str = "default"
    shutdown_timeout: float = 30.0
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None  # bytes of resident memory


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def error_summary(outcome: Outcome) -> str:
    """The exception and the first line of its message, from a failed outcome's error entry."""
    error = json.loads(outcome.error or "{}")
    message = (error.get("message") or "").strip()
    first = message.splitlines()[0] if message else ""
    return f"{error.get('exception_class_path', 'unknown error')}: {first}".rstrip(": ")


class Coordinator:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.backend = task_backends[config.backend]
        options = self.backend.config
        self.poll_interval = options["POLL_INTERVAL"]
        self.heartbeat_interval = options["HEARTBEAT_INTERVAL"]
        self.dead_after = options["WORKER_DEAD_AFTER"]
        self.retention = [
            (("SUCCESSFUL",), options["RETAIN_SUCCESSFUL"]),
            (("FAILED", "CANCELLED"), options["RETAIN_FAILED"]),
        ]
        self.retry = RetryPolicy(options["RETRY_BACKOFF_BASE"], options["RETRY_BACKOFF_MAX"])
        self.hostname = socket.gethostname()
        self.worker_id = f"{self.hostname[:40]}-{os.getpid()}-{secrets.token_hex(3)}"
        self.db = QueueDatabase(
            self.backend.database,
            config.queues,
            prepared_statements=options["PREPARED_STATEMENTS"],
        )
        self.pool = ExecutorPool(
            config.concurrency,
            config.prefetch,
            self.worker_id,
            threads=config.threads,
            max_tasks_per_child=config.max_tasks_per_child,
            max_memory_per_child=config.max_memory_per_child,
        )
        self.stopping = False
        self.unstarted_skipped = False
        self.analyze_refused = False
        self.stop_requested_at = 0.0
        self.stop_deadline = 0.0
        self.claim_due_at = 0.0
        self.next_heartbeat_at = 0.0
        # Writes the database could not take yet, kept until it is back.
        self.held_outcomes: list[tuple[ClaimedJob, Outcome]] = []
        self.held_releases: list[ClaimedJob] = []
        # Jobs whose task does not load here, each with when it is due again.
        self.held_postponements: list[tuple[ClaimedJob, float]] = []
        self.held_since = 0.0
        self.disconnected_since: float | None = None
        self.reconnect_at = 0.0
        self.reconnect_delay = RECONNECT_DELAY_MIN
        # Set while the completer's writes fail: when it may try again.
        self.completer_retry_at: float | None = None
        self.completer_delay = RECONNECT_DELAY_MIN
        self.stop_now = False
        self.stop_signals = StopSignals()
        self.completer = Completer(
            QueueDatabase(
                self.backend.database,
                config.queues,
                prepared_statements=options["PREPARED_STATEMENTS"],
            ),
            self.worker_id,
        )

    def run(self) -> None:
        # The pool first: its executors may be forked only while nothing is
        # open and no other thread runs.
        self.pool.start()
        self.completer.start()
        self.stop_signals.install(self._on_stop_signal)
        if not self._connect_at_start():
            # Nothing was claimed: there is nothing to give back.
            self.pool.stop()
            self.completer.stop()
            logger.info("Worker %s stopped before the database answered", self.worker_id)
            return
        self._register()
        self._analyze_if_never_analyzed()
        logger.info(
            "Worker %s started: queues %s, concurrency %d (processes) x %d thread(s), "
            "prefetch %s, database %s",
            self.worker_id,
            ",".join(self.config.queues) or "every queue",
            self.config.concurrency,
            self.config.threads,
            self.config.prefetch or "adaptive",
            describe(self.backend.database),
        )
        try:
            while not (self.stopping and self.pool.idle() and not self._holding()):
                self._step()
                if self.stop_now or (self.stopping and time.monotonic() >= self.stop_deadline):
                    break
        finally:
            self._shut_down()

    def _connect_at_start(self) -> bool:
        """
        Connect, waiting for the database as long as it takes: a worker
        started before Postgres (a host's boot, a compose file, honcho) starts
        working once it answers instead of exiting. False when a stop signal
        came first.
        """
        delay = RECONNECT_DELAY_MIN
        while True:
            try:
                self.db.connect()
                return True
            except DATABASE_ERRORS as error:
                if delay == RECONNECT_DELAY_MIN:
                    logger.warning(
                        "Database %s unreachable (%s); waiting for it, trying again every "
                        "%.0f s at most",
                        describe(self.backend.database),
                        first_line(error),
                        START_BACKOFF_MAX,
                    )
                self.db.close()
            ready = wait([self.stop_signals.reader], timeout=delay)
            self.stop_signals.drain(ready)
            if self.stopping:
                return False
            delay = min(delay * 2, START_BACKOFF_MAX)

    # The loop.

    def _step(self) -> None:
        if self.stopping and not self.unstarted_skipped:
            # Stopping means starting nothing new: what was claimed but not
            # begun goes back to the queue now, for another worker.
            skipped = self.pool.skip_unstarted()
            self.unstarted_skipped = True
            if skipped:
                logger.info("Giving back %d claimed job(s) that had not started", skipped)
        if (
            self.db.connected
            and not self.stopping
            and self.completer_retry_at is None
            and self.pool.claim_size() > 0
            and time.monotonic() >= self.claim_due_at
        ):
            self._with_database(self._claim)

        waitables = [*self.pool.connections(), self.stop_signals.reader, self.completer]
        if self.db.connected:
            waitables.append(self.db.conn)
        ready = wait(waitables, timeout=self._wait_timeout())
        self.stop_signals.drain(ready)
        if self.completer in ready:
            self._written(self.completer.collect())

        finished, lost = self.pool.receive(ready)
        self._hold(finished)
        for work in lost:
            self._hold(self._fail_lost(work))
        for executor, late in self.pool.overdue():
            work = self.pool.replace(executor)
            self._hold(self._fail_lost(work, timed_out={job.id for job in late}))
        self.pool.recycle()

        if not self.db.connected:
            self._reconnect()
        # Each operation may lose the connection: look again before the next.
        if self.db.connected and time.monotonic() >= self._write_due_at():
            self._with_database(self._write_held)
        if self.db.connected:
            self._with_database(self._read_notifications)
        if self.db.connected and time.monotonic() >= self.next_heartbeat_at:
            self._with_database(self._heartbeat)

    def _with_database(self, operation) -> None:
        try:
            operation()
        except DATABASE_ERRORS as error:
            self._lost_database(error)

    def _wait_timeout(self) -> float:
        now = time.monotonic()
        if self.db.connected:
            deadlines = [self.next_heartbeat_at]
            if self._holding():
                deadlines.append(self._write_due_at())
            if not self.stopping and self.completer_retry_at is None and self.pool.claim_size() > 0:
                deadlines.append(self.claim_due_at)
        else:
            # Heartbeats and claims wait for the connection: their deadlines,
            # long past, would make this loop spin through the outage.
            deadlines = [self.reconnect_at]
        if self.stopping:
            deadlines.append(self.stop_deadline)
        timeout_at = self.pool.next_deadline()
        if timeout_at is not None:
            deadlines.append(timeout_at)
        return max(0.0, min(deadlines) - now)

    # Claiming.

    def _claim(self) -> None:
        limit = self.pool.free_slots
        jobs = self.db.claim(self.worker_id, limit)
        if jobs:
            self.pool.dispatch(jobs)
        if len(jobs) == limit:
            # A full claim: there may be more due jobs; claim again as soon as
            # slots free up.
            self.claim_due_at = 0.0
            return
        seconds = self.db.seconds_until_next_due()
        wait_for = self.poll_interval
        if seconds is not None:
            wait_for = min(wait_for, max(seconds, 0.0))
        self.claim_due_at = time.monotonic() + wait_for

    def _read_notifications(self) -> None:
        wake, cancelled = self.db.notifications()
        if wake:
            self.claim_due_at = 0.0
        for job_id in cancelled:
            self._stop_cancelled(job_id)

    def _stop_cancelled(self, job_id: str) -> None:
        located = self.pool.locate(job_id)
        if located is None:
            return
        executor, job, running = located
        if running:
            logger.info("Job %s cancelled while running: stopping its executor", job_id)
            # The cancel already wrote CANCELLED; the other jobs go back or fail
            # as for any executor the coordinator killed.
            self._hold(self._fail_lost(self.pool.replace(executor), cancelled=job_id))
        else:
            self.pool.skip(executor, job)

    # Writing outcomes.

    def _hold(self, finished: list[tuple[ClaimedJob, Outcome]]) -> None:
        """
        Keep outcomes until they are written together (see OUTCOME_DELAY).

        A job left unstarted on request (SKIPPED) is given back instead, and
        one whose task does not load here (POSTPONED) is given back due later.
        The release is fenced, so one that was cancelled, or rescued and
        claimed elsewhere, in the meantime stays as it is.
        """
        for job, outcome in finished:
            if outcome.status == "SKIPPED":
                self.held_releases.append(job)
                continue
            if outcome.status == "POSTPONED":
                logger.warning(
                    "Job %s: task %s does not load on worker %s (%s); READY again in %.0f s, "
                    "its attempt not spent, for a worker that has it",
                    job.id,
                    job.task_path,
                    self.worker_id,
                    outcome.error,
                    outcome.retry_at - time.time(),
                )
                self.held_postponements.append((job, outcome.retry_at))
                continue
            if not self.held_outcomes:
                self.held_since = time.monotonic()
            self.held_outcomes.append((job, outcome))

    def _holding(self) -> bool:
        return bool(
            self.held_outcomes
            or self.held_releases
            or self.held_postponements
            or self.completer.busy
        )

    def _write_due_at(self) -> float:
        """
        When the held writes are due (see OUTCOME_DELAY). Outcomes wait while
        the completer writes the previous batch: the next one grows meanwhile.
        """
        if self.held_releases or self.held_postponements:
            return 0.0
        if not self.held_outcomes or self.completer.busy:
            return math.inf
        if self.completer_retry_at is not None:
            return self.completer_retry_at
        if self.stopping or self.pool.idle() or len(self.held_outcomes) >= OUTCOME_BATCH:
            return 0.0
        return self.held_since + OUTCOME_DELAY

    def _write_held(self) -> None:
        """Releases on this connection, at once; outcomes through the completer."""
        self._write_releases()
        if self.held_outcomes and not self.completer.busy:
            self.completer.submit(self.held_outcomes)
            self.held_outcomes = []

    def _write_releases(self) -> None:
        if self.held_releases:
            self.db.release(self.held_releases)
            self.held_releases = []
        if self.held_postponements:
            jobs, run_at = zip(*self.held_postponements, strict=True)
            self.db.release(jobs, run_at)
            self.held_postponements = []

    def _written(
        self, answer: tuple[list[tuple[ClaimedJob, Outcome]], set[str] | Exception] | None
    ) -> None:
        """Take the completer's answer: the fence's verdicts, or a batch to hold again."""
        if answer is None:
            return
        finished, accepted = answer
        if isinstance(accepted, Exception):
            self.held_outcomes = finished + self.held_outcomes
            if not isinstance(accepted, DATABASE_ERRORS):
                raise accepted
            self._completer_failed(accepted)
            return
        if self.completer_retry_at is not None:
            logger.info("Outcomes are written again")
        self.completer_retry_at = None
        self.completer_delay = RECONNECT_DELAY_MIN
        self._report(finished, accepted)

    def _completer_failed(self, error: Exception) -> None:
        """
        The completer's connection failed: hold its batch and try again with
        a backoff of its own. Claims pause meanwhile, so that outcomes nobody
        can write do not pile up; the main connection is left as it is (it
        reconnects on its own errors).
        """
        if self.completer_retry_at is None:
            logger.error(
                "Outcomes cannot be written (%s); holding %d, no claims until they are, "
                "retrying with backoff up to %.0f s",
                first_line(error),
                len(self.held_outcomes),
                RECONNECT_BACKOFF_MAX,
            )
        self.completer_retry_at = time.monotonic() + self.completer_delay
        self.completer_delay = min(self.completer_delay * 2, RECONNECT_BACKOFF_MAX)

    def _report(self, finished: list[tuple[ClaimedJob, Outcome]], accepted: set[str]) -> None:
        outcomes = [outcome for _, outcome in finished]
        retry_times = [o.retry_at for o in outcomes if o.retry_at is not None and o.id in accepted]
        if retry_times:
            # A retry may be due before the next claim we had planned.
            retry_in = min(retry_times) - time.time()
            self.claim_due_at = min(self.claim_due_at, time.monotonic() + max(retry_in, 0.0))
        log_each = logger.isEnabledFor(logging.INFO)
        for job, outcome in finished:
            if outcome.id not in accepted:
                logger.warning(
                    "Job %s attempt %d: result discarded, the job was cancelled, or rescued "
                    "and re-run while this worker was unreachable",
                    outcome.id,
                    outcome.attempt,
                )
            elif outcome.status == "SUCCESSFUL":
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
                retried = outcome.status == "READY"
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

    def _fail_lost(
        self,
        work: LostWork,
        *,
        timed_out: set[str] | frozenset[str] = frozenset(),
        cancelled: str | None = None,
    ) -> list[tuple[ClaimedJob, Outcome]]:
        """
        Fail the attempts a dead or killed executor was running; give back the rest.

        An executor is killed whole: when one of its threads runs past its
        timeout or is cancelled, the jobs running beside it are interrupted
        too, and fail their attempt like the jobs of an executor that died.
        Jobs that had finished but whose outcome was lost with the process go
        back to the queue when the coordinator killed it (they caused
        nothing), and fail their attempt when it died on its own (any of them
        may be why). Each failed attempt is logged with the others, once its
        outcome is written (see _report).
        """
        self.held_releases.extend(work.unstarted)
        finished = list(work.finished)
        lost = [(job, running_for, True) for job, running_for in work.running]
        if work.died:
            lost += [(job, 0.0, False) for job in work.unreported]
        else:
            self.held_releases.extend(work.unreported)
        for job, running_for, was_running in lost:
            if job.id == cancelled:
                continue
            if job.id in timed_out:
                path, message = "jobs.exceptions.JobTimeout", f"Timed out after {running_for:.1f} s"
            elif timed_out or cancelled:
                cause = (
                    f"job {cancelled} was cancelled"
                    if cancelled
                    else f"job {', '.join(sorted(timed_out))} timed out"
                )
                path = "jobs.exceptions.JobInterrupted"
                message = f"Interrupted after {running_for:.1f} s: {cause} in the same executor"
            else:
                path = "jobs.exceptions.ExecutorDied"
                message = f"The executor process died (exit code {work.exitcode}) " + (
                    "while running the job"
                    if was_running
                    else "after the job began; its outcome was lost with it"
                )
            outcome = failed_outcome(
                job,
                exception_class_path=path,
                message=message,
                traceback_text=message,
                worker_id=self.worker_id,
                retry=self.retry,
                duration=running_for,
            )
            finished.append((job, outcome))
        return finished

    # Heartbeat, rescue, retention.

    def _register(self) -> None:
        slots = self.config.concurrency * self.config.threads
        self.db.register(self.worker_id, self.hostname, os.getpid(), slots)
        self.next_heartbeat_at = time.monotonic() + self.heartbeat_interval

    def _heartbeat(self) -> None:
        if not self.db.heartbeat(self.worker_id):
            # The rescue gave this worker's jobs back to the queue: the ones
            # not started yet are someone else's to run now.
            logger.warning(
                "Worker %s had been declared dead (its jobs were rescued); skipping its "
                "%d unstarted job(s) and registering again",
                self.worker_id,
                self.pool.skip_unstarted(),
            )
            self._register()
        self.next_heartbeat_at = time.monotonic() + self.heartbeat_interval
        dead, ready, failed = self.db.rescue(self.dead_after)
        if dead or ready or failed:
            logger.warning(
                "Rescued the jobs of %d dead worker(s): %d READY again, %d FAILED (attempts spent)",
                dead,
                ready,
                failed,
            )
        self._analyze_if_never_analyzed()
        if not self.stopping:
            self._prune()

    def _analyze_if_never_analyzed(self) -> None:
        """See sql.NEVER_ANALYZED: the claim's plan must not wait for autovacuum."""
        if self.analyze_refused:
            return
        analyzed = self.db.analyze_if_never_analyzed()
        if analyzed:
            logger.info("jobs_job had no planner statistics yet: analyzed it")
        elif analyzed is False:
            self.analyze_refused = True
            logger.warning(
                "jobs_job has no planner statistics and this database role may not ANALYZE "
                "it: claims may be slow until autovacuum analyzes it, or its owner runs "
                "ANALYZE jobs_job"
            )

    def _prune(self) -> None:
        """Delete one small batch of expired jobs per status group, per heartbeat."""
        for statuses, retain in self.retention:
            if retain is not None:
                self.db.prune_batch(statuses, retain, PRUNE_BATCH_SIZE)

    # Losing and regaining the database.

    def _lost_database(self, error: Exception) -> None:
        if self.disconnected_since is None:
            self.disconnected_since = time.monotonic()
            logger.error(
                "Database unreachable (%s); executors go on, outcomes are held, "
                "reconnecting with backoff up to %.0f s",
                first_line(error),
                RECONNECT_BACKOFF_MAX,
            )
        self.db.close()
        self.reconnect_at = time.monotonic() + self.reconnect_delay

    def _reconnect(self) -> None:
        if time.monotonic() < self.reconnect_at:
            return
        try:
            self.db.connect()
        except DATABASE_ERRORS:
            self.db.close()
            self.reconnect_delay = min(self.reconnect_delay * 2, RECONNECT_BACKOFF_MAX)
            self.reconnect_at = time.monotonic() + self.reconnect_delay
            return
        logger.info(
            "Database reachable again after %.1f s; writing %d held outcome(s)",
            time.monotonic() - (self.disconnected_since or time.monotonic()),
            len(self.held_outcomes),
        )
        self.disconnected_since = None
        self.reconnect_delay = RECONNECT_DELAY_MIN
        self.claim_due_at = 0.0
        self.next_heartbeat_at = 0.0

    # Stopping.

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.stopping:
            # Ctrl-C under a process manager (honcho, foreman) arrives twice:
            # SIGINT from the terminal and SIGTERM from the manager. Only a
            # signal sent on purpose, a moment later, means "stop now".
            if time.monotonic() - self.stop_requested_at < REPEATED_SIGNAL_WINDOW:
                return
            logger.warning("%s again: stopping now", name)
            # A flag, not an exception: raised from here it could land in
            # the middle of any bookkeeping. The wake-up fd ends the wait.
            self.stop_now = True
            return
        self.stopping = True
        self.stop_requested_at = time.monotonic()
        self.stop_deadline = self.stop_requested_at + self.config.shutdown_timeout
        logger.info(
            "%s: no more claims; waiting up to %.0f s for %d running job(s)",
            name,
            self.config.shutdown_timeout,
            self.pool.running_count,
        )

    def _shut_down(self) -> None:
        for work in self.pool.stop():
            self.held_releases.extend(job for job, _ in work.running)
            self.held_releases.extend(work.unreported)
            self.held_releases.extend(work.unstarted)
            self._hold(work.finished)
        released = len(self.held_releases)
        try:
            # The batch the completer is writing, then the rest, on this
            # connection. A write that hangs (a connection dropped without a
            # word) is given up on: the rescue puts those jobs back.
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
                self.held_outcomes = finished + self.held_outcomes
            else:
                self._report(finished, accepted)
            if not self.db.connected:
                self.db.connect()
            self._write_releases()
            if self.held_outcomes:
                self._report(
                    self.held_outcomes,
                    self.db.complete([outcome for _, outcome in self.held_outcomes]),
                )
                self.held_outcomes = []
            self.db.unregister(self.worker_id)
        except DATABASE_ERRORS as error:
            logger.error(
                "Database unreachable at shutdown (%s): the rescue will put this worker's "
                "jobs back",
                error,
            )
        finally:
            self.db.close()
        if released:
            logger.info("Put %d unfinished job(s) back to READY, attempts not spent", released)
        logger.info("Worker %s stopped", self.worker_id)
