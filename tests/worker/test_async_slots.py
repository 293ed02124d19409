"""
Async tasks on an executor's event loop (runworker --async-slots): many at
once in one process, beside the sync jobs its threads run, with timeouts,
cancels and Django's signals as on a thread.
"""

import importlib
import json
import signal

import pytest
from django.core.management import CommandError, call_command

from jobs import operations
from jobs.models import Job, JobStatus
from jobs.testing import run_due_jobs
from tests.conftest import executors_of, most_at_once, wait_for_status, wait_until
from tests.docs.pages import python_blocks, section
from tests.tasks import (
    add,
    async_awaits_past_its_timeout,
    async_blocks_its_loop,
    async_ignores_its_cancel,
    async_wait,
    async_wait_timed,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_one_process_runs_as_many_async_jobs_at_once_as_it_has_slots(start_worker, tmp_path):
    ids = [r.id for r in async_wait_timed.enqueue_many([((0.2,), {})] * 1000)]
    start_worker("--concurrency", "1", "--async-slots", "100")
    done = Job.objects.filter(id__in=ids, status=JobStatus.SUCCESSFUL)
    wait_until(lambda: done.count() == len(ids), timeout=60)
    awaits = [tuple(job.return_value) for job in done]
    took = max(end for _, end in awaits) - min(start for start, _ in awaits)
    ideal = 1000 * 0.2 / 100
    at_once = most_at_once(awaits)
    print(f"1,000 jobs awaiting 0.2 s on 100 slots: {took:.2f} s (ideal {ideal:.1f} s)")
    print(f"at most {at_once} at once")
    # Never more than 100 at once, and 100 at once at the busiest. What a job
    # does besides its await (signals, progress, the outcome) goes through
    # the one thread that serves the loop's database calls, so the whole
    # takes longer than the ideal by 0.5 to 3 ms a job on this machine, as
    # its speed goes (200 s one at a time).
    assert at_once == 100
    assert ideal <= took < 4 * ideal
    # Each reported its progress from the loop.
    assert Job.objects.filter(id__in=ids, progress_message="waited").count() == len(ids)


def test_sync_jobs_run_on_the_threads_beside_them(start_worker):
    mixed = []
    for n in range(50):
        mixed.append(async_wait.enqueue(0.05).id)
        mixed.append(add.enqueue(n, n).id)
    start_worker("--concurrency", "1", "--threads", "2", "--async-slots", "10")
    done = Job.objects.filter(id__in=mixed, status=JobStatus.SUCCESSFUL)
    wait_until(lambda: done.count() == len(mixed), timeout=60)


def test_a_coroutine_past_its_timeout_is_cancelled_and_its_process_goes_on(start_worker):
    worker = start_worker("--concurrency", "1", "--async-slots", "5")
    [executor] = executors_of(worker.pid)
    late = async_awaits_past_its_timeout.enqueue()
    assert wait_for_status(late.id) == JobStatus.FAILED
    [error] = Job.objects.get(id=late.id).errors
    assert error["exception_class_path"] == "jobs.exceptions.JobTimeout"
    assert executors_of(worker.pid) == [executor]


def test_a_coroutine_that_blocks_its_loop_is_killed_and_its_neighbours_results_stand(
    start_worker,
):
    worker = start_worker("--concurrency", "1", "--async-slots", "20")
    [executor] = executors_of(worker.pid)
    neighbours = [r.id for r in async_wait.enqueue_many([((0.05,), {})] * 10)]
    blocking = async_blocks_its_loop.enqueue()
    assert wait_for_status(blocking.id, timeout=30) == JobStatus.FAILED
    [error] = Job.objects.get(id=blocking.id).errors
    assert error["exception_class_path"] == "jobs.exceptions.JobTimeout"
    statuses = set(Job.objects.filter(id__in=neighbours).values_list("status", flat=True))
    assert statuses == {JobStatus.SUCCESSFUL}
    # The executor it blocked was killed and replaced.
    wait_until(
        lambda: len(executors_of(worker.pid)) == 1 and executors_of(worker.pid) != [executor]
    )


def test_a_cancelled_coroutine_is_cancelled_before_its_process_would_be_killed(start_worker):
    worker = start_worker("--concurrency", "1", "--async-slots", "5")
    [executor] = executors_of(worker.pid)
    running = async_ignores_its_cancel.enqueue()
    wait_until(lambda: Job.objects.get(id=running.id).status == JobStatus.RUNNING)
    operations.cancel(running.id)
    # Its slot frees within the grace: a job after it runs on the same process.
    after = async_wait.enqueue(0.01)
    assert wait_for_status(after.id) == JobStatus.SUCCESSFUL
    assert Job.objects.get(id=running.id).status == JobStatus.CANCELLED
    assert executors_of(worker.pid) == [executor]


def test_sigterm_lets_the_running_coroutines_finish(start_worker, started):
    worker = start_worker("--concurrency", "1", "--async-slots", "10")
    ids = [r.id for r in async_wait.enqueue_many([((1.0,), {})] * 10)]
    wait_until(started(*ids))
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    statuses = set(Job.objects.filter(id__in=ids).values_list("status", flat=True))
    assert statuses == {JobStatus.SUCCESSFUL}


def test_the_signals_of_an_async_job_are_sent_as_for_any_job(start_worker, worker_env, tmp_path):
    signals = tmp_path / "signals.jsonl"
    env = {**worker_env, "TEST_SIGNALS_FILE": str(signals)}
    result = async_wait.enqueue(0.01)
    start_worker("--concurrency", "1", "--async-slots", "5", env=env)
    assert wait_for_status(result.id) == JobStatus.SUCCESSFUL
    wait_until(lambda: signals.exists() and len(signals.read_text().splitlines()) == 2)
    started, finished = (json.loads(line) for line in signals.read_text().splitlines())
    assert (started["signal"], started["status"]) == ("task_started", "RUNNING")
    assert (finished["signal"], finished["status"], finished["return_value"]) == (
        "task_finished",
        "SUCCESSFUL",
        0.01,
    )


def test_async_slots_cannot_be_negative():
    with pytest.raises(CommandError, match="--async-slots must be 0 or more"):
        call_command("runworker", "--async-slots", "-1")


def test_the_docs_example_runs_and_reports_its_progress(tmp_path, monkeypatch):
    [block] = python_blocks(section("Async tasks, many at once"))
    (tmp_path / "docs_async_tasks.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("docs_async_tasks")
    result = module.send_text.enqueue("+14155550123", "Welcome")
    assert run_due_jobs().counts == {"SUCCESSFUL": 1}
    job = Job.objects.get(id=result.id)
    assert (job.return_value, job.progress_message) == ("sent to +14155550123", "sent")
