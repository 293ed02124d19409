"""
Unique keys over time, over states, and replaced (jobs.uniqueness): one job
per key whatever the interleaving of the enqueues, from any process.
"""

import importlib
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.tasks.exceptions import InvalidTask

from jobs.models import Job
from jobs.workflows import chain, step
from tests.conftest import BASE_DIR, database_url_for_subprocesses, wait_for_status, wait_until
from tests.docs.pages import python_blocks, section
from tests.tasks import add, sleep_for


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unique_for": 60}, "unique_for goes with a unique_key"),
        ({"unique_key": "k", "unique_for": 0}, "unique_for is a positive number"),
        ({"unique_key": "k", "unique_states": ["DONE"]}, "unique_states is a list of statuses"),
        ({"unique_key": "k", "unique_states": "READY"}, "unique_states is a list of statuses"),
        ({"unique_key": "k", "replace": True, "unique_for": 5}, "goes with a unique_key alone"),
    ],
)
@pytest.mark.django_db
def test_uniqueness_options_that_make_no_sense_are_refused_and_enqueue_nothing(options, message):
    with pytest.raises(InvalidTask, match=message):
        add.using(**options).enqueue(1, 2)
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_unique_for_holds_the_key_for_its_period_whatever_the_status():
    first = add.using(unique_key="daily", unique_for=3600).enqueue(1, 2)
    Job.objects.filter(id=first.id).update(status="SUCCESSFUL")
    again = add.using(unique_key="daily", unique_for=3600).enqueue(3, 4)
    assert again.id == first.id and Job.objects.count() == 1
    # Past the period, the key is free again.
    Job.objects.filter(id=first.id).update(enqueued_at=first.enqueued_at - timedelta(hours=2))
    later = add.using(unique_key="daily", unique_for=3600).enqueue(5, 6)
    assert later.id != first.id and Job.objects.count() == 2


@pytest.mark.django_db
def test_unique_states_hold_the_key_while_a_job_is_in_one_of_them():
    states = ["READY", "RUNNING", "SUCCESSFUL"]
    first = add.using(unique_key="build", unique_states=states).enqueue(1, 2)
    Job.objects.filter(id=first.id).update(status="SUCCESSFUL")
    assert add.using(unique_key="build", unique_states=states).enqueue(1, 2).id == first.id
    Job.objects.filter(id=first.id).update(status="FAILED")
    assert add.using(unique_key="build", unique_states=states).enqueue(1, 2).id != first.id


@pytest.mark.django_db
def test_replace_takes_the_arguments_and_due_time_of_the_new_enqueue():
    first = add.using(unique_key="reindex:7", countdown=60).enqueue(1, 2)
    before = Job.objects.get(id=first.id).run_at
    again = add.using(unique_key="reindex:7", countdown=120, replace=True).enqueue(3, 4)
    assert again.id == first.id and again.args == [3, 4]
    job = Job.objects.get(id=first.id)
    assert job.args == [3, 4] and job.run_at - before >= timedelta(seconds=59)
    assert Job.objects.count() == 1


def test_replace_never_touches_a_running_job(start_worker, started):
    running = sleep_for.using(unique_key="reindex:8").enqueue(3)
    start_worker("--concurrency", "1")
    wait_for_status(running.id, ("RUNNING",))
    again = sleep_for.using(unique_key="reindex:8", replace=True, countdown=30).enqueue(0.1)
    assert again.id == running.id
    job = Job.objects.get(id=running.id)
    assert job.args == [3] and job.status == "RUNNING"
    assert wait_for_status(running.id) == "SUCCESSFUL"


@pytest.mark.parametrize("mode", ["for", "states", "replace"])
@pytest.mark.django_db(transaction=True)
def test_eight_processes_enqueueing_one_key_at_once_make_one_job(mode, tmp_path):
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocesses()}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.enqueue_at", str(tmp_path), mode],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    wait_until(lambda: len(list(tmp_path.glob("ready-*"))) == 8, timeout=60)
    (tmp_path / "go").touch()
    outputs = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    ids = {stdout.strip() for stdout, _ in outputs}
    assert len(ids) == 1, outputs
    assert list(Job.objects.values_list("id", flat=True)) == [Job.objects.get().id]


@pytest.mark.django_db
def test_the_readmes_examples_make_one_job_per_key_when_run_twice(tmp_path, monkeypatch):
    [block] = python_blocks(section("Unique jobs over time, and debounce"))
    (tmp_path / "readme_unique_tasks.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("readme_unique_tasks")
    first = dict(Job.objects.values_list("unique_key", "run_at"))
    importlib.reload(module)
    again = dict(Job.objects.values_list("unique_key", "run_at"))
    assert set(again) == {"digest:42", "first-digest:42", "reindex:7"}
    # The debounced job was pushed back by the second enqueue; the others stayed.
    assert again["reindex:7"] > first["reindex:7"]
    assert again["digest:42"] == first["digest:42"]


@pytest.mark.django_db
def test_a_workflow_step_refuses_a_key_held_over_time_or_replaced():
    for options in ({"unique_for": 60}, {"replace": True}):
        steps = chain(step(add.using(unique_key="wf", **options), 1, 2), step(add, 3))
        with pytest.raises(InvalidTask, match="unique_for, unique_states and replace are for"):
            steps.enqueue()
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_replace_leaves_a_job_waiting_for_its_retry_as_it_is():
    first = add.using(unique_key="reindex:9").enqueue(1, 2)
    Job.objects.filter(id=first.id).update(attempts=1)
    again = add.using(unique_key="reindex:9", replace=True).enqueue(3, 4)
    assert again.id == first.id
    assert Job.objects.get(id=first.id).args == [1, 2]
