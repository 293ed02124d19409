"""
Async tasks on an event loop, many at once in one executor process
(`runworker --async-slots N`), beside its threads.

The loop has N slots after the threads' in the memory the executor shares
with its coordinator (executor.WaitingJobs), one per coroutine, so the
coordinator sees which async jobs run as it sees the threads' jobs, and
accounts for them the same way when the executor dies. Jobs still start in
the order they came: the loop takes the first waiting job when it is async,
the threads when it is not.

A coroutine past its timeout is cancelled here (it fails with JobTimeout,
retried as its task says); one that blocks the loop cannot be, and the
coordinator kills the executor executor_handle.ASYNC_TIMEOUT_GRACE seconds later, as it
kills a thread's job at its timeout. A cancelled job's task is told at once
(jobs.cancellation) and its coroutine cancelled halfway through the
backend's CANCEL_GRACE, before the coordinator would kill the process.
"""

import asyncio
import ctypes
import logging
import os
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import cancellation
from ..exceptions import JobCancelled, class_path
from .attempts import failed_outcome
from .job_runner import JobRunner, job_backend
from .protocol import ClaimedJob

logger = logging.getLogger("jobs.worker")


class AsyncSlots:
    """The event loop of an executor and the async jobs it runs, one per slot."""

    def __init__(
        self,
        slots: Sequence[int],
        # The executor's WaitingJobs and OutcomeSender (jobs.worker.executor,
        # which imports this module).
        jobs: Any,
        runner: JobRunner,
        sender: Any,
        running: "ctypes.Array[ctypes.c_longlong]",
    ) -> None:
        self.free = list(slots)
        self.jobs = jobs
        self.runner = runner
        self.sender = sender
        self.running = running
        self.tasks: dict[tuple[str, int], tuple[asyncio.Task, ClaimedJob]] = {}

    def run(self) -> None:
        """
        The loop's thread: run async jobs until the coordinator sends no more.
        A loop that fails ends the executor, as a job thread does.
        """
        try:
            asyncio.run(self._serve())
        except BaseException:
            logger.exception("Executor %s: its event loop failed; exiting", os.getpid())
            os._exit(70)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        room = asyncio.Semaphore(len(self.free))
        self.jobs.on_cancel = lambda key: loop.call_soon_threadsafe(self._cancel, key)
        # take() blocks until an async job comes first: in a thread of its own.
        with ThreadPoolExecutor(1, thread_name_prefix="jobs-executor-loop-taker") as taker:
            while True:
                await room.acquire()
                slot = self.free.pop()
                job = await loop.run_in_executor(taker, self.jobs.take, slot, True)
                if job is None:
                    break
                task = asyncio.create_task(self._run(slot, job, room))
                self.tasks[job.id, job.attempt] = (task, job)
                # A cancel that came before the task was known here.
                if self.jobs.cancel_request(job).is_set():
                    self._cancel((job.id, job.attempt))
        if self.tasks:
            await asyncio.wait([task for task, _ in self.tasks.values()])

    async def _run(self, slot: int, job: ClaimedJob, room: asyncio.Semaphore) -> None:
        """
        One async job in its slot. Its outcome always goes back: a coroutine
        cancelled before its task's code ran (a cancel as it starts) fails
        its attempt, and a failure of this code itself ends the executor, as
        a job thread's does, for the coordinator to account for the job.
        """
        started = time.monotonic()
        try:
            with cancellation.watching(self.jobs.cancel_request(job)):
                outcome = await self.runner.arun(job)
        except asyncio.CancelledError as error:
            outcome = failed_outcome(
                job,
                exception_class_path=class_path(JobCancelled),
                message="Cancelled as it started",
                traceback_text="".join(traceback.format_exception(error)),
                worker_id=self.runner.worker_id,
                duration=time.monotonic() - started,
                retry_in=None,
                reason="not retried: the job was cancelled",
            )
        except BaseException:
            logger.exception("Executor %s: its event loop failed a job; exiting", os.getpid())
            os._exit(70)
        finally:
            self.tasks.pop((job.id, job.attempt), None)
            self.jobs.ended(job)
            self.running[slot] = 0
            self.free.append(slot)
            room.release()
        self.sender.put(outcome)

    def _cancel(self, key: tuple[str, int]) -> None:
        """A cancel of a running job: its coroutine is cancelled halfway through the grace."""
        found = self.tasks.get(key)
        if found is None:
            return
        task, job = found
        try:
            grace = job_backend(job.backend).queue_options.cancel_grace
        except Exception:
            grace = job_backend(self.runner.backend).queue_options.cancel_grace
        asyncio.get_running_loop().call_later(grace / 2, task.cancel)
