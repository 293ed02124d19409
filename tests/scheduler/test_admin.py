"""The schedule admin: a validated form, nothing half-saved, the timing in words."""

import re

import pytest
from django.utils import timezone

from jobs.models import Schedule
from tests.scheduler.conftest import BERLIN, form_data, make_schedule

ADD_URL = "/admin/jobs/schedule/add/"


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
