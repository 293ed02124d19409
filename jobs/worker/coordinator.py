"""
The coordinator: one process per `runworker` that owns the database side of work.

It claims due jobs in one statement, hands them to its executor processes,
writes their outcomes back in batches, and sleeps on LISTEN/NOTIFY, the next
run_at, or a slow poll, whichever comes first. Executors never touch the
queue's tables; only the coordinator does.
"""

import logging
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import wait

from django.tasks import task_backends

from .database import QueueDatabase, describe
from .executor import ClaimedJob, Outcome, RetryPolicy, failed_outcome
from .pool import ExecutorPool, LostWork

logger = logging.getLogger("jobs.worker")


@dataclass(frozen=True)
class WorkerConfig:
    queues: tuple[str, ...]
    concurrency: int
    prefetch: int = 4
    backend: str = "default"
    # Safety net for a lost NOTIFY (a restarted database, a pooler between us).
    poll_interval: float = 5.0
    heartbeat_interval: float = 5.0
    shutdown_timeout: float = 30.0


class Coordinator:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.backend = task_backends[config.backend]
        self.hostname = socket.gethostname()
        self.worker_id = f"{self.hostname[:40]}-{os.getpid()}-{secrets.token_hex(3)}"
        self.db = QueueDatabase(self.backend.database, config.queues)
        self.pool = ExecutorPool(config.concurrency, config.prefetch, self.worker_id)
        self.retry = RetryPolicy(
            self.backend.options["RETRY_BACKOFF_BASE"],
            self.backend.options["RETRY_BACKOFF_MAX"],
        )
        self.stopping = False
        self.stop_deadline = 0.0
        self.claim_due_at = 0.0
        self.next_heartbeat_at = 0.0
        self._signal_reader, self._signal_writer = os.pipe()

    def run(self) -> None:
        self._install_signal_handlers()
        self.db.connect()
        self.pool.start()
        self.db.register(self.worker_id, self.hostname, os.getpid(), self.config.concurrency)
        self.next_heartbeat_at = time.monotonic() + self.config.heartbeat_interval
        logger.info(
            "Worker %s started: queues %s, concurrency %d (processes), prefetch %d, database %s",
            self.worker_id,
            ",".join(self.config.queues),
            self.config.concurrency,
            self.config.prefetch,
            describe(self.backend.database),
        )
        try:
            while not (self.stopping and self.pool.idle()):
                self._step()
                if self.stopping and time.monotonic() >= self.stop_deadline:
                    break
        finally:
            self._shut_down()

    def _step(self) -> None:
        now = time.monotonic()
        if not self.stopping and now >= self.claim_due_at and self.pool.free_slots > 0:
            self._claim()

        waitables = [*self.pool.connections(), self.db.conn, self._signal_reader]
        ready = wait(waitables, timeout=self._wait_timeout())
        if self._signal_reader in ready:
            os.read(self._signal_reader, 64)

        outcomes, lost = self.pool.receive(ready)
        for work in lost:
            outcomes.extend(self._handle_lost(work, "died"))
        for executor, job, running_for in self.pool.overdue():
            logger.warning("Job %s %s timed out after %.1f s", job.id, job.task_path, running_for)
            work = self.pool.replace(executor)
            outcomes.extend(self._handle_lost(work, "timeout"))
        if outcomes:
            self._complete(outcomes)

        if self.db.woken():
            self.claim_due_at = 0.0

        if time.monotonic() >= self.next_heartbeat_at:
            self._heartbeat()

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
        wait_for = self.config.poll_interval
        if seconds is not None:
            wait_for = min(wait_for, max(seconds, 0.0))
        self.claim_due_at = time.monotonic() + wait_for

    def _wait_timeout(self) -> float:
        now = time.monotonic()
        deadlines = [self.next_heartbeat_at]
        if self.stopping:
            deadlines.append(self.stop_deadline)
        elif self.pool.free_slots > 0:
            deadlines.append(self.claim_due_at)
        timeout_at = self.pool.next_deadline()
        if timeout_at is not None:
            deadlines.append(timeout_at)
        return max(0.0, min(deadlines) - now)

    def _complete(self, finished: list[tuple[ClaimedJob, Outcome]]) -> None:
        accepted = self.db.complete([outcome for _, outcome in finished])
        retry_times = [
            o.retry_at for _, o in finished if o.retry_at is not None and o.id in accepted
        ]
        if retry_times:
            # A retry may be due before the next claim we had planned.
            retry_in = min(retry_times) - time.time()
            self.claim_due_at = min(self.claim_due_at, time.monotonic() + max(retry_in, 0.0))
        log_each = logger.isEnabledFor(logging.INFO)
        for job, outcome in finished:
            if outcome.id not in accepted:
                logger.warning(
                    "Job %s attempt %d: result discarded, the job was rescued and re-run "
                    "while this worker was unresponsive",
                    outcome.id,
                    outcome.attempt,
                )
            elif log_each:
                logger.info(
                    "Job %s %s %s in %.1f ms (attempt %d of %d)",
                    outcome.id,
                    job.task_path,
                    "failed, retry scheduled" if outcome.status == "READY" else outcome.status,
                    outcome.duration * 1000,
                    outcome.attempt,
                    job.max_attempts,
                )

    def _handle_lost(self, work: LostWork, reason: str) -> list[tuple[ClaimedJob, Outcome]]:
        """Fail the attempt a dead or killed executor was running; give back the rest."""
        self.db.release(work.unstarted)
        if work.running is None:
            return []
        job = work.running
        if reason == "timeout":
            path, message = (
                "jobs.exceptions.JobTimeout",
                f"Timed out after {work.running_for:.1f} s",
            )
        else:
            path = "jobs.exceptions.ExecutorDied"
            message = f"The executor process died (exit code {work.exitcode}) while running the job"
            logger.error("Job %s %s: %s", job.id, job.task_path, message)
        return [
            (
                job,
                failed_outcome(
                    job,
                    exception_class_path=path,
                    message=message,
                    traceback_text=message,
                    worker_id=self.worker_id,
                    retry=self.retry,
                    duration=work.running_for,
                ),
            )
        ]

    def _heartbeat(self) -> None:
        if not self.db.heartbeat(self.worker_id):
            logger.warning("Worker %s had been declared dead; registering again", self.worker_id)
            self.db.register(self.worker_id, self.hostname, os.getpid(), self.config.concurrency)
        self.next_heartbeat_at = time.monotonic() + self.config.heartbeat_interval

    def _install_signal_handlers(self) -> None:
        os.set_blocking(self._signal_writer, False)
        signal.set_wakeup_fd(self._signal_writer)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.stopping:
            logger.warning("%s again: stopping now", name)
            raise SystemExit(0)
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.config.shutdown_timeout
        logger.info(
            "%s: no more claims; waiting up to %.0f s for %d running job(s)",
            name,
            self.config.shutdown_timeout,
            self.pool.in_flight,
        )

    def _shut_down(self) -> None:
        lost = self.pool.stop()
        unfinished: list[ClaimedJob] = []
        for work in lost:
            if work.running is not None:
                unfinished.append(work.running)
            unfinished.extend(work.unstarted)
        if unfinished:
            released = self.db.release(unfinished)
            logger.info("Put %d unfinished job(s) back to READY", released)
        self.db.unregister(self.worker_id)
        self.db.close()
        logger.info("Worker %s stopped", self.worker_id)
