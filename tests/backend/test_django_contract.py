"""
Django's Tasks contract, point by point: what the queue does against what
Django documents for a backend and what its own ImmediateBackend does with
the same task.
"""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.tasks import TaskResultStatus, default_task_backend, task_backends
from django.tasks.signals import task_finished
from django.test import override_settings
from django.utils import timezone

from jobs.backend import PostgresBackend
from jobs.models import Job
from jobs.options import QueueOptions
from jobs.testing import run_due_jobs
from tests.conftest import job_status, wait_for_status, wait_until
from tests.docs.pages import python_blocks, section
from tests.tasks import (
    add,
    calls_exit,
    fails_twice,
    raises_custom_base_exception,
    raises_keyboard_interrupt,
    raises_system_exit,
    raises_unprintable,
)

IMMEDIATE = {
    "default": {
        "BACKEND": "django.tasks.backends.immediate.ImmediateBackend",
        "QUEUES": ["default", "communications", "reports"],
    }
}


def signals(path: Path, job_id: str) -> list[dict]:
    """What task_started and task_finished carried for one job, in order."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if line["id"] == job_id]


@pytest.fixture
def signals_file(worker_env, tmp_path, monkeypatch) -> Path:
    """TEST_SIGNALS_FILE for this process and the workers it starts (tests.tasks.record_signal)."""
    path = tmp_path / "signals.jsonl"
    monkeypatch.setenv("TEST_SIGNALS_FILE", str(path))
    worker_env["TEST_SIGNALS_FILE"] = str(path)
    return path


def immediate_result(task, *args):
    """The same task run by Django's ImmediateBackend, in this process."""
    with override_settings(TASKS=IMMEDIATE):
        return task.enqueue(*args)


# get_result() gives back what enqueue() gave.


@pytest.mark.parametrize(
    "configure",
    [
        pytest.param(lambda task: task, id="as declared"),
        pytest.param(
            lambda task: task.using(run_after=timezone.now() + timedelta(hours=1)), id="run_after"
        ),
        pytest.param(lambda task: task.using(countdown=30), id="countdown"),
        pytest.param(
            lambda task: task.using(priority=7, queue_name="reports"), id="priority and queue"
        ),
        pytest.param(
            lambda task: task.using(max_attempts=9, timeout=12.5, unique_key="contract-key"),
            id="the queue's options",
        ),
    ],
)
def test_get_result_equals_the_result_enqueue_returned(db, configure):
    enqueued = configure(add).enqueue(2, 3)
    fetched = default_task_backend.get_result(enqueued.id)
    assert fetched == enqueued
    assert fetched.task == enqueued.task
    assert fetched.task.run_after == enqueued.task.run_after


def test_a_task_enqueued_without_run_after_reads_back_with_run_after_none(db):
    enqueued = add.enqueue(1, 1)
    assert enqueued.task.run_after is None
    assert default_task_backend.get_result(enqueued.id).task.run_after is None


# A BaseException fails the attempt with that exception, as in ImmediateBackend.


@pytest.mark.parametrize(
    ("task", "exception_class_path"),
    [
        (raises_system_exit, "builtins.SystemExit"),
        (calls_exit, "builtins.SystemExit"),
        (raises_custom_base_exception, "tests.tasks.CustomInterruption"),
        (raises_unprintable, "tests.tasks.UnprintableError"),
    ],
)
def test_a_task_raising_any_base_exception_fails_its_attempt_like_immediate_backend(
    start_worker, signals_file, task, exception_class_path
):
    immediate = immediate_result(task)
    assert immediate.status == TaskResultStatus.FAILED
    assert [error.exception_class_path for error in immediate.errors] == [exception_class_path]

    enqueued = task.enqueue()
    worker = start_worker("--concurrency", "1")
    assert wait_for_status(enqueued.id) == "FAILED"
    ours = default_task_backend.get_result(enqueued.id)
    assert ours.status == immediate.status
    assert [error.exception_class_path for error in ours.errors] == [exception_class_path]
    assert 'tests/tasks.py", line' in ours.errors[0].traceback

    finished = signals(signals_file, enqueued.id)[-1]
    assert finished["signal"] == "task_finished"
    assert finished["status"] == "FAILED" and finished["finished"]
    assert finished["errors"] == [exception_class_path]
    # Django's own receiver logged its error line, from the executor.
    wait_until(
        lambda: f"Task id={enqueued.id} path={task.module_path} state=FAILED" in worker.output()
    )

    # The executor goes on: no executor died, and the next job runs.
    after = add.enqueue(1, 1)
    assert wait_for_status(after.id) == "SUCCESSFUL"
    assert "executor process died" not in worker.output()


def test_keyboard_interrupt_in_a_task_fails_the_attempt_instead_of_stopping_the_worker(
    start_worker,
):
    # ImmediateBackend hands a KeyboardInterrupt on to the user at the
    # keyboard; a worker has none, so the attempt fails with it instead.
    with pytest.raises(KeyboardInterrupt):
        immediate_result(raises_keyboard_interrupt)
    enqueued = raises_keyboard_interrupt.enqueue()
    worker = start_worker("--concurrency", "1")
    assert wait_for_status(enqueued.id) == "FAILED"
    [error] = default_task_backend.get_result(enqueued.id).errors
    assert error.exception_class_path == "builtins.KeyboardInterrupt"
    assert worker.process.poll() is None


def test_an_exception_whose_str_fails_is_still_recorded_as_itself(start_worker):
    enqueued = raises_unprintable.enqueue()
    start_worker("--concurrency", "1")
    assert wait_for_status(enqueued.id) == "FAILED"
    errors = Job.objects.get(id=enqueued.id).errors
    assert errors[0]["exception_class_path"] == "tests.tasks.UnprintableError"
    assert "str() failed" in errors[0]["message"]


# The TaskResult that the signals carry is true at that moment.


def test_signals_carry_the_result_as_it_stands_like_immediate_backend(start_worker, signals_file):
    immediate = immediate_result(add, 20, 22)
    expected = signals(signals_file, immediate.id)

    enqueued = add.enqueue(20, 22)
    start_worker("--concurrency", "1")
    assert wait_for_status(enqueued.id) == "SUCCESSFUL"
    ours = signals(signals_file, enqueued.id)
    for line in [*expected, *ours]:
        del line["id"]
    assert ours == expected
    assert [line["status"] for line in ours] == ["RUNNING", "SUCCESSFUL"]
    assert ours[1]["finished"] and ours[1]["return_value"] == 42


def test_a_failed_attempt_that_will_be_retried_sends_ready_not_failed(start_worker, signals_file):
    enqueued = fails_twice.enqueue()
    start_worker("--concurrency", "1")
    assert wait_for_status(enqueued.id) == "FAILED"
    finished = [
        line for line in signals(signals_file, enqueued.id) if line["signal"] == "task_finished"
    ]
    assert [(line["status"], line["finished"], line["errors"]) for line in finished] == [
        ("READY", False, ["builtins.ValueError"]),
        ("FAILED", True, ["builtins.ValueError", "builtins.ValueError"]),
    ]


def test_the_signals_task_is_the_one_enqueued_with_its_queue_and_run_after(
    start_worker, signals_file
):
    run_after = timezone.now() + timedelta(milliseconds=200)
    enqueued = add.using(queue_name="reports", run_after=run_after).enqueue(1, 2)
    start_worker("--concurrency", "1")
    assert wait_for_status(enqueued.id) == "SUCCESSFUL"
    started = signals(signals_file, enqueued.id)[0]
    assert started["queue_name"] == "reports"
    assert started["run_after"] == run_after.isoformat()


@pytest.mark.django_db
def test_the_docs_receiver_prints_a_job_that_failed_for_good_once(capsys):
    [block] = python_blocks(section("Signals"))
    namespace = {}
    exec(block, namespace)
    try:
        failed = fails_twice.enqueue()
        add.enqueue(1, 2)
        # Two attempts of fails_twice: the first finishes READY, to be retried.
        assert run_due_jobs(include_retries=True).attempts == 3
    finally:
        task_finished.disconnect(namespace["count_failures"])
    assert capsys.readouterr().out == f"failed: tests.tasks.fails_twice {failed.id}\n"


# QUEUES = [] allows any queue name.

ANY_QUEUE = {"default": {"BACKEND": "jobs.backend.PostgresBackend", "QUEUES": []}}


def test_an_empty_queues_list_allows_any_queue_and_a_worker_works_them_all(
    start_worker, worker_env
):
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.any_queue_settings"}
    with override_settings(TASKS=ANY_QUEUE):
        first = add.using(queue_name="invoices").enqueue(1, 2)
        second = add.using(queue_name="thumbnails-2").enqueue(3, 4)
        named = add.using(queue_name="only-this-one").enqueue(5, 6)
    start_worker("--concurrency", "1", "--queues", "only-this-one", env=env)
    assert wait_for_status(named.id) == "SUCCESSFUL"
    assert job_status(first.id) == job_status(second.id) == "READY"
    start_worker("--concurrency", "1", env=env)
    assert wait_for_status(first.id) == "SUCCESSFUL"
    assert wait_for_status(second.id) == "SUCCESSFUL"


# backend.options is the OPTIONS setting as given.


def test_backend_options_are_the_setting_as_given_and_queue_options_fill_the_defaults():
    backend = PostgresBackend("contract", {"OPTIONS": {"MAX_ATTEMPTS": 7}})
    assert backend.options == {"MAX_ATTEMPTS": 7}
    assert backend.queue_options.max_attempts == 7
    assert backend.queue_options.poll_interval == QueueOptions().poll_interval == 5.0
    assert PostgresBackend("bare", {}).options == {}
    assert task_backends["default"].options == {"LIMITS": settings.SIGNUP_SEND_LIMITS}
