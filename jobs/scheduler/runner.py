"""
The scheduler: turns due schedules into jobs, one job per tick.

Each pass is one transaction on the queue's database: claim the due schedules
(jobs/sql.py CLAIM_SCHEDULES), enqueue each tick's job through the task
backend (so it gets the task's options and its NOTIFY like any other job),
and move next_run_at past the ticks (ADVANCE_SCHEDULES). A pass that fails
rolls back whole: the ticks stay due and the next pass enqueues them.

Between passes the scheduler sleeps until the next tick is due, a schedule is
saved (NOTIFY on jobs_schedules), or the poll interval runs out.
"""

import logging
import os
import select
import signal
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from django.db import DatabaseError, connections, transaction
from django.tasks.exceptions import InvalidTask

from .. import sql
from ..backend import PostgresBackend
from ..models import CatchUp, Schedule
from ..stop_signals import StopSignals
from ..worker.database import connection_params, describe
from .declared import sync_declared
from .timing import Timing, TimingError

logger = logging.getLogger("jobs.scheduler")

# A tick up to this late is late, not missed: it runs whatever the catch-up
# policy says. Later than that, it was missed (no scheduler was running), and
# the schedule's catch-up policy decides.
DEFAULT_GRACE = timedelta(seconds=60)
# Schedules claimed per pass; a full pass is followed at once by another.
PASS_LIMIT = 100
# On-time ticks one schedule may enqueue in one pass.
MAX_TICKS_PER_PASS = 1000
DEFAULT_POLL_INTERVAL = 60.0
RECONNECT_BACKOFF_MAX = 10.0
DATABASE_ERRORS = (DatabaseError, psycopg.OperationalError, psycopg.InterfaceError)


@dataclass(frozen=True)
class Plan:
    """The ticks one pass enqueues for a schedule, and its next_run_at afterwards."""

    ticks: list[datetime]
    next_run_at: datetime | None


def plan_ticks(
    timing: Timing,
    next_run_at: datetime,
    now: datetime,
    *,
    catch_up: str = CatchUp.LATEST,
    catch_up_window: timedelta = timedelta(days=1),
    grace: timedelta = DEFAULT_GRACE,
) -> Plan:
    """
    Which due ticks (next_run_at .. now) to enqueue.

    Ticks no older than `grace` all run. Older ones were missed: with
    catch_up="skip" none of them runs; with "latest" the most recent due tick
    runs once, unless it is older than `catch_up_window`.
    """
    on_time_from = max(next_run_at, now - grace)
    ticks = [next_run_at] if next_run_at >= on_time_from else []
    start = ticks[-1] if ticks else on_time_from - timedelta(microseconds=1)
    for tick in timing.ticks_after(start, next_run_at):
        if tick > now:
            break
        if len(ticks) == MAX_TICKS_PER_PASS:
            # The rest stay due for the next pass.
            return Plan(ticks, tick)
        ticks.append(tick)
    if not ticks and catch_up == CatchUp.LATEST:
        latest = timing.latest_at_or_before(now, next_run_at)
        if latest is not None and latest >= next_run_at and latest >= now - catch_up_window:
            ticks.append(latest)
    return Plan(ticks, timing.next_after(now, next_run_at))


def unique_key(schedule_id: int, tick: datetime) -> str:
    """schedule:<id>:<tick in UTC>, the unique key of a tick's job."""
    return f"schedule:{schedule_id}:{tick.strftime('%Y-%m-%dT%H:%M:%SZ')}"


@dataclass(frozen=True)
class Enqueued:
    schedule: str
    tick: datetime
    job_id: str


class Scheduler:
    """One `runscheduler` process. Run as many as you like: each tick gets one job."""

    def __init__(
        self,
        backend: PostgresBackend,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        grace: timedelta = DEFAULT_GRACE,
    ) -> None:
        self.backend = backend
        self.database = backend.database
        self.poll_interval = poll_interval
        self.grace = grace
        self.listener: psycopg.Connection | None = None
        self.stopping = False
        self.reconnect_delay = 0.5
        self.stop_signals = StopSignals()

    # One pass; tests call it with an injected `now`.

    def run_due(self, now: datetime | None = None) -> tuple[int, list[Enqueued]]:
        """Enqueue the jobs of every due tick; return (schedules claimed, jobs enqueued)."""
        enqueued = []
        with transaction.atomic(using=self.database):
            schedules = list(
                Schedule.objects.db_manager(self.database).raw(
                    sql.CLAIM_SCHEDULES, {"now": now, "limit": PASS_LIMIT}
                )
            )
            advances = []
            for schedule in schedules:
                plan = self._plan(schedule, schedule.claimed_at)
                for tick in plan.ticks:
                    job_id = self._enqueue(schedule, tick)
                    if job_id is not None:
                        enqueued.append(Enqueued(schedule.name, tick, job_id))
                advances.append(
                    (schedule.id, plan.next_run_at, plan.ticks[-1] if plan.ticks else None)
                )
            if advances:
                with connections[self.database].cursor() as cursor:
                    cursor.execute(
                        sql.ADVANCE_SCHEDULES,
                        {
                            "ids": [schedule_id for schedule_id, _, _ in advances],
                            "next_run_at": [next_run_at for _, next_run_at, _ in advances],
                            "last_run_at": [last_run_at for _, _, last_run_at in advances],
                        },
                    )
        for item in enqueued:
            logger.info(
                "Schedule %r: enqueued job %s for tick %s",
                item.schedule,
                item.job_id,
                item.tick.isoformat(),
            )
        return len(schedules), enqueued

    def _plan(self, schedule: Schedule, now: datetime) -> Plan:
        try:
            timing = schedule.timing()
        except TimingError as error:
            logger.error(
                "Schedule %r is invalid (%s): disabled until it is fixed", schedule.name, error
            )
            return Plan([], None)
        plan = plan_ticks(
            timing,
            schedule.next_run_at,
            now,
            catch_up=schedule.catch_up,
            catch_up_window=timedelta(seconds=schedule.catch_up_window),
            grace=self.grace,
        )
        if not plan.ticks or plan.ticks[0] != schedule.next_run_at:
            logger.warning(
                "Schedule %r: ticks missed since %s (catch-up %s): %s",
                schedule.name,
                schedule.next_run_at.isoformat(),
                schedule.catch_up,
                f"running {plan.ticks[0].isoformat()}" if plan.ticks else "none runs",
            )
        return plan

    def _enqueue(self, schedule: Schedule, tick: datetime) -> str | None:
        """Enqueue one tick's job in the pass's transaction; None if the task cannot be."""
        try:
            task = self.backend.load_task(schedule.task_path).using(
                queue_name=schedule.queue,
                priority=schedule.priority,
                run_after=tick,
                backend=self.backend.alias,
                unique_key=unique_key(schedule.id, tick),
            )
            result = task.enqueue(*schedule.args, **schedule.kwargs)
        except (InvalidTask, TypeError) as error:
            logger.error(
                "Schedule %r: tick %s not enqueued: %s", schedule.name, tick.isoformat(), error
            )
            return None
        return result.id

    # The loop.

    def run(self) -> None:
        self.stop_signals.install(self._on_stop_signal)
        report = sync_declared(self.database)
        logger.info(
            "Scheduler %s-%d started: %d schedule(s), %d enabled; declared in code: "
            "%d created, %d updated, %d disabled; database %s",
            socket.gethostname(),
            os.getpid(),
            Schedule.objects.using(self.database).count(),
            Schedule.objects.using(self.database).filter(enabled=True).count(),
            len(report.created),
            len(report.updated),
            len(report.disabled),
            describe(self.database),
        )
        while not self.stopping:
            try:
                timeout = self._step()
            except DATABASE_ERRORS as error:
                timeout = self._lost_database(error)
            self._wait(timeout)
        self._close()
        logger.info("Scheduler stopped")

    def _step(self) -> float:
        """One pass; return how long to sleep before the next."""
        connections[self.database].close_if_unusable_or_obsolete()
        if self.listener is None:
            self._listen()
        self._drain()
        claimed, _ = self.run_due()
        if claimed == PASS_LIMIT:
            return 0.0
        (seconds,) = self.listener.execute(sql.SECONDS_UNTIL_NEXT_TICK).fetchone()
        if self._drain():
            # A schedule was saved while we looked: look again.
            return 0.0
        if seconds is None:
            return self.poll_interval
        if seconds <= 0 and not claimed:
            # Due, but another scheduler holds it right now: look again shortly.
            return 0.05
        return min(max(seconds, 0.0), self.poll_interval)

    def _listen(self) -> None:
        params = connection_params(self.database)
        params.setdefault("application_name", f"jobs scheduler {socket.gethostname()}")
        params.setdefault("connect_timeout", 5)
        self.listener = psycopg.connect(**params, autocommit=True)
        self.listener.execute(f"LISTEN {sql.SCHEDULES_CHANNEL}")
        if self.reconnect_delay > 0.5:
            logger.info("Database reachable again")
        self.reconnect_delay = 0.5

    def _drain(self) -> bool:
        """Consume the pending notifications; whether there were any."""
        return sum(1 for _ in self.listener.notifies(timeout=0)) > 0

    def _wait(self, timeout: float) -> None:
        if timeout <= 0 or self.stopping:
            return
        waitables = [self.stop_signals.reader]
        if self.listener is not None:
            waitables.append(self.listener.fileno())
        ready, _, _ = select.select(waitables, [], [], timeout)
        self.stop_signals.drain(ready)

    def _lost_database(self, error: Exception) -> float:
        message = str(error).strip().splitlines()
        logger.error(
            "Database error (%s); retrying in %.1f s",
            message[0] if message else type(error).__name__,
            self.reconnect_delay,
        )
        self._close()
        delay = self.reconnect_delay
        self.reconnect_delay = min(self.reconnect_delay * 2, RECONNECT_BACKOFF_MAX)
        return delay

    def _close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        connections[self.database].close()

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        logger.info("%s: stopping after this pass", signal.Signals(signum).name)
        self.stopping = True
