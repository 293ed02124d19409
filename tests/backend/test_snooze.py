"""
Snooze (jobs.exceptions.Snooze): a task asks to run again later without
spending an attempt, at most max_snoozes times.
"""

import importlib
import io

import pytest
from django.core.management import call_command
from django.tasks import task
from django.tasks.exceptions import InvalidTask
from django.urls import reverse

from jobs.exceptions import Snooze
from jobs.models import Job
from jobs.testing import run_due_jobs
from tests.conftest import wait_for_status
from tests.docs.pages import python_blocks, section
from tests.tasks import always_snooze, provider_delay, snooze_twice


@pytest.mark.parametrize("seconds", [-1, float("inf"), "5", True])
def test_a_snooze_takes_a_number_of_seconds(seconds):
    with pytest.raises(ValueError, match="Snooze takes a number of seconds"):
        Snooze(seconds)


def test_max_snoozes_is_a_whole_number():
    with pytest.raises(InvalidTask, match="max_snoozes must be a whole number, 0 or more"):
        task(max_snoozes=-1)(provider_delay)


def test_a_snooze_spends_no_attempt_and_the_cap_ends_a_job_that_always_snoozes(start_worker):
    twice = snooze_twice.enqueue()
    always = always_snooze.enqueue()
    start_worker("--concurrency", "1")
    assert wait_for_status(twice.id) == "SUCCESSFUL"
    job = Job.objects.get(id=twice.id)
    # Three runs on a budget of one attempt: the two snoozes spent none.
    assert (job.attempts, job.max_attempts, job.return_value) == (1, 1, 2)
    assert [(entry["attempt"], entry["seconds"]) for entry in job.snoozes] == [(1, 0.1), (1, 0.1)]
    first, second = job.snoozes
    assert second["at"] - first["at"] >= 0.1
    assert job.errors == []

    assert wait_for_status(always.id) == "FAILED"
    job = Job.objects.get(id=always.id)
    assert job.attempts == 1 and len(job.snoozes) == 2
    [error] = job.errors
    assert error["exception_class_path"] == "jobs.exceptions.Snooze"
    assert error["message"] == "Snoozed for 0.05 s once more, after 2 snoozes"
    assert error["retry"] == "not retried: the job snoozed 2 times, as many as max_snoozes allows"


@pytest.mark.django_db(transaction=True)
def test_run_due_jobs_honours_snoozes_and_the_job_page_and_jobs_show_list_them(admin_client):
    result = snooze_twice.enqueue()
    run_due_jobs(include_retries=True)
    job = Job.objects.get(id=result.id)
    assert (job.status, job.attempts, len(job.snoozes)) == ("SUCCESSFUL", 1, 2)
    page = admin_client.get(reverse("admin:jobs_job_change", args=[result.id])).content.decode()
    assert page.count("attempt 1 snoozed for 0.1 s") == 2
    out = io.StringIO()
    call_command("jobs", "show", result.id, stdout=out)
    assert [line for line in out.getvalue().splitlines() if line.startswith("snooze ")] == [
        f"snooze {n:<6} attempt 1: for 0.1 s, at {at}"
        for n, at in ((1, _iso(job.snoozes[0]["at"])), (2, _iso(job.snoozes[1]["at"])))
    ]


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@pytest.mark.django_db(transaction=True)
def test_the_readmes_snooze_example_snoozes_until_the_provider_is_ready(tmp_path, monkeypatch):
    [block] = python_blocks(section("Snooze: run again later without spending an attempt"))
    stub = (
        "READY = set()\n\n\ndef provider_has_it_ready(report_id):\n    return report_id in READY\n"
    )
    (tmp_path / "readme_snooze_tasks.py").write_text(stub + block)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("readme_snooze_tasks")
    result = module.fetch_report.enqueue("r-1")
    run_due_jobs()
    job = Job.objects.get(id=result.id)
    assert (job.status, job.attempts, len(job.snoozes)) == ("READY", 0, 1)
    assert 29 <= (job.run_at - job.last_attempted_at).total_seconds() <= 31
    module.READY.add("r-1")
    run_due_jobs(include_retries=True)
    job.refresh_from_db()
    assert (job.status, job.attempts, len(job.snoozes)) == ("SUCCESSFUL", 1, 1)
