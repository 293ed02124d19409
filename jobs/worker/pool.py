"""
The coordinator's side of the executor processes.

Each executor gets its claimed jobs in small batches over a pipe and starts
them in order, as many at once as it has threads; the pool remembers what
each one holds, and reads from memory it shares with the executor which job
each thread runs (see executor_handle.Executor). The pool sizes claims to
the room its executors have, deals the jobs, reads the outcomes, and replaces
executors that die, time out, are cancelled, or have run their share.
"""

import functools
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Collection, Iterable
from multiprocessing.connection import Connection

from django.db import connections
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS

from .executor import executor_main, set_up_spawned_executor
from .executor_handle import Executor, LostWork
from .lease import Lease
from .protocol import SKIPPED, ClaimedJob, Finished, Outcome, receive_message

logger = logging.getLogger("jobs.worker")

# With the adaptive prefetch, each executor holds about this many seconds of
# work, judged by how long recent jobs ran: 250 no-op jobs per executor travel in
# one claim, while a one-second job is claimed only when an executor is free
# for it (and so stays claimable by a worker that is idle).
PREFETCH_WINDOW = 0.1
# The cap bounds what one executor holds: the jobs a killed worker leaves to
# the rescue, each with an attempt spent, and the size of one hand-off.
PREFETCH_LIMIT = 250
# Weight of the newest job in the running average of job durations.
DURATION_SMOOTHING = 0.05


class ExecutorPool:
    """The coordinator's executors: how many jobs they have room for, and who runs which."""

    def __init__(
        self,
        size: int,
        prefetch: int | None,
        worker_id: str,
        lease: Lease,
        *,
        threads: int = 1,
        async_slots: int = 0,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        backend: str = DEFAULT_TASK_BACKEND_ALIAS,
    ) -> None:
        self.size = size
        # None: adaptive, see PREFETCH_WINDOW.
        self.prefetch = prefetch
        self.threads = threads
        self.async_slots = async_slots
        # Jobs an executor runs at once: on its threads, and on its event loop.
        self.slots = threads + async_slots
        self.average_duration: float | None = None
        self.worker_id = worker_id
        # The worker's task backend, whose options apply to a job that names
        # a backend this worker does not have (see JobRunner).
        self.backend = backend
        self.lease = lease
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child
        self.next_memory_check = 0.0
        self.executors: list[Executor] = []
        # Replacements are spawned, never forked: by then the coordinator holds
        # open database connections and sockets that a forked child would share.
        self._context = multiprocessing.get_context("spawn")

    def start(self) -> None:
        """
        Start the first executors: forked when nothing is open yet, else spawned.

        A forked executor starts in milliseconds with Django already set up;
        a spawned one imports and sets up Django anew, most of a second on a
        small machine. Forking is safe only while the coordinator has no
        database connection (the caller starts the pool before it connects)
        and on a platform that forks.
        """
        context = self._context
        if "fork" in multiprocessing.get_all_start_methods() and not any(
            wrapper.connection is not None for wrapper in connections.all(initialized_only=True)
        ):
            context = multiprocessing.get_context("fork")
        for _ in range(self.size):
            self.executors.append(self._spawn(context))

    def _spawn(self, context: multiprocessing.context.BaseContext | None = None) -> Executor:
        context = context or self._context
        parent_conn, child_conn = context.Pipe()
        slots = context.RawArray("q", self.slots + 1)
        # A forked child has Django set up already; a spawned one sets it up,
        # with the log levels that runworker gave this process.
        setup = None
        if context.get_start_method() != "fork":
            levels = {name: logging.getLogger(name).level for name in ("jobs", "django.tasks")}
            setup = functools.partial(set_up_spawned_executor, levels)
        process = context.Process(
            target=executor_main,
            args=(
                child_conn,
                self.worker_id,
                self.backend,
                setup,
                os.getpid(),
                self.threads,
                slots,
                self.lease.shared,
                self.async_slots,
            ),
            name="jobs-executor",
            daemon=True,
        )
        process.start()
        child_conn.close()
        return Executor(
            process=process,
            conn=parent_conn,
            slots=slots,
            threads=self.threads,
            async_slots=self.async_slots,
        )

    @property
    def in_flight(self) -> int:
        return sum(len(executor.assigned) for executor in self.executors)

    @property
    def running_count(self) -> int:
        return sum(len(executor.running()) for executor in self.executors)

    @property
    def free_slots(self) -> int:
        return sum(self._room(executor) for executor in self.executors)

    def jobs_per_executor(self) -> int:
        """
        How many jobs each executor may hold: those running and those queued
        behind them; never fewer than its slots, so none of them idles.
        """
        if self.prefetch is not None:
            return max(self.prefetch, self.slots)
        if self.average_duration is None:
            return self.slots
        window = self.slots * PREFETCH_WINDOW / max(self.average_duration, 1e-6)
        return max(self.slots, min(PREFETCH_LIMIT, int(window)))

    def claim_size(self, *, eager: bool = False) -> int:
        """
        How many jobs to claim now: none while the pool is more than half
        full, unless `eager` (news of a job due now) asks for whatever room
        there is.

        Waiting for half the room to free up turns a stream of short jobs into
        a few large claims instead of one round trip per finished job; a
        thread with nothing to do is never kept waiting.
        """
        free = self.free_slots
        capacity = self.jobs_per_executor() * len(self.executors)
        if (
            eager
            or free * 2 >= capacity
            or any(self._room(e) and len(e.assigned) < self.slots for e in self.executors)
        ):
            return free
        return 0

    def _room(self, executor: Executor) -> int:
        if executor.retiring:
            return 0
        room = self.jobs_per_executor() - len(executor.assigned)
        if self.max_tasks_per_child is not None:
            room = min(room, self.max_tasks_per_child - executor.jobs_run - len(executor.assigned))
        return max(room, 0)

    def dispatch(self, jobs: list[ClaimedJob]) -> None:
        """
        Deal jobs one at a time to the executor with the most room.

        Dealing, rather than filling one executor's prefetch first, starts a
        small claim (a signup's three messages) on as many executors at once.
        """
        now = time.monotonic()
        rooms = [self._room(executor) for executor in self.executors]
        batches: dict[int, tuple[Executor, list[ClaimedJob]]] = {}
        for job in jobs:
            index = max(range(len(rooms)), key=rooms.__getitem__)
            if rooms[index] <= 0:
                raise RuntimeError("dispatch() was given more jobs than free_slots")
            rooms[index] -= 1
            executor = self.executors[index]
            executor.assign(job)
            batches.setdefault(index, (executor, []))[1].append(job)
        for executor, batch in batches.values():
            executor.note_starts(now)
            executor.tell(("run", [tuple(job) for job in batch]))

    def locate(
        self, job_id: str, attempt: int | None = None
    ) -> tuple[Executor, ClaimedJob, bool] | None:
        """
        The executor that holds an attempt of a job (None: its latest), and
        whether it runs there.
        """
        found = None
        for executor in self.executors:
            for job in executor.assigned.values():
                if job.id != job_id or (attempt is not None and job.attempt != attempt):
                    continue
                if found is None or job.attempt > found[1].attempt:
                    found = (executor, job, job in executor.running())
        return found

    def skip(self, executor: Executor, job: ClaimedJob) -> None:
        """
        Tell an executor not to start a job it holds: it answers SKIPPED at
        once if the job still waits, or the job's outcome if it had begun.
        """
        executor.tell(("skip", (job.id, job.attempt)))

    def busy(self) -> list[Executor]:
        """The executors that run a job now."""
        return [executor for executor in self.executors if executor.running()]

    def skip_unstarted(self, queues: Collection[str] | None = None) -> int:
        """
        Tell every executor not to start any job it holds but has not begun,
        of the given queues or of all; the count includes finished jobs whose
        outcome is on its way, which the executor leaves alone.
        """
        skipped = 0
        for executor in self.executors:
            for job in executor.not_running():
                if queues is None or job.queue in queues:
                    self.skip(executor, job)
                    skipped += 1
        return skipped

    def recycle(self) -> None:
        """Replace idle executors that ran their share or outgrew their memory ceiling."""
        now = time.monotonic()
        check_memory = self.max_memory_per_child is not None and now >= self.next_memory_check
        if check_memory:
            self.next_memory_check = now + 1.0
        for executor in list(self.executors):
            if not executor.retiring:
                if (
                    self.max_tasks_per_child is not None
                    and executor.jobs_run >= self.max_tasks_per_child
                ):
                    executor.retiring = True
                elif check_memory and resident_memory(executor) > self.max_memory_per_child:
                    logger.info(
                        "Executor %s is past its memory ceiling: replacing it once idle",
                        executor.pid,
                    )
                    executor.retiring = True
            if executor.retiring and not executor.assigned:
                executor.tell(None)
                executor.process.join(timeout=5)
                self._kill(executor)
                self.executors[self.executors.index(executor)] = self._spawn()

    def connections(self) -> list[Connection]:
        return [executor.conn for executor in self.executors]

    def receive(self, ready: Iterable[object]) -> tuple[Finished, list[LostWork]]:
        """Read the outcomes the ready pipes hold; replace executors that died."""
        outcomes: Finished = []
        lost: list[LostWork] = []
        ready = set(ready)
        for executor in list(self.executors):
            if executor.conn not in ready:
                continue
            try:
                self._read_outcomes(executor, outcomes)
            except (EOFError, OSError):
                lost.append(self.replace(executor, died=True))
        return outcomes, lost

    def _read_outcomes(self, executor: Executor, outcomes: Finished) -> None:
        """Append what the executor's pipe holds now; EOFError once it is closed."""
        while executor.conn.poll():
            for row in receive_message(executor.conn):
                outcome = Outcome(*row)
                job = executor.answer((outcome.id, outcome.attempt))
                executor.jobs_run += 1
                outcomes.append((job, outcome))
                if outcome.status != SKIPPED:
                    self._observe(outcome.duration)
            executor.note_starts(time.monotonic())

    def _observe(self, duration: float) -> None:
        if self.average_duration is None:
            self.average_duration = duration
        else:
            self.average_duration += DURATION_SMOOTHING * (duration - self.average_duration)

    def overdue(self) -> list[tuple[Executor, list[ClaimedJob]]]:
        """Executors running a job past its timeout, with those jobs."""
        now = time.monotonic()
        late = []
        for executor in self.executors:
            executor.note_starts(now)
            jobs = [
                job
                for job in executor.running()
                if job.timeout is not None
                and now - executor.started.get((job.id, job.attempt), now)
                >= job.timeout + executor.timeout_grace(job)
            ]
            if jobs:
                late.append((executor, jobs))
        return late

    def next_deadline(self) -> float | None:
        """When the next running job times out, or a cancelled one's grace ends (monotonic)."""
        deadlines = [
            executor.started.get((job.id, job.attempt), time.monotonic())
            + job.timeout
            + executor.timeout_grace(job)
            for executor in self.executors
            for job in executor.running()
            if job.timeout is not None
        ]
        deadlines += [when for executor in self.executors for when in executor.cancel_deadlines()]
        return min(deadlines, default=None)

    def replace(self, executor: Executor, *, died: bool = False) -> LostWork:
        """Kill an executor (if it still runs), start a fresh one, return its work."""
        work = self._kill(executor, died=died)
        for _, running_for in work.running:
            self._observe(running_for)
        index = self.executors.index(executor)
        self.executors[index] = self._spawn()
        return work

    def _kill(self, executor: Executor, *, died: bool = False) -> LostWork:
        """
        Kill the executor and account for its jobs. Outcomes it sent before
        it went are read first: those jobs finished and are not lost.
        """
        if executor.process.is_alive():
            os.kill(executor.process.pid, signal.SIGKILL)
        executor.process.join()
        finished: Finished = []
        try:
            self._read_outcomes(executor, finished)
        except (EOFError, OSError):
            pass
        executor.conn.close()
        work = executor.lost_work(died=died)
        work.finished = finished
        return work

    def idle(self) -> bool:
        return self.in_flight == 0

    def stop(self) -> list[LostWork]:
        """Stop every executor: idle ones politely, busy ones by SIGKILL."""
        lost = []
        for executor in self.executors:
            if executor.assigned:
                lost.append(self._kill(executor))
            else:
                executor.tell(None)
        for executor in self.executors:
            executor.process.join(timeout=5)
            if executor.process.is_alive():
                self._kill(executor)
        self.executors = []
        return lost


def resident_memory(executor: Executor) -> int:
    """The executor process's resident memory in bytes (0 once it is gone)."""
    # Imported on first use: only --max-memory-per-child needs it, and
    # every worker would otherwise pay for the import at start.
    import psutil

    try:
        return psutil.Process(executor.pid).memory_info().rss
    except psutil.Error:
        return 0
