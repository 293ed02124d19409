"""
Rolling deploys: a job whose task this worker cannot load waits for one that
can, its attempt not spent; a renamed task still runs the jobs queued under
its old path.
"""

import importlib
import sys
import textwrap
from datetime import timedelta

import pytest
from django.tasks import TaskResultStatus, default_task_backend
from django.utils import timezone

from jobs.backend import current_task_path
from jobs.models import Job
from jobs.testing import run_due_jobs
from tests.conftest import wait_for_status, wait_until
from tests.docs.pages import python_blocks, section
from tests.tasks import add, multiply

NEW_TASK_MODULE = """
    from django.tasks import task


    @task
    def greet(name: str) -> str:
        return f"hello {name}"
"""


@pytest.fixture
def new_code(tmp_path, monkeypatch):
    """A task module that only this process and the workers given its folder can import."""
    folder = tmp_path / "release-2"
    folder.mkdir()
    (folder / "release_two_tasks.py").write_text(textwrap.dedent(NEW_TASK_MODULE))
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("release_two_tasks", None)


def test_a_job_of_a_task_the_worker_lacks_waits_ready_for_a_worker_that_has_it(
    start_worker, worker_env, new_code
):
    from release_two_tasks import greet

    enqueued = greet.enqueue("deploy")
    old = start_worker("--concurrency", "1")
    worker_id = old.wait_registered()
    line = f"task release_two_tasks.greet does not load on worker {worker_id}"

    def postponed_three_times():
        """the old worker claimed the job and gave it back three times"""
        return old.output().count(line) >= 3

    wait_until(postponed_three_times)
    job = Job.objects.get(id=enqueued.id)
    assert job.status == "READY"
    assert (job.attempts, job.errors, job.worker_ids, job.started_at) == (0, [], [], None)
    assert "WARNING" in next(text for text in old.output().splitlines() if line in text)

    new = start_worker("--concurrency", "1", env={**worker_env, "PYTHONPATH": str(new_code)})
    wait_for_status(enqueued.id, ("SUCCESSFUL",))
    result = greet.get_result(enqueued.id)
    assert result.return_value == "hello deploy"
    assert result.worker_ids == [new.wait_registered()]
    assert result.attempts == 1


def test_a_job_queued_under_an_alias_runs_and_reads_back_under_the_current_name(start_worker):
    enqueued = multiply.enqueue(6, 7)
    Job.objects.filter(id=enqueued.id).update(task_path="tests.tasks.old_name_of_multiply")
    start_worker("--concurrency", "1")
    wait_for_status(enqueued.id)
    result = default_task_backend.get_result(enqueued.id)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42
    assert result.task.module_path == "tests.tasks.multiply"
    assert multiply.get_result(enqueued.id).id == enqueued.id


def test_an_alias_from_a_module_that_is_gone_names_the_current_task(db):
    assert current_task_path("tests.legacy_tasks.multiply") == "tests.tasks.multiply"
    assert current_task_path("tests.tasks.multiply") == "tests.tasks.multiply"
    assert current_task_path("tests.tasks.never_existed") == "tests.tasks.never_existed"


@pytest.mark.django_db
def test_the_docs_renamed_task_runs_the_jobs_queued_under_each_old_path(tmp_path, monkeypatch):
    [block] = python_blocks(section("Renamed tasks and rolling deploys"))
    (tmp_path / "docs_renamed_tasks.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    task = importlib.import_module("docs_renamed_tasks").send_welcome_email
    old_paths = ["myapp.tasks.send_welcome", "myapp.emails.send_welcome_email"]
    queued = [task.enqueue(7).id for _ in old_paths]
    for job_id, old_path in zip(queued, old_paths, strict=True):
        Job.objects.filter(id=job_id).update(task_path=old_path)
    assert run_due_jobs().counts == {"SUCCESSFUL": 2}
    for job_id in queued:
        assert task.get_result(job_id).task.module_path == "docs_renamed_tasks.send_welcome_email"


def test_the_admin_shows_an_aliased_job_under_its_current_name(admin_client):
    enqueued = multiply.enqueue(2, 3)
    Job.objects.filter(id=enqueued.id).update(task_path="tests.legacy_tasks.multiply")
    page = admin_client.get("/admin/jobs/job/").content.decode()
    assert "tests.tasks.multiply (queued as tests.legacy_tasks.multiply)" in page
    detail = admin_client.get(f"/admin/jobs/job/{enqueued.id}/change/").content.decode()
    assert "tests.tasks.multiply (queued as tests.legacy_tasks.multiply)" in detail


def test_a_job_of_a_backend_the_worker_lacks_waits_ready_and_its_executor_lives_on(start_worker):
    stranded = add.enqueue(1, 2)
    Job.objects.filter(id=stranded.id).update(backend="added_in_release_two")
    worker = start_worker("--concurrency", "1")
    line = f"does not load on worker {worker.wait_registered()}"
    wait_until(lambda: worker.output().count(line) >= 2)
    served = add.enqueue(2, 3)
    wait_for_status(served.id)
    assert add.get_result(served.id).return_value == 5
    job = Job.objects.get(id=stranded.id)
    assert (job.status, job.attempts, job.errors) == ("READY", 0, [])
    assert "task backend 'added_in_release_two' is not in this worker's TASKS" in worker.output()
    assert "exiting" not in worker.output()
    worker.check_running()


def test_a_job_of_an_unknown_backend_fails_once_the_grace_is_spent(db):
    stranded = add.enqueue(1, 2)
    long_ago = timezone.now() - timedelta(days=1)
    Job.objects.filter(id=stranded.id).update(backend="retired", enqueued_at=long_ago)
    [result] = run_due_jobs().results
    assert result.status == TaskResultStatus.FAILED
    message = Job.objects.get(id=stranded.id).errors[0]["message"]
    assert "task backend 'retired' is not in this worker's TASKS" in message
    assert "MISSING_TASK_GRACE" in message
