"""
Periodic tasks: tick arithmetic (DST without sleeping), catch-up, the admin,
code-declared schedules and their check, and runscheduler processes racing.
"""

import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.tasks import default_task_backend
from django.utils import timezone

from jobs.checks import check_declared_schedules
from jobs.models import Job, Schedule
from jobs.scheduler.declared import sync_declared
from jobs.scheduler.runner import Scheduler, plan_ticks, unique_key
from jobs.scheduler.timing import Timing, TimingError
from tests.conftest import BASE_DIR, fetch, fetch_value, wait_until

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold).astimezone(UTC)


def ticks(timing: Timing, after: datetime, count: int) -> list[datetime]:
    found = []
    for tick in timing.ticks_after(after):
        found.append(tick)
        if len(found) == count:
            return found
    return found


def local(moments: list[datetime]) -> list[str]:
    return [moment.astimezone(BERLIN).strftime("%m-%d %H:%M %Z") for moment in moments]


# DST: next-tick sequences with an injected "now", no sleeping.


def test_daily_0230_runs_once_on_the_spring_forward_day_at_0300():
    daily = Timing(cron="30 2 * * *", time_zone="Europe/Berlin")
    sequence = ticks(daily, berlin(2026, 3, 27, 12), 4)
    assert local(sequence) == [
        "03-28 02:30 CET",
        "03-29 03:00 CEST",  # 02:30 does not exist that day: once, as the clocks jump
        "03-30 02:30 CEST",
        "03-31 02:30 CEST",
    ]
    assert [tick - sequence[0] for tick in sequence[1:]] == [
        timedelta(hours=23, minutes=30),
        timedelta(hours=47),
        timedelta(hours=71),
    ]


def test_daily_0230_runs_once_on_the_fall_back_day():
    daily = Timing(cron="30 2 * * *", time_zone="Europe/Berlin")
    sequence = ticks(daily, berlin(2026, 10, 24, 12), 3)
    assert local(sequence) == ["10-25 02:30 CEST", "10-26 02:30 CET", "10-27 02:30 CET"]
    # From inside the repeated hour (02:15 CET, after 02:30 CEST went by), the
    # day's 02:30 has run: the next tick is tomorrow's, never the past one.
    second_pass = berlin(2026, 10, 25, 2, 15, fold=1)
    assert local([daily.next_after(second_pass)]) == ["10-26 02:30 CET"]
    assert daily.latest_at_or_before(second_pass) == berlin(2026, 10, 25, 2, 30)


def test_hourly_ticks_through_both_repeated_hours_and_skips_the_missing_one():
    hourly = Timing(cron="0 * * * *", time_zone="Europe/Berlin")
    fall = ticks(hourly, berlin(2026, 10, 25, 0, 30), 4)
    assert local(fall) == [
        "10-25 01:00 CEST",
        "10-25 02:00 CEST",
        "10-25 02:00 CET",
        "10-25 03:00 CET",
    ]
    assert all(b - a == timedelta(hours=1) for a, b in zip(fall, fall[1:], strict=False))
    spring = ticks(hourly, berlin(2026, 3, 29, 0, 30), 3)
    assert local(spring) == ["03-29 01:00 CET", "03-29 03:00 CEST", "03-29 04:00 CEST"]
    day = [t for t in ticks(hourly, berlin(2026, 10, 25, 0, 0) - timedelta(seconds=1), 30)]
    assert sum(1 for t in day if t.astimezone(BERLIN).date().day == 25) == 25
    day = [t for t in ticks(hourly, berlin(2026, 3, 29, 0, 0) - timedelta(seconds=1), 30)]
    assert sum(1 for t in day if t.astimezone(BERLIN).date().day == 29) == 23


def test_weekday_evening_report_skips_the_weekend_in_its_zone():
    report = Timing(cron="0 18 * * 1-5", time_zone="Europe/Berlin")
    sequence = ticks(report, berlin(2026, 3, 26, 19), 3)  # Thursday evening, before DST
    assert local(sequence) == ["03-27 18:00 CET", "03-30 18:00 CEST", "03-31 18:00 CEST"]
    assert [t.hour for t in sequence] == [17, 16, 16]  # UTC moves, Berlin time does not


def test_interval_counts_elapsed_seconds_across_dst():
    every_90 = Timing(interval=90, time_zone="Europe/Berlin")
    anchor = berlin(2026, 3, 29, 1, 59)  # the clocks jump at 02:00
    later = every_90.ticks_after(anchor, anchor)
    assert [next(later) - anchor for _ in range(3)] == [
        timedelta(seconds=s) for s in (90, 180, 270)
    ]
    # The grid stays on the anchor, whatever moment is asked about.
    assert every_90.next_after(anchor + timedelta(seconds=100), anchor) == anchor + timedelta(
        seconds=180
    )
    assert every_90.latest_at_or_before(
        anchor + timedelta(seconds=100), anchor
    ) == anchor + timedelta(seconds=90)
    # Without a previous tick, the first one is a whole interval from now.
    now = datetime(2026, 3, 29, 0, 0, 0, 250000, tzinfo=UTC)
    assert every_90.next_after(now) == datetime(2026, 3, 29, 0, 1, 31, tzinfo=UTC)


def test_bad_timings_are_refused_with_a_clear_message():
    with pytest.raises(
        TimingError, match=r"'61 \* \* \* \*' is not a valid cron expression \(Bad minute\)"
    ):
        Timing(cron="61 * * * *")
    with pytest.raises(TimingError, match="Expected five fields"):
        Timing(cron="every day")
    with pytest.raises(TimingError, match="Unknown time zone 'Europe/Berln'"):
        Timing(cron="0 * * * *", time_zone="Europe/Berln")
    with pytest.raises(TimingError, match="not both or neither"):
        Timing(cron="0 * * * *", interval=60)
    with pytest.raises(TimingError, match="at least 1"):
        Timing(interval=0)


def test_descriptions_in_words():
    assert Timing(cron="0 18 * * 1-5", time_zone="Europe/Berlin").describe() == (
        "At 18:00, Monday through Friday (Europe/Berlin)"
    )
    assert Timing(interval=90).describe() == "Every 90 seconds"
    assert Timing(interval=7200).describe() == "Every 2 hours"


# Catch-up: what a returning scheduler enqueues.

EVERY_5_MIN = Timing(cron="*/5 * * * *", time_zone="UTC")
T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def test_catch_up_after_ten_missed_ticks_skip_runs_none_latest_runs_one():
    # The scheduler was down from 12:00 (next_run_at) to 12:47: ticks 12:00 ..
    # 12:45 (ten of them) were missed; the latest is 2 minutes old, past the grace.
    now = T0 + timedelta(minutes=47)
    skipped = plan_ticks(EVERY_5_MIN, T0, now, catch_up="skip")
    assert skipped.ticks == []
    assert skipped.next_run_at == T0 + timedelta(minutes=50)
    latest = plan_ticks(EVERY_5_MIN, T0, now, catch_up="latest")
    assert latest.ticks == [T0 + timedelta(minutes=45)]
    assert latest.next_run_at == T0 + timedelta(minutes=50)
    too_old = plan_ticks(
        EVERY_5_MIN, T0, now, catch_up="latest", catch_up_window=timedelta(minutes=1)
    )
    assert too_old.ticks == []


def test_late_ticks_within_the_grace_all_run_whatever_the_policy():
    every_second = Timing(cron="* * * * * *")
    plan = plan_ticks(every_second, T0, T0 + timedelta(seconds=2.5), catch_up="skip")
    assert plan.ticks == [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert plan.next_run_at == T0 + timedelta(seconds=3)


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


@pytest.mark.parametrize("catch_up, expected", [("skip", 0), ("latest", 1)])
def test_scheduler_down_for_ten_ticks(scheduler, catch_up, expected):
    schedule = make_schedule(catch_up=catch_up)
    Schedule.objects.filter(id=schedule.id).update(next_run_at=T0)
    claimed, enqueued = scheduler.run_due(now=T0 + timedelta(minutes=47))
    assert claimed == 1
    jobs = schedule_jobs(schedule)
    assert len(jobs) == len(enqueued) == expected
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(minutes=50)
    if expected:
        [job] = jobs
        assert job.unique_key == f"schedule:{schedule.id}:2026-05-04T12:45:00Z"
        assert job.run_at == T0 + timedelta(minutes=45)
        assert (job.task_path, job.args, job.queue) == ("tests.tasks.add", [1, 2], "default")
        assert schedule.last_run_at == job.run_at
    # Nothing is due until 12:50.
    assert scheduler.run_due(now=T0 + timedelta(minutes=49)) == (0, [])


def test_one_pass_enqueues_each_due_tick_once_with_its_unique_key(scheduler):
    schedule = make_schedule(cron="* * * * * *", catch_up="skip")
    Schedule.objects.filter(id=schedule.id).update(next_run_at=T0)
    scheduler.run_due(now=T0 + timedelta(seconds=2, milliseconds=500))
    assert [job.unique_key for job in schedule_jobs(schedule)] == [
        unique_key(schedule.id, T0 + timedelta(seconds=n)) for n in range(3)
    ]
    # The same moment again: the ticks were advanced past, nothing more.
    assert scheduler.run_due(now=T0 + timedelta(seconds=2, milliseconds=900)) == (0, [])
    assert len(schedule_jobs(schedule)) == 3


def test_disabled_schedule_is_not_claimed_and_re_enabling_does_not_catch_up(scheduler):
    schedule = make_schedule()
    Schedule.objects.filter(id=schedule.id).update(next_run_at=T0)
    schedule.refresh_from_db()
    schedule.enabled = False
    schedule.save()
    assert scheduler.run_due(now=T0 + timedelta(hours=1)) == (0, [])
    schedule.enabled = True
    schedule.save()
    schedule.refresh_from_db()
    assert schedule.next_run_at > timezone.now()


def test_a_save_without_timing_changes_never_writes_next_run_at_back(db):
    schedule = make_schedule()
    stale = Schedule.objects.get(id=schedule.id)  # an admin form opened now
    Schedule.objects.filter(id=schedule.id).update(next_run_at=T0 + timedelta(days=400))
    stale.priority = 10
    stale.save()
    schedule.refresh_from_db()
    assert schedule.priority == 10
    assert schedule.next_run_at == T0 + timedelta(days=400)


def test_an_unknown_task_is_logged_and_its_tick_passes(scheduler, caplog):
    schedule = make_schedule()
    Schedule.objects.filter(id=schedule.id).update(
        next_run_at=T0, task_path="tests.tasks.renamed_away"
    )
    with caplog.at_level("ERROR", logger="jobs.scheduler"):
        claimed, enqueued = scheduler.run_due(now=T0 + timedelta(seconds=1))
    assert (claimed, enqueued) == (1, [])
    assert "tests.tasks.renamed_away" in caplog.text and "does not import" in caplog.text
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(minutes=5)
