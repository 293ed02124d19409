"""
Schedules the scheduler could not run: refused on save, and, when a row gets
past save() anyway, logged once while its ticks pass without a job.
"""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from jobs.models import Schedule
from tests.scheduler.conftest import T0, make_schedule, schedule_jobs

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
