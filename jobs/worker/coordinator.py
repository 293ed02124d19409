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
jobs were rescued in the meantime. A worker that could not heartbeat for most
of WORKER_DEAD_AFTER (an outage, a freeze) stops its jobs before others may
rescue them (see jobs.worker.lease).
"""

import functools
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import wait

from django.tasks import task_backends

from ..exceptions import WorkerCannotStart
from ..health import HealthFile
from ..stop_signals import StopSignals
from .attempts import backend_backoff, given_back, lost_attempts
from .completer import Completer, HeldWrites
from .config import WorkerConfig
from .connection import (
    DATABASE_ERRORS,
    START_BACKOFF_MAX,
    START_WAIT_REPEAT,
    Backoff,
    describe,
    first_line,
)
from .database import QueueDatabase
from .executor_handle import Executor, LostWork
from .job_runner import retry_rules_of
from .lease import Lease
from .maintenance import Maintenance
from .pool import ExecutorPool
from .queue_slots import QueueSlots
from .reconnector import Reconnector

logger = logging.getLogger("jobs.worker")

# A second stop signal within this many seconds of the first is the same request.
REPEATED_SIGNAL_WINDOW = 1.0
# A wake-up (a NOTIFY of a job due now) that finds the pool more than half
# full claims the room there is, instead of waiting for half of it to free:
# a tenant's trickle behind another's backlog starts within milliseconds, since
# fair shares put its job first in the claim. At most one such claim per
# interval, so a stream of enqueues does not break a busy pool's large claims
# into one per notification.
EAGER_CLAIM_INTERVAL = 0.01


class Coordinator:
    """
    One worker: wires the pool, the completer and the upkeep to the main
    connection, and runs the loop that claims, deals, collects and stops.
    """

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.backend = task_backends[config.backend]
        options = self.backend.queue_options
        self.poll_interval = options.poll_interval
        self.cancel_grace = options.cancel_grace
        self.backoff = backend_backoff(options)
        self.worker_id = f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"
        self.db = self._database()
        self.lease = Lease(options.worker_dead_after)
        self.pool = ExecutorPool(
            config.concurrency,
            config.prefetch,
            self.worker_id,
            self.lease,
            threads=config.threads,
            async_slots=config.async_slots,
            max_tasks_per_child=config.max_tasks_per_child,
            max_memory_per_child=config.max_memory_per_child,
            backend=config.backend,
        )
        # Writes the database could not take yet are held there until it is back.
        self.writes = HeldWrites(
            Completer(self._database(), self.worker_id), self.worker_id, self._hurry
        )
        self.maintenance = Maintenance(
            self.db,
            self.worker_id,
            config.concurrency * (config.threads + config.async_slots),
            options,
            self.lease,
            self._stop_jobs,
            backend=config.backend,
        )
        self.slots = (
            QueueSlots(config.queues, config.queue_slots, self.pool) if config.queue_slots else None
        )
        self.stopping = False
        self.unstarted_skipped = False
        self.stop_requested_at = 0.0
        self.stop_deadline = 0.0
        self.claim_due_at = 0.0
        self.claimed_at = 0.0
        # When a wake-up's claim of whatever room there is may run (None: no
        # wake-up waits for one).
        self.eager_claim_at: float | None = None
        self.connection = Reconnector(self.db, options.worker_dead_after)
        self.stop_now = False
        self.stop_signals = StopSignals()
        self.health = HealthFile(config.health_file)

    def _database(self) -> QueueDatabase:
        options = self.backend.queue_options
        return QueueDatabase(
            options.database,
            self.config.queues,
            prepared_statements=options.prepared_statements,
            limits=options.limits,
            limited_poll=options.poll_interval,
        )

    def _hurry(self) -> bool:
        """Whether held outcomes go at once: the worker stops, or nothing else runs."""
        return self.stopping or self.pool.idle()

    def run(self) -> None:
        # The pool first: its executors may be forked only while nothing is
        # open and no other thread runs.
        self.pool.start()
        self.writes.completer.start()
        self.stop_signals.install(self._on_stop_signal)
        self.health.beat(ready=False)
        if not self._connect_at_start():
            # Nothing was claimed: there is nothing to give back.
            self._stop_unstarted()
            logger.info("Worker %s stopped before the database answered", self.worker_id)
            return
        if problem := self.db.schema_problem():
            self._stop_unstarted()
            raise WorkerCannotStart(problem)
        self.maintenance.start()
        logger.info(
            "Worker %s started: queues %s, concurrency %d (processes) x %d thread(s)%s, "
            "prefetch %s, database %s",
            self.worker_id,
            self.config.queues_text,
            self.config.concurrency,
            self.config.threads,
            f" + {self.config.async_slots} async slot(s)" if self.config.async_slots else "",
            self.config.prefetch or "adaptive",
            describe(self.backend.database),
        )
        try:
            while not (self.stopping and self.pool.idle() and not self.writes.holding):
                self._step()
                if self.stop_now or (self.stopping and time.monotonic() >= self.stop_deadline):
                    break
        finally:
            self._shut_down()

    def _stop_unstarted(self) -> None:
        self.pool.stop()
        self.writes.completer.stop()
        self.db.close()
        self.health.remove()

    def _connect_at_start(self) -> bool:
        """
        Connect, waiting for the database as long as it takes: a worker
        started before Postgres (a host's boot, a compose file, honcho) starts
        working once it answers instead of exiting. False when a stop signal
        came first.
        """
        backoff = Backoff(maximum=START_BACKOFF_MAX)
        said, said_at = None, 0.0
        while True:
            try:
                self.db.connect()
                return True
            except DATABASE_ERRORS as error:
                # Said again when the reason changes, and every minute: a
                # database that does not exist or a wrong password is no
                # outage, and an operator reading the log now must see why.
                reason = first_line(error)
                if reason != said or time.monotonic() - said_at >= START_WAIT_REPEAT:
                    logger.warning(
                        "Database %s unreachable (%s); waiting for it, trying again every "
                        "%.0f s at most",
                        describe(self.backend.database),
                        reason,
                        START_BACKOFF_MAX,
                    )
                    said, said_at = reason, time.monotonic()
                self.db.close()
            retry_at = time.monotonic() + backoff.next()
            while time.monotonic() < retry_at:
                self.health.beat(ready=False)
                timeout = self.health.wait_limit(retry_at - time.monotonic())
                self.stop_signals.drain(wait([self.stop_signals.reader], timeout=timeout))
                if self.stopping:
                    return False

    # The loop.

    def _step(self) -> None:
        self.health.beat(ready=self.db.connected)
        if self.stopping and not self.unstarted_skipped:
            # Stopping means starting nothing new: what was claimed but not
            # begun goes back to the queue now, for another worker.
            skipped = self.pool.skip_unstarted()
            self.unstarted_skipped = True
            if skipped:
                logger.info("Giving back %d claimed job(s) that had not started", skipped)
        if self.db.connected and self._may_claim() and time.monotonic() >= self.claim_due_at:
            self._with_database(self._claim)
        if self.db.connected and self.db.notifications_unread:
            # A NOTIFY that came in with a statement's results no longer
            # wakes the wait: read it now, or its job waits for the next
            # wake-up (a heartbeat's statement made a job 20 ms late).
            self._with_database(self._read_notifications)

        completer = self.writes.completer
        waitables = [*self.pool.connections(), self.stop_signals.reader, completer]
        if self.db.connected:
            waitables.append(self.db.conn)
        ready = wait(waitables, timeout=self._wait_timeout())
        # First thing on waking, from a freeze too: executors woken with this
        # process may be running jobs that others are about to run again.
        self.maintenance.fence_if_lapsed()
        self.stop_signals.drain(ready)
        if completer in ready and (retry_due_at := self.writes.collect()) is not None:
            # A retry may be due before the next claim we had planned.
            self.claim_due_at = min(self.claim_due_at, retry_due_at)

        finished, lost = self.pool.receive(ready)
        if self.slots is not None and self.slots.freed(finished):
            self.claim_due_at = 0.0
        if (snoozed_until := self.writes.hold(finished)) is not None:
            self.claim_due_at = min(self.claim_due_at, snoozed_until)
        for work in lost:
            self._fail_lost(work)
        for executor, late in self.pool.overdue():
            self._fail_lost(self.pool.replace(executor), timed_out={job.id for job in late})
        now = time.monotonic()
        for executor in list(self.pool.executors):
            if late := executor.cancels_due(now):
                self._stop_executor_of_cancelled(executor, late[0].id)
        self.pool.recycle()

        if not self.db.connected:
            self._reconnect()
        # Each operation may lose the connection: look again before the next.
        if self.db.connected and time.monotonic() >= self.writes.due_at():
            self._with_database(lambda: self.writes.write(self.db))
        if self.db.connected and (self.db.conn in ready or self.db.notifications_unread):
            self._with_database(self._read_notifications)
        if self.db.connected and time.monotonic() >= self.maintenance.due_at:
            self._with_database(lambda: self.maintenance.run(prune=not self.stopping))

    def _may_claim(self, *, eager: bool | None = None) -> bool:
        """
        Not while stopping, nor while outcomes cannot be written, nor with no
        room, nor with a lapsed lease (its executors would start nothing).
        `eager`: as if a wake-up's claim of the room there is were due (by
        default, whether it is).
        """
        if eager is None:
            eager = self.eager_claim_at is not None and time.monotonic() >= self.eager_claim_at
        return (
            not self.stopping
            and not self.writes.paused
            and not self.lease.lapsed()
            and self.pool.claim_size(eager=eager) > 0
        )

    def _with_database(self, operation: Callable[[], object]) -> None:
        try:
            operation()
        except DATABASE_ERRORS as error:
            self.connection.lost(error)

    def _wait_timeout(self) -> float:
        now = time.monotonic()
        if self.db.connected:
            deadlines = [self.maintenance.due_at]
            if self.writes.holding:
                deadlines.append(self.writes.due_at())
            if self._may_claim():
                deadlines.append(self.claim_due_at)
            elif self.eager_claim_at is not None and self._may_claim(eager=True):
                deadlines.append(max(self.eager_claim_at, self.claim_due_at))
        else:
            # Heartbeats and claims wait for the connection: their deadlines,
            # long past, would make this loop spin through the outage.
            deadlines = [self.connection.due_at]
        if self.stopping:
            deadlines.append(self.stop_deadline)
        if not self.lease.fenced and not self.pool.idle():
            deadlines.append(self.lease.expires_at)
        timeout_at = self.pool.next_deadline()
        if timeout_at is not None:
            deadlines.append(timeout_at)
        return self.health.wait_limit(max(0.0, min(deadlines) - now))

    # Claiming and cancelling.

    def _claim(self) -> None:
        self.claimed_at = time.monotonic()
        self.eager_claim_at = None
        limit = self.pool.free_slots
        if self.slots is None:
            jobs = self.db.claim(self.worker_id, limit)
            full = len(jobs) == limit
        else:
            jobs, full = self.db.claim_by_queue(self.worker_id, limit, self.slots.groups())
        if jobs:
            self.pool.dispatch(jobs)
        if full or (self.db.scan.keys_left and jobs):
            # A full claim: there may be more due jobs; claim again as soon as
            # slots free up. Keys the claim did not reach yet may have jobs
            # to start too, if this one found some (a scan of keys that are
            # all blocked waits for a wake-up, not a loop).
            self.claim_due_at = 0.0
            return
        open_queues = None if self.slots is None else self.slots.open_queues()
        seconds = self.db.seconds_until_next_due(open_queues)
        wait_for = self.poll_interval
        if seconds is not None:
            wait_for = min(wait_for, max(seconds, 0.0))
        self.claim_due_at = time.monotonic() + wait_for

    def _read_notifications(self) -> None:
        news = self.db.notifications()
        if news.wake:
            self.claim_due_at = 0.0
            if self.eager_claim_at is None:
                self.eager_claim_at = self.claimed_at + EAGER_CLAIM_INTERVAL
        for job_id, attempt in news.cancelled:
            self._stop_cancelled(job_id, attempt)
        self._give_back_paused(news.paused)

    def _give_back_paused(self, queues: set[str]) -> None:
        """
        The claim already leaves a paused queue alone; what this worker holds
        of it and has not started goes back too, for no job of it to start
        after the pause.
        """
        if not queues:
            return
        skipped = self.pool.skip_unstarted(queues=queues)
        if skipped:
            logger.info(
                "Queue(s) %s paused: giving back %d claimed job(s) that had not started",
                ",".join(sorted(queues)),
                skipped,
            )

    def _stop_cancelled(self, job_id: str, attempt: int | None) -> None:
        # The attempt that ran when the job was cancelled: a retry of it that
        # this worker claimed meanwhile is another attempt, and runs on.
        located = self.pool.locate(job_id, attempt)
        if located is None:
            return
        executor, job, running = located
        if not running:
            self.pool.skip(executor, job)
        # A job under a limit gets no grace: the cancel freed its slot, and a
        # task that ran on would run beside the next job of its key.
        elif self.cancel_grace > 0 and not job.limited:
            logger.info(
                "Job %s cancelled while running: its task is told, and its executor stopped "
                "if it still runs in %g s",
                job_id,
                self.cancel_grace,
            )
            executor.request_cancel(job, self.cancel_grace)
        else:
            self._stop_executor_of_cancelled(executor, job_id)

    def _stop_executor_of_cancelled(self, executor: Executor, job_id: str) -> None:
        logger.info("Job %s cancelled while running: stopping its executor", job_id)
        # The cancel already wrote CANCELLED; the other jobs go back or fail
        # as for any executor the coordinator killed.
        self._fail_lost(self.pool.replace(executor), cancelled=job_id)

    def _fail_lost(
        self,
        work: LostWork,
        *,
        timed_out: set[str] | frozenset[str] = frozenset(),
        cancelled: str | None = None,
    ) -> None:
        """Hold what a dead or killed executor's jobs become (see attempts.lost_attempts)."""
        finished, released = lost_attempts(
            work,
            worker_id=self.worker_id,
            rules=functools.partial(retry_rules_of, default=self.backoff),
            timed_out=timed_out,
            cancelled=cancelled,
        )
        self.writes.release(released, begun=work.begun)
        self.writes.hold(finished)

    def _stop_jobs(self) -> tuple[int, int]:
        """
        Stop the jobs this worker holds, which another may rescue and run
        (see Maintenance.fence_if_lapsed): kill the executors that run one,
        and have the others give back those they have not started. Each goes
        back unspent (attempts.given_back), by a fenced release that leaves
        alone a job rescued meanwhile. Returns (jobs that were running, the
        others).
        """
        running = others = 0
        for executor in self.pool.busy():
            work = self.pool.replace(executor)
            finished, released = given_back(work)
            running += len(work.running)
            others += len(released) - len(work.running)
            self.writes.release(released, begun=work.begun)
            self.writes.hold(finished)
        return running, others + self.pool.skip_unstarted()

    # Losing and regaining the database.

    def _reconnect(self) -> None:
        gone = self.connection.reconnect()
        if gone is None:
            return
        logger.info(
            "Database reachable again after %.1f s; writing %d held outcome(s)",
            gone,
            len(self.writes.outcomes),
        )
        self.claim_due_at = 0.0
        self.maintenance.connected()
        # A pause announced while the connection was down was not heard.
        self._with_database(lambda: self._give_back_paused(self.db.paused_queues()))

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
            finished, released = given_back(work)
            self.writes.release(released, begun=work.begun)
            self.writes.hold(finished)
        released = len(self.writes.releases)
        try:
            self.writes.finish(self.db)
            self.db.unregister(self.worker_id)
        except DATABASE_ERRORS as error:
            logger.error(
                "Database unreachable at shutdown (%s): the rescue will put this worker's "
                "jobs back",
                error,
            )
        finally:
            self.db.close()
            self.health.remove()
        if released:
            logger.info("Put %d unfinished job(s) back to READY, attempts not spent", released)
        logger.info("Worker %s stopped", self.worker_id)
