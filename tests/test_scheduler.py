"""
Periodic tasks: tick arithmetic (DST without sleeping), catch-up, the admin,
code-declared schedules and their check, and runscheduler processes racing.
"""

import itertools
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.tasks import default_task_backend
from django.utils import timezone

from accounts.reports import send_signup_report
from jobs.checks import check_declared_schedules
from jobs.models import Job, Schedule
from jobs.scheduler.declared import sync_declared
from jobs.scheduler.runner import RETRY_DELAY_MAX, Scheduler, plan_ticks, unique_key
from jobs.scheduler.timing import Timing, TimingError
from tests.conftest import BASE_DIR, fetch, fetch_value, wait_until
from tests.tcp_proxy import PostgresProxy, free_port

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
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(fall))
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


# A field the scheduler could not run with, what the refusal says, and a good value.
BAD_ROWS = [
    ("task_path", "tests.tasks.renamed_away", "does not import", "tests.tasks.add"),
    ("queue", "nowhere", "Unknown queue 'nowhere'", "default"),
    ("args", {"a": 1, "b": 2}, "Arguments must be a JSON list", [1, 2]),
    ("kwargs", [1, 2], "Keyword arguments must be a JSON object", {}),
]


@pytest.mark.parametrize("field, value, message, good", BAD_ROWS)
def test_schedule_save_refuses_what_the_scheduler_could_not_run(db, field, value, message, good):
    # Through the model alone: no form, no full_clean() before the save.
    fields = {
        "name": "every-five",
        "task_path": "tests.tasks.add",
        "args": [1, 2],
        "cron": "*/5 * * * *",
        "time_zone": "UTC",
    }
    with pytest.raises(ValidationError) as refused:
        Schedule.objects.create(**{**fields, field: value})
    assert message in " ".join(refused.value.message_dict[field])
    assert not Schedule.objects.exists()

    schedule = Schedule.objects.create(**fields)
    setattr(schedule, field, value)
    with pytest.raises(ValidationError) as refused:
        schedule.save()
    assert list(refused.value.message_dict) == [field]
    schedule.refresh_from_db()
    assert getattr(schedule, field) == good


def test_a_broken_schedule_can_be_disabled_but_not_enabled(admin_client):
    schedule = make_schedule()
    Schedule.objects.filter(id=schedule.id).update(task_path="tests.tasks.renamed_away")
    changelist = "/admin/jobs/schedule/"
    response = admin_client.post(
        changelist, {"action": "disable", "_selected_action": [schedule.id]}, follow=True
    )
    assert "1 schedule(s) disabled." in response.content.decode()
    response = admin_client.post(
        changelist, {"action": "enable", "_selected_action": [schedule.id]}, follow=True
    )
    page = response.content.decode()
    assert (
        "Schedule &#x27;every-five&#x27; not enabled: task_path: "
        "Task &#x27;tests.tasks.renamed_away&#x27; does not import"
    ) in page
    assert "0 schedule(s) enabled." in page
    assert not Schedule.objects.get().enabled


@pytest.mark.parametrize("field, value, message, good", BAD_ROWS)
def test_a_bad_row_is_logged_once_and_its_ticks_pass_until_it_is_fixed(
    scheduler, caplog, field, value, message, good
):
    # Rows that save() refuses still come from QuerySet.update(), SQL, older
    # versions, or code that lost the task.
    schedule = make_schedule()
    Schedule.objects.filter(id=schedule.id).update(next_run_at=T0, **{field: value})
    with caplog.at_level("INFO", logger="jobs.scheduler"):
        for n in range(4):
            claimed, enqueued = scheduler.run_due(now=T0 + timedelta(minutes=5 * n, seconds=1))
            assert (claimed, enqueued) == (1, [])
    assert schedule_jobs(schedule) == []
    [logged] = caplog.records
    assert logged.levelname == "ERROR"
    assert logged.getMessage().startswith(
        "Schedule 'every-five' is invalid, its ticks pass without a job until it is fixed: "
        f"{field}: "
    )
    assert message in logged.getMessage()
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(minutes=20)

    caplog.clear()
    setattr(schedule, field, good)
    schedule.save()
    with caplog.at_level("INFO", logger="jobs.scheduler"):
        claimed, enqueued = scheduler.run_due(now=T0 + timedelta(minutes=20, seconds=1))
    assert len(enqueued) == 1
    assert caplog.messages[0] == "Schedule 'every-five' is valid again: its ticks enqueue jobs"


def test_a_row_whose_timing_is_bad_is_logged_once_and_stops(scheduler, caplog):
    schedule = make_schedule()
    Schedule.objects.filter(id=schedule.id).update(next_run_at=T0, time_zone="Mars/Olympus")
    with caplog.at_level("INFO", logger="jobs.scheduler"):
        assert scheduler.run_due(now=T0 + timedelta(seconds=1)) == (1, [])
        assert scheduler.run_due(now=T0 + timedelta(days=1)) == (0, [])
    [logged] = caplog.records
    assert logged.getMessage().startswith(
        "Schedule 'every-five' is invalid, it has no next tick until a save gives it a valid "
        "timing: time_zone: Unknown time zone 'Mars/Olympus'"
    )
    schedule.refresh_from_db()
    assert schedule.next_run_at is None and schedule.enabled


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


# The admin: validated form, nothing half-saved.

ADD_URL = "/admin/jobs/schedule/add/"


def form_data(schedule: Schedule | None = None, **changes) -> dict[str, str]:
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


@pytest.mark.parametrize(
    "changes, field, message",
    [
        (
            {"cron": "0 25 * * *"},
            "cron",
            "&#x27;0 25 * * *&#x27; is not a valid cron expression (Bad hour)",
        ),
        ({"cron": "at noon"}, "cron", "Expected five fields"),
        ({"cron": "", "interval": ""}, "cron", "Give either a cron expression or an interval"),
        ({"interval": "90"}, "cron", "not both"),
        ({"task_path": "tests.tasks.no_such_task"}, "task_path", "does not import"),
        ({"task_path": "tests.conftest.wait_until"}, "task_path", "is not a task"),
        (
            {"time_zone": "Mars/Olympus_Mons"},
            "time_zone",
            "Unknown time zone &#x27;Mars/Olympus_Mons&#x27;",
        ),
        ({"queue": "nowhere"}, "queue", "Unknown queue &#x27;nowhere&#x27;"),
        ({"args": '{"a": 1}'}, "args", "Arguments must be a JSON list"),
    ],
)
def test_admin_refuses_a_bad_schedule_with_a_clear_message(admin_client, changes, field, message):
    response = admin_client.post(ADD_URL, form_data(**changes))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert message in response.content.decode()
    assert not Schedule.objects.exists()


def test_admin_edit_with_a_bad_expression_changes_nothing(admin_client):
    schedule = make_schedule(name="nightly", cron="0 3 * * *")
    before = Schedule.objects.filter(id=schedule.id).values().get()
    url = f"/admin/jobs/schedule/{schedule.id}/change/"
    response = admin_client.post(url, form_data(schedule, cron="0 3 * *", priority="50"))
    assert response.status_code == 200 and "Wrong number of fields" in response.content.decode()
    assert Schedule.objects.filter(id=schedule.id).values().get() == before


def test_admin_adds_a_schedule_and_shows_it_in_words_with_its_next_runs(admin_client):
    response = admin_client.post(ADD_URL, form_data(cron="0 18 * * 1-5"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    schedule = Schedule.objects.get(name="nightly")
    assert schedule.next_run_at > timezone.now()
    assert schedule.next_run_at.astimezone(BERLIN).hour == 18
    listing = admin_client.get("/admin/jobs/schedule/").content.decode()
    assert "At 18:00, Monday through Friday (Europe/Berlin)" in listing
    page = admin_client.get(f"/admin/jobs/schedule/{schedule.id}/change/").content.decode()
    assert len(re.findall(r"<div>\w{3} \d{4}-\d\d-\d\d 18:00:00 CES?T</div>", page)) == 5


# Schedules declared in code.

REPORT = {"task": "accounts.reports.send_signup_report", "cron": "0 18 * * 1-5"}


def test_declared_schedule_is_created_with_the_tasks_queue(db, settings):
    settings.JOBS_SCHEDULES = {"signup-report": REPORT}
    report = sync_declared()
    assert report.created == ["signup-report"]
    schedule = Schedule.objects.get(name="signup-report")
    assert (schedule.task_path, schedule.cron, schedule.queue) == (
        "accounts.reports.send_signup_report",
        "0 18 * * 1-5",
        "reports",
    )
    assert schedule.time_zone == settings.TIME_ZONE and schedule.enabled
    assert sync_declared().created == []  # idempotent
    assert Schedule.objects.count() == 1


def test_admin_edits_stand_until_the_code_changes_the_same_field(db, settings):
    settings.JOBS_SCHEDULES = {"signup-report": REPORT}
    sync_declared()
    schedule = Schedule.objects.get(name="signup-report")
    schedule.enabled = False  # a holiday
    schedule.cron = "30 17 * * 1-5"
    schedule.save()

    sync_declared()  # a restart with the same code: the admin's edits stand
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.cron) == (False, "30 17 * * 1-5")

    settings.JOBS_SCHEDULES = {"signup-report": {**REPORT, "cron": "0 19 * * 1-5"}}
    assert sync_declared().updated == ["signup-report"]  # a deploy changes the cron
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.cron) == (False, "0 19 * * 1-5")

    settings.JOBS_SCHEDULES = {}
    assert sync_declared().disabled == ["signup-report"]
    schedule.refresh_from_db()
    assert schedule.declared is None and not schedule.enabled


def test_sync_leaves_a_schedule_that_the_codes_change_would_make_invalid(db, settings, capsys):
    settings.JOBS_SCHEDULES = {"signup-report": REPORT}
    sync_declared()
    # A queue an admin chose, since removed from the backend's QUEUES.
    Schedule.objects.filter(name="signup-report").update(queue="retired")
    settings.JOBS_SCHEDULES = {"signup-report": {**REPORT, "cron": "0 19 * * 1-5"}}
    call_command("schedules", "--sync")
    assert "Not synced, 'signup-report' stays as it was: queue: Unknown queue 'retired'" in (
        capsys.readouterr().err
    )
    schedule = Schedule.objects.get()
    assert (schedule.cron, schedule.declared["cron"]) == ("0 18 * * 1-5", "0 18 * * 1-5")


def test_check_and_sync_refuse_bad_declarations_and_save_nothing(db, settings):
    settings.JOBS_SCHEDULES = {
        "fine": REPORT,
        "bad-cron": {**REPORT, "cron": "0 18 * * 8"},
        "bad-task": {**REPORT, "task": "accounts.reports.send_sigup_report"},
        "bad-zone": {**REPORT, "time_zone": "Berlin"},
        "typo": {**REPORT, "crn": "0 18 * * *"},
    }
    messages = [error.msg for error in check_declared_schedules()]
    assert len(messages) == 4
    assert messages[0].startswith("JOBS_SCHEDULES['bad-cron']: cron: '0 18 * * 8' is not a valid")
    assert (
        "JOBS_SCHEDULES['bad-task']: task: Task 'accounts.reports.send_sigup_report' "
        "does not import" in messages[1]
    )
    assert messages[2] == (
        "JOBS_SCHEDULES['bad-zone']: time_zone: Unknown time zone 'Berlin': use an IANA name "
        "such as 'Europe/Berlin', 'America/New_York' or 'UTC'."
    )
    assert messages[3].startswith(
        "JOBS_SCHEDULES['typo']: unknown key(s) crn; known keys: task, cron"
    )
    with pytest.raises(ImproperlyConfigured, match="bad-cron"):
        sync_declared()
    with pytest.raises(SystemCheckError, match="JOBS_SCHEDULES\\['bad-zone'\\]"):
        call_command("runscheduler", skip_checks=False)  # as manage.py runs it
    assert not Schedule.objects.exists()


# The seed's example, and the listing.


def test_signup_report_mails_todays_signups_to_the_admins(db, settings):
    settings.ADMINS = ["ops@example.com"]
    users = get_user_model().objects
    users.create_user("early", date_joined=timezone.now() - timedelta(days=2))
    users.create_user("today-1")
    users.create_user("today-2")
    assert send_signup_report.call() == {
        "day": timezone.localdate().isoformat(),
        "signups": 2,
        "total": 3,
    }
    [message] = mail.outbox
    assert message.to == ["ops@example.com"]
    assert message.subject.endswith(": 2")
    assert "2 new account(s)" in message.body


def test_listing_shows_each_schedule_in_words_with_its_next_five_runs(db, settings, capsys):
    settings.JOBS_SCHEDULES = {"signup-report": {**REPORT, "time_zone": "Europe/Berlin"}}
    make_schedule(name="every-90", interval=90)
    call_command("schedules", "--sync")
    out = capsys.readouterr().out
    assert "Synced JOBS_SCHEDULES: 1 created" in out
    assert "At 18:00, Monday through Friday (Europe/Berlin)" in out
    assert "Every 90 seconds" in out
    report_block = out[out.index("signup-report") :]
    assert len(re.findall(r"\w{3} \d{4}-\d\d-\d\d 18:00:00 CES?T", report_block)) == 5
    assert "from code" in report_block and "from admin" in out


# runscheduler processes against the test database.

ENQUEUED_LINE = re.compile(r"Schedule '(?P<name>[^']+)': enqueued job \S+ for tick (?P<tick>\S+)")


class SchedulerProcess:
    """One `runscheduler` subprocess, its output kept in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runscheduler", "--poll-interval", "5"],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 30.0) -> None:
        def started():
            """the scheduler logged its start"""
            if self.process.poll() is not None:
                raise AssertionError(f"scheduler exited early:\n{self.output()}")
            return " started: " in self.output()

        wait_until(started, timeout)

    def enqueued(self) -> list[tuple[str, str]]:
        """(schedule name, tick) of every enqueue this scheduler logged."""
        return [(m["name"], m["tick"]) for m in ENQUEUED_LINE.finditer(self.output())]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            self.log.close()


@pytest.fixture
def start_scheduler(worker_env, tmp_path):
    """Start runscheduler subprocesses; all are stopped at the end of the test."""
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
        if scheduler.process.poll() is None:
            scheduler.process.kill()
        scheduler.stop()


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


@pytest.mark.slow
def test_three_schedulers_and_a_per_second_schedule_for_60_s_one_job_per_tick(
    start_scheduler, start_worker
):
    schedulers = [start_scheduler() for _ in range(3)]
    # A worker runs the jobs as they come, so a tick enqueued twice would be
    # two rows (the unique key only folds jobs that are still live).
    start_worker("--concurrency", "1")
    schedule = add_schedule("every-second", "* * * * * *")
    started = schedule.next_run_at

    def minute_passed():
        """60 ticks of the per-second schedule were enqueued"""
        last = fetch_value("SELECT last_run_at FROM jobs_schedule WHERE id = %s", [schedule.id])
        return last is not None and last >= started + timedelta(seconds=59)

    wait_until(minute_passed, timeout=90, interval=0.5)
    assert all(scheduler.stop() == 0 for scheduler in schedulers)

    keys = fetch(
        "SELECT unique_key, count(*) FROM jobs_job WHERE unique_key LIKE %s GROUP BY unique_key",
        [f"schedule:{schedule.id}:%"],
    )
    assert keys, "no job was enqueued"
    assert [key for key, count in keys if count != 1] == [], "a tick has more than one job"
    ticks = sorted(datetime.fromisoformat(key.split(":", 2)[2]) for key, _ in keys)
    assert ticks[0] == started
    assert ticks == [started + timedelta(seconds=n) for n in range(len(ticks))], "a tick is missing"
    assert len(ticks) >= 60

    logged = Counter(
        tick
        for scheduler in schedulers
        for name, tick in scheduler.enqueued()
        if name == "every-second"
    )
    assert [tick for tick, count in logged.items() if count != 1] == []
    assert sorted(datetime.fromisoformat(tick) for tick in logged) == ticks
    shares = [sum(1 for name, _ in s.enqueued() if name == "every-second") for s in schedulers]
    lateness = fetch(
        """
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY late), max(late)
        FROM (SELECT extract(epoch FROM enqueued_at - run_at) AS late
              FROM jobs_job WHERE unique_key LIKE %s) AS jobs
        """,
        [f"schedule:{schedule.id}:%"],
    )[0]
    print(
        f"{len(ticks)} ticks; enqueued by each scheduler: {shares}; "
        f"enqueued after the tick: median {lateness[0] * 1000:.0f} ms, "
        f"max {lateness[1] * 1000:.0f} ms"
    )


def test_admin_disable_stops_a_schedule_at_once_and_an_edit_fires_on_the_new_expression(
    start_scheduler, admin_client
):
    start_scheduler()
    target = add_schedule("target", "* * * * * *")
    # The witness keeps ticking every second: once it has ticked after a
    # change, the scheduler has had its chance to (wrongly) fire the target.
    add_schedule("witness", "* * * * * *")
    wait_until(lambda: len(ticks_of("target")) >= 2)

    url = f"/admin/jobs/schedule/{target.id}/change/"
    response = admin_client.post(url, form_data(target, enabled=None, queue="default"))
    assert response.status_code == 302
    disabled_at = timezone.now()
    wait_until(lambda: len(ticks_of("witness", after=disabled_at)) >= 3)
    assert ticks_of("target", after=disabled_at) == []

    response = admin_client.post(url, form_data(target, cron="*/3 * * * * *"))
    assert response.status_code == 302
    edited_at = timezone.now()
    wait_until(lambda: len(ticks_of("target", after=edited_at)) >= 3, timeout=20)
    fired = ticks_of("target", after=edited_at)
    assert all(tick.second % 3 == 0 for tick in fired)
    assert all(b - a == timedelta(seconds=3) for a, b in itertools.pairwise(fired))


def test_runscheduler_stops_cleanly_on_sigterm(start_scheduler):
    scheduler = start_scheduler()
    assert scheduler.stop() == 0
    assert "Scheduler stopped" in scheduler.output()


# Outages: a scheduler frozen inside its pass, a database that is not there.

# Backends of the test database that sit idle inside a transaction holding a
# lock on jobs_schedule: a pass stopped before it commits. A pass that runs
# takes milliseconds; such a one has been idle for a second.
STALLED_PASSES = """
SELECT count(DISTINCT activity.pid) FROM pg_stat_activity AS activity
JOIN pg_locks AS lock ON lock.pid = activity.pid
WHERE activity.datname = current_database()
  AND activity.state = 'idle in transaction'
  AND activity.state_change < statement_timestamp() - interval '1 second'
  AND lock.relation = 'jobs_schedule'::regclass
"""


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat: 'T' for a stopped process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_a_scheduler_frozen_inside_its_pass_holds_its_schedule_for_seconds_only(
    start_scheduler, worker_env, tmp_path
):
    request = tmp_path / "freeze"
    env = {**worker_env, "TEST_FREEZE_REQUEST": str(request)}
    schedulers = [start_scheduler(env, wait=False) for _ in range(3)]
    for scheduler in schedulers:
        scheduler.wait_started()
    schedule = add_schedule("every-second", "* * * * * *", "tests.scheduler_tasks.tick")
    wait_until(lambda: len(ticks_of("every-second")) >= 2, timeout=10)

    # The next scheduler to enqueue a tick stops itself inside that pass.
    request.touch()
    taken = Path(f"{request}.taken")
    pid = int(wait_until(lambda: taken.exists() and taken.read_text(), timeout=10))
    [frozen] = [scheduler for scheduler in schedulers if scheduler.process.pid == pid]
    stalled_at = time.monotonic()
    wait_until(lambda: process_state(pid) == "T", timeout=5)
    wait_until(lambda: fetch_value(STALLED_PASSES) == 1, timeout=5)
    frozen_tick = fetch_value("SELECT next_run_at FROM jobs_schedule WHERE id = %s", [schedule.id])

    def lock_freed():
        """Postgres ended the frozen scheduler's transaction"""
        return fetch_value(STALLED_PASSES) == 0

    try:
        wait_until(lock_freed, timeout=8, interval=0.1)
        freed_after = time.monotonic() - stalled_at

        def fifteen_seconds_ticked():
            """the others enqueued the ticks of 15 s while the scheduler stayed frozen"""
            assert process_state(pid) == "T"
            last = fetch_value("SELECT last_run_at FROM jobs_schedule WHERE id = %s", [schedule.id])
            return last >= frozen_tick + timedelta(seconds=15)

        wait_until(fifteen_seconds_ticked, timeout=25, interval=0.2)
    finally:
        frozen.process.send_signal(signal.SIGCONT)

    # It wakes to a closed connection, reconnects and carries on: alone, it
    # enqueues the ticks.
    wait_until(lambda: "Database error (" in frozen.output(), timeout=10)
    others = [scheduler for scheduler in schedulers if scheduler is not frozen]
    assert all(scheduler.stop() == 0 for scheduler in others)
    enqueued_before = len(frozen.enqueued())
    wait_until(lambda: len(frozen.enqueued()) >= enqueued_before + 2, timeout=10)
    assert frozen.stop() == 0

    keys = fetch(
        "SELECT unique_key, count(*), max(extract(epoch FROM enqueued_at - run_at)) "
        "FROM jobs_job WHERE unique_key LIKE %s GROUP BY unique_key",
        [f"schedule:{schedule.id}:%"],
    )
    assert [key for key, count, _ in keys if count != 1] == [], "a tick has more than one job"
    ticks = sorted(datetime.fromisoformat(key.split(":", 2)[2]) for key, _, _ in keys)
    assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))], (
        "a tick is missing"
    )
    assert frozen_tick + timedelta(seconds=15) < ticks[-1]
    logged = Counter(
        tick
        for scheduler in schedulers
        for name, tick in scheduler.enqueued()
        if name == schedule.name
    )
    assert sorted(datetime.fromisoformat(tick) for tick in logged) == ticks
    assert set(logged.values()) == {1}, "a tick was logged as enqueued twice"
    latest = max(late for _, _, late in keys)
    assert latest <= 10, f"a tick was enqueued {latest:.1f} s late"
    print(
        f"{len(ticks)} ticks, each once; the frozen scheduler's lock freed after "
        f"{freed_after:.1f} s; latest enqueue {latest:.1f} s after its tick"
    )


def test_runscheduler_waits_for_its_database_and_starts_when_it_answers(
    start_scheduler, worker_env
):
    schedule = add_schedule("every-second", "* * * * * *")
    params = connection.get_connection_params()
    password = params.get("password") or "not-for-the-log"  # trust ignores it
    port = free_port()
    proxy = PostgresProxy(port)
    url = f"postgres://{params.get('user') or 'postgres'}:{password}@127.0.0.1:{port}/"
    env = {**worker_env, "DATABASE_URL": url + params["dbname"], "JOBS_LOG_LEVEL": "DEBUG"}
    waiting = (
        f"WARNING jobs.scheduler Cannot connect to database {params['dbname']} on "
        f"127.0.0.1:{port} ("
    )
    retrying = "DEBUG jobs.scheduler Database still unreachable"

    def retries(outage: int):
        """A condition: the scheduler waits out its outage-th outage, trying twice more."""
        before = scheduler.output().count(retrying)

        def condition():
            """the scheduler waits for the database, trying again and again"""
            output = scheduler.output()
            assert scheduler.process.poll() is None, output
            return output.count(waiting) == outage and output.count(retrying) >= before + 2

        return condition

    def enqueued_within(seconds: float, after: int) -> float:
        opened = time.monotonic()
        proxy.open()
        wait_until(lambda: len(scheduler.enqueued()) > after, timeout=seconds)
        return time.monotonic() - opened

    scheduler = start_scheduler(env, wait=False)
    try:
        # Nothing listens: it waits, saying so once, and starts when it answers.
        wait_until(retries(outage=1), timeout=10)
        first = enqueued_within(RETRY_DELAY_MAX + 3, after=0)
        assert " started: " in scheduler.output()

        # The database goes away under it, and comes back.
        proxy.close()
        wait_until(retries(outage=2), timeout=15)
        second = enqueued_within(RETRY_DELAY_MAX + 3, after=len(scheduler.enqueued()))
        assert scheduler.stop() == 0
    finally:
        proxy.close()
    output = scheduler.output()
    assert "Traceback" not in output and password not in output
    assert output.count(waiting) == 2, "said once per outage, not at every try"
    database = f"Database {params['dbname']} on 127.0.0.1:{port}"
    assert output.count(f"INFO jobs.scheduler {database} reachable\n") == 1
    assert output.count(f"INFO jobs.scheduler {database} reachable again\n") == 1

    keys = fetch(
        "SELECT unique_key FROM jobs_job WHERE unique_key LIKE %s", [f"schedule:{schedule.id}:%"]
    )
    ticks = sorted(datetime.fromisoformat(key.split(":", 2)[2]) for (key,) in keys)
    assert ticks[0] == schedule.next_run_at, "the ticks of the first outage were lost"
    assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))]
    logged = Counter(tick for _, tick in scheduler.enqueued())
    assert sorted(datetime.fromisoformat(tick) for tick in logged) == ticks
    assert set(logged.values()) == {1}, "a tick was logged as enqueued twice"
    print(f"enqueuing {first:.1f} s after the database answered, {second:.1f} s after it returned")
