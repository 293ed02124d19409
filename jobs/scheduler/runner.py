"""
The scheduler: turns due schedules into jobs, one job per tick.

Each pass is one transaction on the queue's database: claim the due schedules
(jobs/queries/schedules.py CLAIM_SCHEDULES), enqueue each tick's job through the task
backend (so it gets the task's options and its NOTIFY like any other job),
and move next_run_at past the ticks (ADVANCE_SCHEDULES). A pass that fails
rolls back whole: the ticks stay due and the next pass enqueues them.

Between passes the scheduler sleeps until the next tick is due, a schedule is
saved (NOTIFY on jobs_schedules), or the poll interval runs out. Without a
database it waits for one, retrying with backoff, and carries on when it
answers: a scheduler started before Postgres, or across its restart, needs no
restart of its own.
"""

import logging
import os
import select
import signal
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from django.db import DatabaseError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from .. import queries
from ..backend import PostgresBackend
from ..health import HealthFile
from ..models import CatchUp, Schedule
from ..schedules import Timing, schedule_errors
from ..stop_signals import StopSignals
from ..worker.connection import Backoff, connection_params, describe, first_line
from .declared import sync_declared

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
# Seconds between attempts to reach the database: doubling from the first,
# at most the last, so a scheduler resumes within seconds of Postgres.
RETRY_DELAY_MIN = 0.5
RETRY_DELAY_MAX = 5.0
DATABASE_ERRORS = (DatabaseError, psycopg.OperationalError, psycopg.InterfaceError)
# The fields without which a schedule has no ticks at all.
TIMING_FIELDS = ("cron", "interval", "time_zone")


class CannotConnect(Exception):
    """The database did not accept a connection; the cause says why."""


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
        health_file: str | None = None,
    ) -> None:
        self.backend = backend
        self.health = HealthFile(health_file)
        self.database = backend.database
        self.poll_interval = poll_interval
        self.grace = grace
        self.listener: psycopg.Connection | None = None
        self.started = False
        self.stopping = False
        self.backoff = Backoff(RETRY_DELAY_MIN, RETRY_DELAY_MAX)
        # Whether the database is refusing connections and this was logged.
        self.waiting = False
        # Schedule id -> what is wrong with it, as logged: an invalid schedule
        # is logged when it is first claimed and when its problem changes,
        # not at every tick.
        self.invalid: dict[int, str] = {}
        self.stop_signals = StopSignals()

    # One pass; tests call it with an injected `now`.

    def run_due(self, now: datetime | None = None) -> tuple[int, list[Enqueued]]:
        """Enqueue the jobs of every due tick; return (schedules claimed, jobs enqueued)."""
        enqueued = []
        with transaction.atomic(using=self.database):
            schedules = list(
                Schedule.objects.db_manager(self.database).raw(
                    queries.schedules.CLAIM_SCHEDULES, {"now": now, "limit": PASS_LIMIT}
                )
            )
            advances = []
            for schedule in schedules:
                plan = self._plan(schedule, schedule.claimed_at)
                for tick in plan.ticks:
                    job_id = self._enqueue(schedule, tick)
                    enqueued.append(Enqueued(schedule.name, tick, job_id))
                advances.append(
                    (schedule.id, plan.next_run_at, plan.ticks[-1] if plan.ticks else None)
                )
            if advances:
                with connections[self.database].cursor() as cursor:
                    cursor.execute(
                        queries.schedules.ADVANCE_SCHEDULES,
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
        """The ticks to enqueue: none for an invalid schedule, whose ticks pass."""
        problems = schedule_errors(schedule, self.backend.alias)
        self._check(schedule, problems)
        if any(field in problems for field in TIMING_FIELDS):
            # No next tick to move to: the row is not claimed again until a
            # save with a valid timing gives it a next_run_at.
            return Plan([], None)
        plan = plan_ticks(
            schedule.timing(),
            schedule.next_run_at,
            now,
            catch_up=schedule.catch_up,
            catch_up_window=timedelta(seconds=schedule.catch_up_window),
            grace=self.grace,
        )
        if problems:
            return Plan([], plan.next_run_at)
        if not plan.ticks or plan.ticks[0] != schedule.next_run_at:
            self._log_missed(schedule, plan, now)
        return plan

    def _check(self, schedule: Schedule, problems: dict[str, str]) -> None:
        """
        Log what is wrong with a schedule once, not at every tick, and when it
        is fixed. A row that Schedule.save() would refuse can still be there:
        saved before that check existed, written by QuerySet.update() or SQL,
        or valid until its task was removed from the code.
        """
        summary = "; ".join(f"{field}: {message}" for field, message in problems.items())
        if self.invalid.get(schedule.id, "") == summary:
            return
        if not summary:
            del self.invalid[schedule.id]
            logger.info("Schedule %r is valid again: its ticks enqueue jobs", schedule.name)
            return
        self.invalid[schedule.id] = summary
        if any(field in problems for field in TIMING_FIELDS):
            consequence = "it has no next tick until a save gives it a valid timing"
        else:
            consequence = "its ticks pass without a job until it is fixed"
        logger.error("Schedule %r is invalid, %s: %s", schedule.name, consequence, summary)

    def _log_missed(self, schedule: Schedule, plan: Plan, now: datetime) -> None:
        """Say which ticks were missed, more than the grace late, and which of them run."""
        if plan.ticks and plan.ticks[0] >= now - self.grace:
            # The catch-up policy decides nothing here: the ticks within the
            # grace run, the older ones do not.
            outcome = (
                f"the {len(plan.ticks)} tick(s) from {plan.ticks[0].isoformat()} on, "
                "within the grace, run"
            )
        elif plan.ticks:
            outcome = f"catch-up 'latest' runs the latest, {plan.ticks[0].isoformat()}"
        elif schedule.catch_up == CatchUp.LATEST:
            outcome = (
                "none runs: the latest is older than the catch-up window "
                f"({schedule.catch_up_window} s)"
            )
        else:
            outcome = "catch-up 'skip': none of them runs"
        logger.warning(
            "Schedule %r: ticks due since %s were missed, more than %.0f s late; %s",
            schedule.name,
            schedule.next_run_at.isoformat(),
            self.grace.total_seconds(),
            outcome,
        )

    def _enqueue(self, schedule: Schedule, tick: datetime) -> str:
        """
        Enqueue one tick's job in the pass's transaction; its id.

        _plan gave ticks only to a schedule that passed schedule_errors, the
        checks the backend makes here, so nothing is refused.
        """
        task = self.backend.load_task(schedule.task_path).using(
            queue_name=schedule.queue,
            priority=schedule.priority,
            run_after=tick,
            backend=self.backend.alias,
            unique_key=unique_key(schedule.id, tick),
        )
        return task.enqueue(*schedule.args, **schedule.kwargs).id

    # The loop.

    def run(self) -> None:
        """Sync the declared schedules and run passes until SIGTERM or SIGINT."""
        self.stop_signals.install(self._on_stop_signal)
        connection_created.connect(self._configure_session)
        try:
            while not self.stopping:
                try:
                    timeout = self._step()
                except CannotConnect as error:
                    timeout = self._cannot_connect(error.__cause__)
                except DATABASE_ERRORS as error:
                    timeout = self._database_error(error)
                self._wait(timeout)
            self._close()
        finally:
            connection_created.disconnect(self._configure_session)
            self.health.remove()
        logger.info("Scheduler stopped")

    def _step(self) -> float:
        """One pass; return how long to sleep before the next."""
        if self.listener is None:
            self._connect()
        if not self.started:
            self._start()
        connections[self.database].close_if_unusable_or_obsolete()
        self._drain()
        claimed, _ = self.run_due()
        self.backoff.reset()
        if claimed == PASS_LIMIT:
            return 0.0
        (seconds,) = self.listener.execute(queries.schedules.SECONDS_UNTIL_NEXT_TICK).fetchone()
        if self._drain():
            # A schedule was saved while we looked: look again.
            return 0.0
        if seconds is None:
            return self.poll_interval
        if seconds <= 0 and not claimed:
            # Due, but another scheduler holds it right now: look again shortly.
            return 0.05
        return min(max(seconds, 0.0), self.poll_interval)

    def _connect(self) -> None:
        """
        Open the LISTEN connection, then the passes' connection; CannotConnect
        if the database does not take them.

        The listener goes first: its connect_timeout bounds the attempt when
        the host does not answer at all.
        """
        params = connection_params(self.database)
        params.setdefault("application_name", f"jobs scheduler {socket.gethostname()}")
        params.setdefault("connect_timeout", 5)
        try:
            self.listener = psycopg.connect(**params, autocommit=True)
            self.listener.execute(f"LISTEN {queries.channels.SCHEDULES_CHANNEL}")
            connections[self.database].ensure_connection()
        except DATABASE_ERRORS as error:
            self._close()
            raise CannotConnect from error
        if self.waiting:
            logger.info(
                "Database %s reachable%s", describe(self.database), " again" if self.started else ""
            )
            self.waiting = False

    def _configure_session(
        self, sender: type, connection: BaseDatabaseWrapper, **kwargs: object
    ) -> None:
        """
        Bound how long a pass can hold its row locks (queries.schedules.SCHEDULER_SESSION),
        on every connection Django opens for the passes, a reconnection too.
        """
        if connection.alias == self.database:
            with connection.cursor() as cursor:
                cursor.execute(queries.schedules.SCHEDULER_SESSION)

    def _start(self) -> None:
        report = sync_declared(self.database)
        for name, problems in report.refused.items():
            logger.error("Schedule %r: its declaration in code was not synced: %s", name, problems)
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
        self.started = True

    def _drain(self) -> bool:
        """Consume the pending notifications; whether there were any."""
        return sum(1 for _ in self.listener.notifies(timeout=0)) > 0

    def _wait(self, timeout: float) -> None:
        """Sleep until timeout, a NOTIFY or a stop signal; the health file kept fresh."""
        waitables = [self.stop_signals.reader]
        if self.listener is not None:
            waitables.append(self.listener.fileno())
        wake_at = time.monotonic() + timeout
        while not self.stopping:
            self.health.beat(ready=self.listener is not None)
            remaining = wake_at - time.monotonic()
            if remaining <= 0:
                return
            ready, _, _ = select.select(waitables, [], [], self.health.wait_limit(remaining))
            self.stop_signals.drain(ready)
            if ready:
                return

    def _cannot_connect(self, error: BaseException) -> float:
        """Log once per outage that the scheduler waits for the database; the next delay."""
        delay = self.backoff.next()
        if self.waiting:
            logger.debug(
                "Database still unreachable (%s); retrying in %.1f s", first_line(error), delay
            )
        else:
            logger.warning(
                "Cannot connect to database %s (%s): waiting for it, retrying every %.0f s at most",
                describe(self.database),
                first_line(error),
                RETRY_DELAY_MAX,
            )
            self.waiting = True
        return delay

    def _database_error(self, error: Exception) -> float:
        """
        A statement failed: whatever the open pass had done is rolled back
        (it logs its ticks only once committed). Reconnect after a delay.
        """
        self._close()
        delay = self.backoff.next()
        logger.error(
            "Database error (%s): reconnecting in %.1f s; a pass it interrupted enqueued nothing",
            first_line(error),
            delay,
        )
        return delay

    def _close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        connections[self.database].close()

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        logger.info("%s: stopping (a pass under way finishes first)", signal.Signals(signum).name)
        self.stopping = True
