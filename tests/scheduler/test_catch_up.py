"""Catch-up: what a scheduler that was away enqueues of the ticks it missed, and what it logs."""

from datetime import timedelta

import pytest

from jobs.models import Schedule
from jobs.scheduler.runner import plan_ticks
from jobs.schedules import Timing
from tests.scheduler.conftest import T0, make_schedule, schedule_jobs

EVERY_5_MIN = Timing(cron="*/5 * * * *", time_zone="UTC")


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


@pytest.mark.parametrize(
    "fields, now, outcome",
    [
        (
            {"catch_up": "skip"},
            T0 + timedelta(minutes=47),
            "catch-up 'skip': none of them runs",
        ),
        (
            {"catch_up": "latest"},
            T0 + timedelta(minutes=47),
            "catch-up 'latest' runs the latest, 2026-05-04T12:45:00+00:00",
        ),
        (
            {"catch_up": "latest", "catch_up_window": 60},
            T0 + timedelta(minutes=47),
            "none runs: the latest is older than the catch-up window (60 s)",
        ),
        (
            {"catch_up": "skip", "cron": "* * * * * *"},
            T0 + timedelta(seconds=65),
            "the 61 tick(s) from 2026-05-04T12:00:05+00:00 on, within the grace, run",
        ),
    ],
)
def test_missed_ticks_are_logged_with_what_runs_of_them(scheduler, caplog, fields, now, outcome):
    schedule = make_schedule(**fields)
    Schedule.objects.filter(id=schedule.id).update(next_run_at=T0)
    with caplog.at_level("WARNING", logger="jobs.scheduler"):
        scheduler.run_due(now=now)
    assert caplog.messages == [
        "Schedule 'every-five': ticks due since 2026-05-04T12:00:00+00:00 were missed, "
        f"more than 60 s late; {outcome}"
    ]
