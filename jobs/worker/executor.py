"""
The executor process: runs the jobs its coordinator hands it, in order, one at
a time or, with threads, as many at once.

Jobs and outcomes cross the pipe as plain tuples with their JSON still as
text: decoding and encoding happen here, in the executors, so the coordinator
(one process for the whole pool) does as little per job as possible.
"""

import ctypes
import json
import logging
import os
import pickle
import random
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from queue import Empty, SimpleQueue
from typing import Any, NamedTuple

import django
from django.db import close_old_connections
from django.tasks import TaskContext, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task, TaskError
from django.tasks.signals import task_finished, task_started
from django.utils.json import normalize_json

from ..exceptions import DoNotRetry, RetryJob
from ..jsonb import storable_text, unstorable

logger = logging.getLogger("jobs.worker")

PR_SET_PDEATHSIG = 1
# A job whose task does not load here waits a tenth of the time it has waited
# so far, within these bounds (seconds), for a worker that can load it.
MISSING_TASK_DELAY_MIN = 1.0
MISSING_TASK_DELAY_MAX = 60.0


def send_message(conn: Connection, message: object) -> None:
    """
    Send one message over a coordinator-executor pipe.

    pickle.dumps in C, then the bytes: Connection.send() builds a Python-level
    ForkingPickler for every message, which cost more than the no-op job
    it carried. The messages are tuples of plain values and never need its
    reducers.
    """
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def receive_message(conn: Connection) -> Any:
    return pickle.loads(conn.recv_bytes())


class ClaimedJob(NamedTuple):
    """One claimed attempt, as CLAIM returns it (JSON as text, times as epoch seconds)."""

    id: str
    backend: str
    task_path: str
    queue: str
    priority: int
    run_at: float
    args: str
    kwargs: str
    attempt: int
    max_attempts: int
    timeout: float | None
    enqueued_at: float
    started_at: float
    last_attempted_at: float
    worker_ids: list[str]
    errors: str
    run_after: float | None


class Outcome(NamedTuple):
    """
    How one attempt ended. The fields before `duration` are COMPLETE's
    columns, in its order: the coordinator sends them as they are.
    """

    id: str
    attempt: int
    # SUCCESSFUL, FAILED, READY for a retry, SKIPPED for a job the
    # coordinator withdrew before it started (cancelled, rescued, or shutting
    # down), or POSTPONED for one whose task does not load here: the
    # coordinator gives the last two back with a fenced release, their
    # attempt not spent, a POSTPONED one due at retry_at.
    status: str
    finished_at: float  # epoch seconds
    retry_at: float | None  # epoch seconds, for status READY and POSTPONED
    return_value: str | None  # JSON text
    error: str | None  # JSON text of one errors entry; POSTPONED: why, as plain text
    duration: float  # seconds the attempt ran


class RetryPolicy(NamedTuple):
    """Exponential backoff with equal jitter: the gaps never shrink."""

    base: float
    cap: float

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def loads(text: str) -> Any:
    """json.loads, without its cost for the empty list and object that most jobs carry."""
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return json.loads(text)


def as_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def error_entry(
    exception_class_path: str,
    message: str,
    traceback_text: str,
    attempt: int,
    worker_id: str,
) -> str:
    # jsonb cannot hold a NUL or a lone surrogate, and one in a message
    # would make the whole batch of outcomes fail to write.
    return json.dumps(
        {
            "exception_class_path": exception_class_path,
            "message": storable_text(message),
            "traceback": storable_text(traceback_text),
            "attempt": attempt,
            "worker_id": worker_id,
            "at": time.time(),
        }
    )


def failed_outcome(
    job: ClaimedJob,
    *,
    exception_class_path: str,
    message: str,
    traceback_text: str,
    worker_id: str,
    retry: RetryPolicy | None,
    duration: float,
    retry_in: float | None = None,
) -> Outcome:
    """The outcome of a failed attempt: a retry while attempts remain, else FAILED."""
    now = time.time()
    retry_at = None
    status = "FAILED"
    if retry is not None and job.attempt < job.max_attempts:
        status = "READY"
        retry_at = now + (retry.delay(job.attempt) if retry_in is None else retry_in)
    return Outcome(
        job.id,
        job.attempt,
        status,
        now,
        retry_at,
        None,
        error_entry(exception_class_path, message, traceback_text, job.attempt, worker_id),
        duration,
    )


class JobRunner:
    """Runs claimed jobs in this process and says how each ended."""

    def __init__(self, worker_id: str, *, close_connections: bool = True) -> None:
        self.worker_id = worker_id
        # Around each job, Django's connections that are broken or past their
        # age are closed, as around a request. Not inside a test's
        # transaction (jobs.testing), which Django would close with them.
        self.close_connections = close_connections
        self._tasks: dict[tuple[str, str], tuple[Task, BaseTaskBackend]] = {}

    def run(self, job: ClaimedJob) -> Outcome:
        started = time.monotonic()
        try:
            task, backend = self._task(job)
        except Exception as error:
            return self._task_missing(job, error)
        args, kwargs = loads(job.args), loads(job.kwargs)
        result = self._task_result(job, task, args, kwargs)
        if self.close_connections:
            close_old_connections()
        task_started.send(sender=type(backend), task_result=result)
        # Any BaseException a task raises (SystemExit, KeyboardInterrupt, a
        # custom one) fails its attempt, as in Django's ImmediateBackend, and
        # the executor goes on: only the death of the process is ExecutorDied.
        # task_finished is sent inside the except clause, so that Django's
        # own receiver logs the exception with its traceback.
        try:
            if task.takes_context:
                value = task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
            value = normalize_json(value)
            return_value = json.dumps(value, allow_nan=False, ensure_ascii=False)
            if reason := unstorable(return_value):
                raise ValueError(
                    f"The return value holds {reason}, which Postgres cannot store in jsonb."
                )
        except BaseException as error:
            retry = RetryPolicy(
                backend.config["RETRY_BACKOFF_BASE"], backend.config["RETRY_BACKOFF_MAX"]
            )
            outcome = failed_outcome(
                job,
                exception_class_path=_class_path(type(error)),
                message=exception_message(error),
                traceback_text="".join(traceback.format_exception(error)),
                worker_id=self.worker_id,
                retry=None if isinstance(error, DoNotRetry) else retry,
                duration=time.monotonic() - started,
                retry_in=error.countdown if isinstance(error, RetryJob) else None,
            )
            self._finished(backend, result, outcome, error=error)
        else:
            outcome = Outcome(
                job.id,
                job.attempt,
                "SUCCESSFUL",
                time.time(),
                None,
                return_value,
                None,
                time.monotonic() - started,
            )
            self._finished(backend, result, outcome, value=value)
        finally:
            if self.close_connections:
                close_old_connections()
        return outcome

    def _task(self, job: ClaimedJob) -> tuple[Task, BaseTaskBackend]:
        """The task and its backend, looked up once per process."""
        key = (job.backend, job.task_path)
        found = self._tasks.get(key)
        if found is None:
            from django.tasks import task_backends

            task = task_backends[job.backend].load_task(job.task_path)
            found = self._tasks[key] = (task, task.get_backend())
        return found

    def _task_missing(self, job: ClaimedJob, error: Exception) -> Outcome:
        """
        The outcome of a job whose task does not load on this worker.

        In a rolling deploy the web may run code that this worker has not
        got yet: the job goes back to READY, its attempt not spent, and waits
        with a backoff for a worker that has it, MISSING_TASK_GRACE seconds
        from when it was first due (or last failed). Only then does it fail.
        """
        from django.tasks import task_backends

        grace = task_backends[job.backend].config["MISSING_TASK_GRACE"]
        errors = loads(job.errors)
        waiting_since = max(
            [job.run_after or job.enqueued_at, *(entry.get("at", 0.0) for entry in errors)]
        )
        now = time.time()
        waited = now - waiting_since
        message = exception_message(error)
        if grace is not None and waited >= grace:
            return failed_outcome(
                job,
                exception_class_path=_class_path(type(error)),
                message=(
                    f"{message} (no worker could load the task for {waited:.0f} s, "
                    f"MISSING_TASK_GRACE is {grace:.0f} s)"
                ),
                traceback_text="".join(traceback.format_exception(error)),
                worker_id=self.worker_id,
                retry=None,
                duration=0.0,
            )
        delay = min(MISSING_TASK_DELAY_MAX, max(MISSING_TASK_DELAY_MIN, waited / 10))
        return Outcome(job.id, job.attempt, "POSTPONED", now, now + delay, None, message, 0.0)

    def _task_result(
        self, job: ClaimedJob, task: Task, args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult:
        if job.queue != task.queue_name or job.priority != task.priority or job.run_after:
            task = replace(
                task,
                queue_name=job.queue,
                priority=job.priority,
                run_after=as_datetime(job.run_after) if job.run_after else None,
            )
        errors = loads(job.errors)
        return TaskResult(
            task=task,
            id=job.id,
            status=TaskResultStatus.RUNNING,
            enqueued_at=as_datetime(job.enqueued_at),
            started_at=as_datetime(job.started_at),
            last_attempted_at=as_datetime(job.last_attempted_at),
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=job.backend,
            errors=[
                TaskError(
                    exception_class_path=e["exception_class_path"],
                    traceback=e["traceback"],
                )
                for e in errors
            ],
            worker_ids=list(job.worker_ids),
        )

    def _finished(
        self,
        backend: BaseTaskBackend,
        result: TaskResult,
        outcome: Outcome,
        *,
        value: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """
        Send task_finished with the result as the outcome leaves it.

        A failed attempt that will be retried sends status READY and no
        finished_at, since the job is not finished: READY is what get_result()
        reads until the next attempt. Its errors hold this attempt's error.
        """
        object.__setattr__(result, "status", TaskResultStatus(outcome.status))
        if outcome.status != "READY":
            object.__setattr__(result, "finished_at", as_datetime(outcome.finished_at))
        if error is None:
            object.__setattr__(result, "_return_value", value)
        else:
            result.errors.append(
                TaskError(
                    exception_class_path=_class_path(type(error)),
                    traceback="".join(traceback.format_exception(error)),
                )
            )
        task_finished.send(sender=type(backend), task_result=result)


def exception_message(error: BaseException) -> str:
    """str(error), or a stand-in when the exception's own __str__ fails."""
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__}: str() failed>"


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


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
    setup: Callable[[], None] | None,
    parent_pid: int,
    threads: int,
    running: "ctypes.Array[ctypes.c_longlong]",
) -> None:
    """
    The executor process's entry point.

    The coordinator sends ("run", [ClaimedJob tuples]), ("skip", (job id,
    attempt)) for a job it wants left unstarted, and finally None. Jobs start
    in the order they came, each on the next free thread, and both sides
    number them so in that order, from 1. While a thread runs a job, its slot
    of `running`, memory shared with the coordinator, holds the job's number,
    and the last slot the highest number taken so far (see WaitingJobs):
    that is how the coordinator knows which jobs run now (their timeout
    clocks) and, when an executor dies, which jobs it had begun. Outcomes go
    back in batches (see OutcomeSender).

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
    runner = JobRunner(worker_id)
    sender = OutcomeSender(conn)
    jobs = start_reader(conn, sender, running)

    def run_jobs(slot: int) -> None:
        # take() sets the slot as the job leaves the queue; it is cleared
        # before the outcome is queued: a job whose number is in a slot has
        # begun and has no outcome on the way. A thread that ends otherwise
        # (sys.exit() in a task, a failing signal receiver) takes the process
        # with it, so the coordinator sees the executor die and fails the job
        # in its slot, instead of waiting for ever on a silent thread.
        with exit_on_failure("a job ended its thread"):
            while (job := jobs.take(slot)) is not None:
                outcome = runner.run(job)
                running[slot] = 0
                sender.put(outcome)

    others = [
        threading.Thread(target=run_jobs, args=(slot,), name=f"jobs-executor-{slot}", daemon=True)
        for slot in range(1, threads)
    ]
    for thread in others:
        thread.start()
    run_jobs(0)
    for thread in others:
        thread.join()
    sender.close()


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

    A job leaves it exactly once, under the lock: taken by a thread to run, or
    withdrawn on the coordinator's request. So a job that was withdrawn never
    starts, and a job that started is never answered as skipped. Taking a job
    writes, under the same lock, its number into the thread's slot and into
    the last slot, which so holds the highest number ever taken: every job
    numbered up to it either began, or was withdrawn.
    """

    def __init__(self, running: "ctypes.Array[ctypes.c_longlong]") -> None:
        self._jobs: OrderedDict[tuple[str, int], tuple[int, ClaimedJob]] = OrderedDict()
        self._running = running
        self._received = 0
        self._ended = False
        self._ready = threading.Condition()

    def add(self, jobs: list[ClaimedJob]) -> None:
        with self._ready:
            for job in jobs:
                self._received += 1
                self._jobs[job.id, job.attempt] = (self._received, job)
            self._ready.notify(len(jobs))

    def withdraw(self, key: tuple[str, int]) -> ClaimedJob | None:
        with self._ready:
            _, job = self._jobs.pop(key, (0, None))
            return job

    def end(self) -> None:
        """Every thread gets None once the waiting jobs are taken."""
        with self._ready:
            self._ended = True
            self._ready.notify_all()

    def take(self, slot: int) -> ClaimedJob | None:
        with self._ready:
            while not self._jobs and not self._ended:
                self._ready.wait()
            if not self._jobs:
                return None
            number, job = self._jobs.popitem(last=False)[1]
            self._running[slot] = number
            self._running[-1] = number
            return job


def start_reader(
    conn: Connection, sender: OutcomeSender, running: "ctypes.Array[ctypes.c_longlong]"
) -> WaitingJobs:
    """
    Read the coordinator's messages in a thread of their own, as they come.

    Both ends of the pipe write blocking: were this process to read only
    between jobs, a coordinator sending a large claim and an executor sending
    outcomes could each wait, for ever, for the other to read. The reader
    keeps this end drained. A skip is answered here, at once, for a job that
    still waits; one that has started by then runs to its end (its outcome is
    the answer), since a thread cannot be stopped.
    """
    jobs = WaitingJobs(running)

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
                    jobs.add([ClaimedJob(*row) for row in body])
                elif (job := jobs.withdraw(tuple(body))) is not None:
                    sender.put(
                        Outcome(job.id, job.attempt, "SKIPPED", time.time(), None, None, None, 0.0)
                    )

    threading.Thread(target=read, name="jobs-executor-reader", daemon=True).start()
    return jobs
