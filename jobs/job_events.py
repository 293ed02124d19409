"""
What happens to jobs as it happens: each one's enqueue, start, retry and
finish, for `manage.py jobs tail`.

Nothing is added to the path of a job for it. Finishes and retries come
from the notifications every path that ends a job or an attempt sends
(FINISHED_CHANNEL, with the ids); enqueues wake the tail through the
workers' own READY notifications and are read by id, which is a UUIDv7 and
so grows with the enqueue time; starts are told by the RUNNING jobs, read
from their partial
index (as many rows as run now) at each wake and at least every POLL
seconds. A tail costs the database a LISTEN and three small reads a wake.
"""

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import psycopg
from django.utils import timezone

from . import queries
from .ids import uuid7_floor
from .models import FINISHED_STATUSES

# Seconds between reads when nothing wakes the tail.
POLL = 0.5
# How far back each read of new jobs goes: an id is made by the process that
# enqueues, before its transaction commits, so a job can appear after
# younger ones. Each is told once, however many reads see it.
LATE_COMMIT = timedelta(seconds=5)
# New jobs read at most at once: a burst larger than that is told over the
# next reads.
NEW_JOBS_PER_READ = 5000


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened to a job, with what a person watching wants beside it."""

    event: str  # "enqueued", "started", "retrying" or "finished"
    at: datetime
    id: str
    task_path: str
    queue: str
    status: str
    attempt: int
    max_attempts: int
    worker: str | None = None
    error: str | None = None
    due: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TailFilter:
    """Which jobs a tail tells of; a status keeps the events that leave a job in it."""

    queue: str | None = None
    task_path: str | None = None
    status: str | None = None
    tags: Sequence[str] = ()

    def keeps(self, event: JobEvent, tags: Iterable[str]) -> bool:
        return (
            (self.queue is None or event.queue == self.queue)
            and (self.task_path is None or event.task_path == self.task_path)
            and (self.status is None or event.status == self.status)
            and set(self.tags) <= set(tags)
        )


class JobTail:
    """The events of jobs from the moment it starts, on a connection of its own."""

    def __init__(self, connection: psycopg.Connection, only: TailFilter) -> None:
        self.connection = connection
        self.only = only
        # New jobs told, by id, with their enqueue time (kept LATE_COMMIT).
        self.told: dict[str, datetime] = {}
        self.begun = self.newest = timezone.now()
        # (id, attempt) of the RUNNING jobs last read.
        self.running: dict[tuple[str, int], tuple] = {}
        self.started: set[tuple[str, int]] = set()

    def start(self) -> None:
        """Listen first and read second, so that nothing between the two is missed."""
        for channel in (
            queries.channels.READY_CHANNEL,
            queries.channels.LIMITED_READY_CHANNEL,
            queries.channels.FINISHED_CHANNEL,
        ):
            self.connection.execute(f"LISTEN {channel}")
        self.running = self._read_running()
        self.started = set(self.running)

    def events(self, timeout: float = POLL) -> list[JobEvent]:
        """What happened since the last call, oldest first, waiting up to `timeout` for it."""
        finished = self._wait(timeout)
        events: list[tuple[JobEvent, tuple[str, ...]]] = list(self._enqueued())
        running = self._read_running()
        for key, row in running.items():
            if key not in self.started:
                self.started.add(key)
                events.append(_started(row))
        left = {job_id for (job_id, _) in self.running.keys() - running.keys()}
        self.running = running
        for row in self._fetch(queries.observe.TAIL_JOBS_BY_ID, {"ids": sorted(finished | left)}):
            events += self._ended(row)
        order = {"enqueued": 0, "started": 1, "retrying": 2, "finished": 2}
        kept = [event for event, tags in events if self.only.keeps(event, tags)]
        return sorted(kept, key=lambda event: (event.at, order[event.event]))

    def _wait(self, timeout: float) -> set[str]:
        """The ids of finished jobs announced within `timeout` (at the first, the rest at once)."""
        finished: set[str] = set()
        deadline = time.monotonic() + timeout
        for stop_after, wait in ((1, timeout), (None, 0.01)):
            for notify in self.connection.notifies(timeout=wait, stop_after=stop_after):
                if notify.channel == queries.channels.FINISHED_CHANNEL:
                    finished.update(notify.payload.split(","))
            if time.monotonic() >= deadline:
                break
        return finished

    def _enqueued(self) -> Iterable[tuple[JobEvent, tuple[str, ...]]]:
        since = self.newest - LATE_COMMIT
        rows = self._fetch(
            queries.observe.TAIL_NEW_JOBS,
            {"after": str(uuid7_floor(since)), "limit": NEW_JOBS_PER_READ},
        )
        self.told = {job_id: at for job_id, at in self.told.items() if at >= since}
        for job_id, task_path, queue, status, _, max_attempts, tags, at, due in rows:
            if job_id in self.told or at < self.begun:
                continue
            self.told[job_id] = at
            # As it was enqueued, whatever it has become since.
            status = "WAITING" if status == "WAITING" else "READY"
            event = JobEvent("enqueued", at, job_id, task_path, queue, status, 0, max_attempts)
            yield replace(event, due=due if due > at else None), tags
        self.newest = max([self.newest, *self.told.values()])

    def _ended(self, row: tuple) -> list[tuple[JobEvent, tuple[str, ...]]]:
        """A job that left RUNNING or finished: its retry, or its finish (and a start unseen)."""
        (job_id, task_path, queue, status, attempts, max_attempts, tags, started_at,
         finished_at, due, error, worker) = row  # fmt: skip
        events = []
        if attempts and (job_id, attempts) not in self.started and started_at is not None:
            events.append(_started((*row[:8], worker))[0])
        self.started.discard((job_id, attempts))
        common = (job_id, task_path, queue, status, attempts, max_attempts)
        if status in FINISHED_STATUSES:
            failed = status != "SUCCESSFUL"
            events.append(
                JobEvent("finished", finished_at, *common, worker, error if failed else None)
            )
        elif status == "READY" and attempts:
            at = timezone.now()
            events.append(JobEvent("retrying", at, *common, worker, error, due))
        return [(event, tags) for event in events]

    def _read_running(self) -> dict[tuple[str, int], tuple]:
        rows = self._fetch(queries.observe.TAIL_RUNNING_JOBS)
        return {(row[0], row[4]): row for row in rows}

    def _fetch(self, statement: str, params: dict[str, Any] | None = None) -> list[tuple]:
        return self.connection.execute(statement, params).fetchall()


def _started(row: tuple) -> tuple[JobEvent, tuple[str, ...]]:
    job_id, task_path, queue, _, attempts, max_attempts, tags, started_at, worker = row
    event = JobEvent(
        "started", started_at, job_id, task_path, queue, "RUNNING", attempts, max_attempts, worker
    )
    return event, tags
