"""
Fixtures and helpers of the scheduler tests: schedules made in-process, and
runscheduler subprocesses against the test database.
"""

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.tasks import default_task_backend

from jobs.models import Job, Schedule
from jobs.scheduler.runner import Scheduler
from tests.conftest import ManageProcess, fetch, wait_until

BERLIN = ZoneInfo("Europe/Berlin")

# The moment the in-process tests call "now", or a schedule's next tick.
T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def scheduler(db) -> Scheduler:
    return Scheduler(default_task_backend)


def make_schedule(**fields) -> Schedule:
    fields = {"name": "every-five", "task_path": "tests.tasks.add", "args": [1, 2], **fields}
    if "interval" not in fields:
        fields.setdefault("cron", "*/5 * * * *")
    fields.setdefault("time_zone", "UTC")
    schedule = Schedule(**fields)
    schedule.full_clean()
    schedule.save()
    return schedule


def schedule_jobs(schedule: Schedule) -> list[Job]:
    return list(
        Job.objects.filter(unique_key__startswith=f"schedule:{schedule.id}:").order_by("run_at")
    )


def form_data(schedule: Schedule | None = None, **changes) -> dict[str, str]:
    """The admin form's fields: a valid new schedule, or the given one, with changes."""
    data = {
        "name": "nightly",
        "task_path": "tests.tasks.add",
        "args": "[1, 2]",
        "kwargs": "{}",
        "cron": "0 3 * * *",
        "interval": "",
        "time_zone": "Europe/Berlin",
        "queue": "default",
        "priority": "0",
        "enabled": "on",
        "catch_up": "latest",
        "catch_up_window": "86400",
    }
    if schedule is not None:
        data.update(
            name=schedule.name,
            task_path=schedule.task_path,
            args=str(schedule.args).replace("'", '"'),
            cron=schedule.cron,
            interval="" if schedule.interval is None else str(schedule.interval),
            time_zone=schedule.time_zone,
        )
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


ENQUEUED_LINE = re.compile(r"Schedule '(?P<name>[^']+)': enqueued job \S+ for tick (?P<tick>\S+)")


class SchedulerProcess(ManageProcess):
    """One `runscheduler` subprocess."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__("runscheduler", env, log_path, ["--poll-interval", "5"])

    def wait_started(self, timeout: float = 30.0) -> None:
        def started():
            """the scheduler logged its start"""
            self.check_running()
            return " started: " in self.output()

        wait_until(started, timeout)

    def enqueued(self) -> list[tuple[str, str]]:
        """(schedule name, tick) of every enqueue this scheduler logged."""
        return [(m["name"], m["tick"]) for m in ENQUEUED_LINE.finditer(self.output())]


@pytest.fixture
def start_scheduler(worker_env, tmp_path) -> Iterator[Callable[..., SchedulerProcess]]:
    """Start runscheduler subprocesses; all are killed at the end of the test."""
    schedulers: list[SchedulerProcess] = []

    def start(env: dict[str, str] | None = None, wait: bool = True) -> SchedulerProcess:
        log_path = tmp_path / f"scheduler-{len(schedulers)}.log"
        scheduler = SchedulerProcess(env or worker_env, log_path)
        schedulers.append(scheduler)
        if wait:
            scheduler.wait_started()
        return scheduler

    yield start
    for scheduler in schedulers:
        scheduler.kill()


def ticks_of(name: str, after: datetime | None = None) -> list[datetime]:
    """The run_at (= tick) of every job of a schedule, oldest first."""
    rows = fetch(
        """
        SELECT job.run_at FROM jobs_job AS job JOIN jobs_schedule AS schedule
          ON job.unique_key LIKE 'schedule:' || schedule.id || ':%%'
        WHERE schedule.name = %s AND job.run_at > %s ORDER BY job.run_at
        """,
        [name, after or datetime(2000, 1, 1, tzinfo=UTC)],
    )
    return [row[0] for row in rows]


def add_schedule(name: str, cron: str, task_path: str = "tests.tasks.noop") -> Schedule:
    schedule = Schedule(name=name, task_path=task_path, cron=cron, time_zone="UTC")
    schedule.full_clean()
    schedule.save()
    return schedule
