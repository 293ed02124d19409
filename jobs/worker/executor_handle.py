"""
The coordinator's handle on one executor process, and what a lost one leaves.

The handle remembers which jobs it sent the executor, in order, and reads
from memory shared with the executor which of them each thread runs now. So
when an executor is killed (a timeout, a cancel, a shutdown past its grace)
or dies on its own, the coordinator knows exactly which jobs it was running,
which it had finished without a word yet, and which it never reached.
"""

import ctypes
import multiprocessing
import time
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing.connection import Connection

from .protocol import ClaimedJob, Finished, send_message

# Seconds past its timeout that a coroutine on an executor's event loop has
# to end once the loop cancelled it (jobs.worker.async_slots), before the
# executor is killed: a coroutine that blocks its loop cannot be cancelled.
ASYNC_TIMEOUT_GRACE = 2.0


@dataclass
class Executor:
    """One executor process as the coordinator sees it: what it holds, and what it runs."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    # One slot per thread, in memory shared with the executor: the number of
    # the job the thread runs now, 0 when it runs none; and a last slot with
    # the highest number taken so far (see executor.py: executor_main, WaitingJobs).
    slots: "ctypes.Array[ctypes.c_longlong]"
    # Jobs it runs at once, each in a thread of its own; then async jobs on
    # its event loop, one slot each after the threads' (jobs.worker.async_slots).
    threads: int = 1
    async_slots: int = 0
    # Jobs sent and not yet answered, by (id, attempt), in the order they were
    # sent. The attempt is part of the key: a worker that was declared dead
    # may claim again a job it still runs.
    assigned: dict[tuple[str, int], ClaimedJob] = field(default_factory=dict)
    # The number each job sent has on both sides (1, 2, ... in sending order),
    # both ways.
    numbers: dict[tuple[str, int], int] = field(default_factory=dict)
    by_number: dict[int, tuple[str, int]] = field(default_factory=dict)
    sent: int = 0
    # When each running job started, as far as the coordinator can tell: the
    # first moment it was seen in a slot, or in the first `threads` jobs not
    # answered (which an outcome in a batch still on its way may delay).
    started: dict[tuple[str, int], float] = field(default_factory=dict)
    # Running jobs that were cancelled, each with the monotonic time its
    # grace ends: the executor is killed then if the job still runs.
    cancel_by: dict[tuple[str, int], float] = field(default_factory=dict)
    jobs_run: int = 0
    # Set when the executor has run its share (--max-tasks-per-child) or grown
    # past its memory ceiling: it gets no more jobs and is replaced once idle.
    retiring: bool = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def tell(self, message: object) -> None:
        """
        Send a message; nothing when the executor has died since the last
        receive(), which finds its pipe closed and hands its jobs back as
        lost work.
        """
        try:
            send_message(self.conn, message)
        except OSError:
            pass

    def assign(self, job: ClaimedJob) -> None:
        key = (job.id, job.attempt)
        self.sent += 1
        self.assigned[key] = job
        self.numbers[key] = self.sent
        self.by_number[self.sent] = key

    def answer(self, key: tuple[str, int]) -> ClaimedJob:
        self.by_number.pop(self.numbers.pop(key))
        self.started.pop(key, None)
        self.cancel_by.pop(key, None)
        return self.assigned.pop(key)

    def request_cancel(self, job: ClaimedJob, grace: float) -> None:
        """
        Tell a running job's task that it was cancelled (jobs.cancellation);
        cancels_due() gives it up once `grace` seconds have passed.
        """
        self.tell(("cancel", (job.id, job.attempt)))
        self.cancel_by[job.id, job.attempt] = time.monotonic() + grace

    def cancel_deadlines(self) -> list[float]:
        """When the grace of each cancelled job that still runs ends."""
        if not self.cancel_by:
            return []
        return [
            self.cancel_by[key]
            for job in self.running()
            if (key := (job.id, job.attempt)) in self.cancel_by
        ]

    def cancels_due(self, now: float) -> list[ClaimedJob]:
        """Cancelled jobs that still run past their grace."""
        if not self.cancel_by:
            return []
        return [
            job for job in self.running() if self.cancel_by.get((job.id, job.attempt), now) < now
        ]

    def running(self) -> list[ClaimedJob]:
        """The jobs whose code runs now: read from the slots, so exact."""
        return [
            self.assigned[self.by_number[number]]
            for number in self.slots[: self.threads + self.async_slots]
            if number in self.by_number
        ]

    def timeout_grace(self, job: ClaimedJob) -> float:
        """
        Seconds past its timeout before a running job's executor is killed:
        none on a thread; on the event loop, the time its cancellation has to
        end it (a coroutine that blocks the loop does not end).
        """
        if not self.async_slots:
            return 0.0
        number = self.numbers.get((job.id, job.attempt))
        loop_slots = self.slots[self.threads : self.threads + self.async_slots]
        return ASYNC_TIMEOUT_GRACE if number in loop_slots else 0.0

    def not_running(self) -> list[ClaimedJob]:
        """
        The jobs not running now: those not started yet, and those that
        finished and whose outcome is on its way.
        """
        running = {(job.id, job.attempt) for job in self.running()}
        return [job for key, job in self.assigned.items() if key not in running]

    def note_starts(self, now: float) -> None:
        # The first jobs sent start at once on idle threads; beside an event
        # loop, which takes only async jobs, they may wait: there a job's
        # clock starts only when a slot shows it.
        if not self.async_slots:
            for key in islice(self.assigned, self.threads):
                self.started.setdefault(key, now)
        for job in self.running():
            self.started.setdefault((job.id, job.attempt), now)

    def lost_work(self, *, died: bool) -> "LostWork":
        """
        What the executor leaves once it is gone, read from its slots: the
        jobs it was running; those it had begun and finished, whose outcome
        was lost with it; and those it never began.
        """
        now = time.monotonic()
        running = self.running()
        last_taken = self.slots[self.threads + self.async_slots]
        unreported, unstarted = [], []
        for job in self.not_running():
            begun = self.numbers[job.id, job.attempt] <= last_taken
            (unreported if begun else unstarted).append(job)
        return LostWork(
            running=[(job, now - self.started.get((job.id, job.attempt), now)) for job in running],
            unreported=unreported,
            unstarted=unstarted,
            exitcode=self.process.exitcode,
            died=died,
        )


@dataclass
class LostWork:
    """
    What a killed or dead executor leaves: the jobs it was running, with how
    long each had run; those it had begun whose outcome never came (or that
    it withdrew, and the answer never came); those it never began; and the
    outcomes still in its pipe when it was killed.

    `died`: it ended on its own (a crash, os._exit, the OOM killer) rather
    than being killed by the coordinator. Any job it had begun may be what
    killed it, so each spends its attempt: a job that crashes its executor
    cannot come back for ever.
    """

    running: list[tuple[ClaimedJob, float]]
    unreported: list[ClaimedJob]
    unstarted: list[ClaimedJob]
    exitcode: int | None
    died: bool
    finished: Finished = field(default_factory=list)

    @property
    def begun(self) -> set[str]:
        """The ids of the jobs it had begun: running, or done and not reported."""
        return {job.id for job, _ in self.running} | {job.id for job in self.unreported}
