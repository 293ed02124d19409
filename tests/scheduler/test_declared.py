"""
Schedules declared in code (JOBS_SCHEDULES): synced into rows, checked, and
listed by the schedules command beside those made in the admin.
"""

import re
import sys
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.utils import timezone

from accounts.reports import send_signup_report
from jobs.checks import check_declared_schedules
from jobs.models import Schedule
from jobs.scheduler.declared import sync_declared
from tests.docs.pages import python_blocks, section
from tests.scheduler.conftest import make_schedule

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


@pytest.fixture
def readers_app(tmp_path, monkeypatch):
    """The reader's own `myapp.tasks.tidy_up`, which the docs' example declares."""
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "tasks.py").write_text(
        "from django.tasks import task\n\n\n@task\ndef tidy_up() -> None: ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("myapp.tasks", None)
    sys.modules.pop("myapp", None)


def test_the_docs_declarations_pass_the_check_and_sync_as_described(db, settings, readers_app):
    [block] = python_blocks(section("Periodic tasks"))
    namespace = {}
    exec(block, namespace)
    declared = namespace["JOBS_SCHEDULES"]
    # "The shipped example is the one above."
    assert declared["signup-report"] == settings.JOBS_SCHEDULES["signup-report"]
    settings.JOBS_SCHEDULES = declared
    assert check_declared_schedules() == []
    assert sync_declared().created == ["signup-report", "tidy-up"]
    report, tidy_up = Schedule.objects.order_by("name")
    assert (report.cron, report.time_zone, report.queue) == (
        "0 18 * * 1-5",
        settings.TIME_ZONE,
        "reports",
    )
    assert (report.catch_up, report.catch_up_window, report.enabled) == ("latest", 86400, True)
    assert (tidy_up.task_path, tidy_up.interval) == ("myapp.tasks.tidy_up", 90)


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
