"""
The admin and the operations act through a job's own backend (a TASKS alias),
not a fixed "default"; a row whose alias the settings no longer have goes
through the default backend.
"""

import contextlib
from collections.abc import Iterator

import pytest
from django.contrib.admin.models import LogEntry
from django.tasks import task_backends
from django.tasks.exceptions import InvalidTaskBackend
from django.urls import reverse

from jobs import operations
from jobs.models import Job, JobStatus
from tests.tasks import add


@pytest.fixture
def second_backend(monkeypatch) -> Iterator[str]:
    """A second alias of the same Postgres backend, for the length of a test."""
    monkeypatch.setitem(task_backends.settings, "second", task_backends.settings["default"])
    yield "second"
    with contextlib.suppress(AttributeError):
        del task_backends["second"]


@pytest.fixture
def recorded_retries(monkeypatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(
        operations, "retry", lambda job_id, *, backend: calls.append((job_id, backend))
    )
    return calls


def failed_job(backend: str) -> Job:
    result = add.enqueue(1, 2)
    Job.objects.filter(id=result.id).update(status=JobStatus.FAILED, backend=backend)
    return Job.objects.get(id=result.id)


def test_operations_run_through_the_backend_they_are_given(db, second_backend):
    job = failed_job("default")
    operations.retry(job.id, backend=second_backend)
    job.refresh_from_db()
    assert job.status == JobStatus.READY
    with pytest.raises(InvalidTaskBackend):
        operations.run_now(job.id, backend="missing")


@pytest.mark.parametrize(("row_backend", "used"), [("second", "second"), ("retired", "default")])
def test_the_job_page_operates_through_the_rows_backend(
    admin_client, db, second_backend, recorded_retries, row_backend, used
):
    job = failed_job(row_backend)
    admin_client.post(reverse("admin:jobs_job_operation", args=[job.id, "retry"]))
    assert recorded_retries == [(str(job.id), used)]


def test_an_action_operates_on_each_job_through_its_rows_backend(
    admin_client, db, second_backend, recorded_retries
):
    jobs = [failed_job("default"), failed_job("second"), failed_job("retired")]
    admin_client.post(
        reverse("admin:jobs_job_changelist"),
        {"action": "retry_jobs", "_selected_action": [str(job.id) for job in jobs]},
    )
    assert sorted(recorded_retries) == sorted(
        [(str(jobs[0].id), "default"), (str(jobs[1].id), "second"), (str(jobs[2].id), "default")]
    )
    assert LogEntry.objects.count() == 3


def test_a_job_of_a_retired_backend_is_retried_from_its_page(admin_client, db):
    job = failed_job("retired")
    admin_client.post(reverse("admin:jobs_job_operation", args=[job.id, "retry"]))
    job.refresh_from_db()
    assert job.status == JobStatus.READY
