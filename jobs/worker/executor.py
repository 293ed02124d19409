"""
The executor process: runs the jobs its coordinator hands it, in order, one at
a time or, with threads, as many at once (each with job_runner.JobRunner).

Three kinds of thread share the work: a reader keeps the pipe drained
(start_reader), the job threads take jobs from WaitingJobs in order, and a
sender batches their outcomes back (OutcomeSender). See protocol for what
crosses the pipe.
"""

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from queue import Empty, SimpleQueue

import django

from .. import cancellation
from .async_slots import AsyncSlots
from .job_runner import JobRunner
from .lease import lapsed
from .protocol import ClaimedJob, Outcome, receive_message, send_message, skipped

logger = logging.getLogger("jobs.worker")

PR_SET_PDEATHSIG = 1


def set_up_spawned_executor(log_levels: dict[str, int]) -> None:
    """Set Django up in a spawned executor, its loggers at the coordinator's levels."""
    django.setup()
    for name, level in log_levels.items():
        logging.getLogger(name).setLevel(level)


def die_with_parent(parent_pid: int) -> None:
    """
    Have the kernel kill this process when its coordinator dies.

    A coordinator killed with SIGKILL has its jobs rescued and run again
    elsewhere; an orphaned executor that went on running its job would run it
    a second time in parallel.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        # The coordinator died before prctl took effect.
        os._exit(1)


def executor_main(
    conn: Connection,
    worker_id: str,
    backend: str,
    setup: Callable[[], None] | None,
    parent_pid: int,
    threads: int,
    running: "ctypes.Array[ctypes.c_longlong]",
    lease: ctypes.c_longlong,
    async_slots: int = 0,
) -> None:
    """
    The executor process's entry point.

    The coordinator sends ("run", [ClaimedJob tuples]), ("skip", (job id,
    attempt)) for a job it wants left unstarted, ("cancel", (job id,
    attempt)) for a running job that was cancelled, and finally None. Jobs start
    in the order they came, each on the next free thread, and both sides
    number them so in that order, from 1. While a thread runs a job, its slot
    of `running`, memory shared with the coordinator, holds the job's number,
    and the last slot the highest number taken so far (see WaitingJobs):
    that is how the coordinator knows which jobs run now (their timeout
    clocks) and, when an executor dies, which jobs it had begun. Outcomes go
    back in batches (see OutcomeSender). `lease`, shared too, is when the
    worker's lease runs out (see jobs.worker.lease): no job starts after it.

    SIGINT is ignored: a Ctrl-C in a terminal reaches the whole process
    group, and shutdown is the coordinator's to run (it lets running jobs
    finish, then kills us).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked executor inherits the coordinator's handlers and wake-up pipe.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    die_with_parent(parent_pid)
    if setup is not None:
        setup()
    runner = JobRunner(worker_id, backend)
    sender = OutcomeSender(conn)
    jobs = start_reader(
        conn, sender, running, lease, classify=runner.is_async if async_slots else None
    )

    work = (jobs, runner, sender, running)
    others = [
        threading.Thread(
            target=run_jobs, args=(slot, *work), name=f"jobs-executor-{slot}", daemon=True
        )
        for slot in range(1, threads)
    ]
    if async_slots:
        loop = AsyncSlots(range(threads, threads + async_slots), *work)
        others.append(threading.Thread(target=loop.run, name="jobs-executor-loop", daemon=True))
    for thread in others:
        thread.start()
    run_jobs(0, *work)
    for thread in others:
        thread.join()
    sender.close()


def run_jobs(
    slot: int,
    jobs: "WaitingJobs",
    runner: JobRunner,
    sender: "OutcomeSender",
    running: "ctypes.Array[ctypes.c_longlong]",
) -> None:
    """
    One job thread: run the waiting jobs it takes, one after the other.

    take() sets the slot as the job leaves the queue; it is cleared before
    the outcome is queued: a job whose number is in a slot has begun and has
    no outcome on the way. A thread that ends otherwise (sys.exit() in a
    task, a failing signal receiver) takes the process with it, so the
    coordinator sees the executor die and fails the job in its slot, instead
    of waiting for ever on a silent thread.
    """
    # Beside an event loop, the threads leave the async jobs to it.
    want_async = False if jobs.mixed else None
    with exit_on_failure("a job ended its thread"):
        while (job := jobs.take(slot, want_async)) is not None:
            with cancellation.watching(jobs.cancel_request(job)):
                outcome = runner.run(job)
            jobs.ended(job)
            running[slot] = 0
            sender.put(outcome)


@contextmanager
def exit_on_failure(what: str) -> Iterator[None]:
    """
    End the executor when one of its threads fails: the coordinator sees it
    die and accounts for its jobs, where a silent thread would stall them.
    """
    try:
        yield
    except BaseException:
        logger.exception("Executor %s: %s; exiting", os.getpid(), what)
        os._exit(70)


class OutcomeSender:
    """
    Sends outcomes from a thread of its own, as many per message as have
    come since the last.

    A message is a write on the pipe here and a poll and two reads in the
    coordinator: one per no-op job cost more than the job. The sender takes
    whatever has queued up when it gets to run, so an executor that goes idle
    reports at once, and a busy one every few jobs, usually within the
    interpreter's thread switch interval (5 ms); a job that holds the GIL in
    C code delays it until it lets go.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._outcomes: SimpleQueue[Outcome | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="jobs-executor-sender", daemon=True)
        self._thread.start()

    def put(self, outcome: Outcome) -> None:
        self._outcomes.put(outcome)

    def close(self) -> None:
        """Send what is queued, then stop."""
        self._outcomes.put(None)
        self._thread.join()

    def _run(self) -> None:
        with exit_on_failure("its outcome sender failed"):
            while True:
                batch = [self._outcomes.get()]
                while True:
                    try:
                        batch.append(self._outcomes.get_nowait())
                    except Empty:
                        break
                done = batch[-1] is None
                rows = [tuple(outcome) for outcome in batch if outcome is not None]
                if rows:
                    try:
                        send_message(self._conn, rows)
                    except OSError:
                        # The coordinator is gone: nobody is left to tell.
                        return
                if done:
                    return


class WaitingJobs:
    """
    The jobs an executor holds and has not started, in the order they came,
    each with its number (1, 2, ... in that order, as the coordinator counts).

    A job leaves it exactly once, under the lock: taken by a thread to run,
    withdrawn on the coordinator's request, or refused because the worker's
    lease ran out (handed to `refuse`, which answers it as skipped). So a job
    that was withdrawn or refused never starts, and a job that started is
    never answered as skipped. Taking a job writes, under the same lock, its
    number into the thread's slot and into the last slot, which so holds the
    highest number ever taken: every job numbered up to it either began, or
    was withdrawn or refused.
    """

    def __init__(
        self,
        running: "ctypes.Array[ctypes.c_longlong]",
        lease: ctypes.c_longlong,
        refuse: Callable[[ClaimedJob], None],
        *,
        mixed: bool = False,
    ) -> None:
        # With an event loop beside the threads (mixed), the loop takes the
        # async jobs and the threads the others, each only the first job
        # waiting, so that jobs still start in order: every change of the
        # first job wakes every taker.
        self.mixed = mixed
        self._async: set[tuple[str, int]] = set()
        self._jobs: OrderedDict[tuple[str, int], tuple[int, ClaimedJob]] = OrderedDict()
        self._running = running
        self._lease = lease
        self._refuse = refuse
        self._received = 0
        self._ended = False
        self._ready = threading.Condition()
        # Told of each cancel of a running job (the event loop's, to cancel
        # its coroutine: jobs.worker.async_slots).
        self.on_cancel: Callable[[tuple[str, int]], None] | None = None
        # The cancel request of each job that runs now, made as it is taken:
        # a cancel that comes once the coordinator sees the job's number in
        # its slot always finds it (see request_cancel).
        self._cancel_requests: dict[tuple[str, int], threading.Event] = {}

    def add(self, jobs: list[ClaimedJob], kinds: list[bool] | None = None) -> None:
        """
        Jobs to run, in order; beside an event loop, with whether each is
        async (found by the reader, outside the lock: it may import a module).
        """
        with self._ready:
            for job in jobs:
                self._received += 1
                self._jobs[job.id, job.attempt] = (self._received, job)
            if kinds:
                self._async.update(
                    (job.id, job.attempt)
                    for job, is_async in zip(jobs, kinds, strict=True)
                    if is_async
                )
            if self.mixed:
                self._ready.notify_all()
            else:
                self._ready.notify(len(jobs))

    def withdraw(self, key: tuple[str, int]) -> ClaimedJob | None:
        with self._ready:
            _, job = self._jobs.pop(key, (0, None))
            if self.mixed:
                self._async.discard(key)
                self._ready.notify_all()
            return job

    def end(self) -> None:
        """Every thread gets None once the waiting jobs are taken."""
        with self._ready:
            self._ended = True
            self._ready.notify_all()

    def take(self, slot: int, want_async: bool | None = None) -> ClaimedJob | None:
        """
        The first waiting job, for the thread of `slot`: when `want_async` is
        given (beside an event loop), once the first job is of that kind
        (jobs start in the order they came, whichever slot runs them). None
        once the jobs have ended.
        """
        with self._ready:
            while True:
                while not self._ended and (not self._jobs or not self._first_is(want_async)):
                    self._ready.wait()
                if not self._jobs or not self._first_is(want_async):
                    return None
                number, job = self._jobs.popitem(last=False)[1]
                if self.mixed:
                    self._async.discard((job.id, job.attempt))
                    self._ready.notify_all()
                # A worker frozen past its lease may have been rescued: its
                # jobs are someone else's to run. Checked here, as the job
                # would start, since the whole process group wakes at once and
                # this thread may run before the coordinator can say no.
                if not lapsed(self._lease):
                    self._cancel_requests[job.id, job.attempt] = threading.Event()
                    self._running[slot] = number
                    self._running[-1] = number
                    return job
                self._refuse(job)

    def _first_is(self, want_async: bool | None) -> bool:
        if want_async is None:
            return True
        return (next(iter(self._jobs)) in self._async) == want_async

    def cancel_request(self, job: ClaimedJob) -> threading.Event:
        """The cancel request of a job this thread has taken."""
        with self._ready:
            return self._cancel_requests[job.id, job.attempt]

    def ended(self, job: ClaimedJob) -> None:
        with self._ready:
            self._cancel_requests.pop((job.id, job.attempt), None)

    def request_cancel(self, key: tuple[str, int]) -> None:
        """Tell a running job's task that it was cancelled; nothing for a job that has ended."""
        with self._ready:
            request = self._cancel_requests.get(key)
            if request is not None:
                request.set()
        if request is not None and self.on_cancel is not None:
            self.on_cancel(key)


def start_reader(
    conn: Connection,
    sender: OutcomeSender,
    running: "ctypes.Array[ctypes.c_longlong]",
    lease: ctypes.c_longlong,
    *,
    classify: Callable[[ClaimedJob], bool] | None = None,
) -> WaitingJobs:
    """
    Read the coordinator's messages in a thread of their own, as they come.

    Both ends of the pipe write blocking: were this process to read only
    between jobs, a coordinator sending a large claim and an executor sending
    outcomes could each wait, for ever, for the other to read. The reader
    keeps this end drained. A skip is answered here, at once, for a job that
    still waits; one that has started by then runs to its end (its outcome is
    the answer), since a thread cannot be stopped. A cancel of a running job
    is passed to its task (jobs.cancellation), which may end early.
    """

    def answer_skipped(job: ClaimedJob) -> None:
        sender.put(skipped(job, time.time()))

    jobs = WaitingJobs(running, lease, answer_skipped, mixed=classify is not None)

    def read() -> None:
        with exit_on_failure("its pipe reader failed"):
            while True:
                try:
                    message = receive_message(conn)
                except (EOFError, OSError):
                    message = None
                if message is None:
                    jobs.end()
                    return
                kind, body = message
                if kind == "run":
                    claimed = [ClaimedJob(*row) for row in body]
                    jobs.add(claimed, [classify(job) for job in claimed] if classify else None)
                elif kind == "cancel":
                    jobs.request_cancel(tuple(body))
                elif (job := jobs.withdraw(tuple(body))) is not None:
                    answer_skipped(job)

    threading.Thread(target=read, name="jobs-executor-reader", daemon=True).start()
    return jobs
