"""runworker as real subprocesses against the test database."""

import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.tasks import TaskResultStatus, default_task_backend
from django.utils import timezone

from jobs.models import Job
from tests.conftest import BASE_DIR, fetch, fetch_value, wait_for_status, wait_until
from tests.tasks import add, async_add, fail, fails_twice, noop, record_run, sleep_for


def test_committed_job_runs_and_its_status_goes_ready_running_successful(start_worker):
    result = sleep_for.enqueue(0.5)
    assert default_task_backend.get_result(result.id).status == TaskResultStatus.READY
    start_worker("--concurrency", "1")

    wait_for_status(result.id, ("RUNNING",))
    fetched = default_task_backend.get_result(result.id)
    assert fetched.status == TaskResultStatus.RUNNING
    assert fetched.attempts == 1 and fetched.started_at is not None

    assert wait_for_status(result.id) == "SUCCESSFUL"
    fetched = sleep_for.get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 0.5
    assert fetched.finished_at >= fetched.started_at
    assert len(fetched.worker_ids) == 1


def test_failed_job_keeps_its_traceback(start_worker):
    result = fail.enqueue("the printer is on fire")
    start_worker("--concurrency", "1")
    assert wait_for_status(result.id) == "FAILED"
    fetched = default_task_backend.get_result(result.id)
    assert fetched.status == TaskResultStatus.FAILED
    [error] = fetched.errors
    assert error.exception_class is ValueError
    assert "the printer is on fire" in error.traceback
    assert 'tests/tasks.py", line' in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = fetched.return_value


def test_rolled_back_enqueue_never_runs_and_committed_one_does(start_worker, ledger):
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = record_run.enqueue("rolled back")
        raise RuntimeError("user creation failed")
    with transaction.atomic():
        committed = record_run.enqueue("committed")
    start_worker("--concurrency", "1")
    assert wait_for_status(committed.id) == "SUCCESSFUL"
    assert fetch("SELECT job_id::text FROM test_ledger") == [(committed.id,)]
    assert not Job.objects.filter(id=rolled_back.id).exists()


def test_async_task_and_context_attempt(start_worker):
    async_result = async_add.enqueue(20, 22)
    context_result = record_run.enqueue("context")
    start_worker("--concurrency", "1")
    assert wait_for_status(async_result.id) == "SUCCESSFUL"
    assert wait_for_status(context_result.id) == "SUCCESSFUL"
    assert async_add.get_result(async_result.id).return_value == 42
    # record_run returns context.attempt.
    assert record_run.get_result(context_result.id).return_value == 1


def test_a_job_whose_task_did_not_load_for_longer_than_the_grace_fails_clearly(start_worker):
    orphan = noop.enqueue()
    # Enqueued two hours ago: past MISSING_TASK_GRACE (an hour) already.
    Job.objects.filter(id=orphan.id).update(
        task_path="tests.tasks.deleted_in_a_refactor",
        enqueued_at=timezone.now() - timedelta(hours=2),
    )
    after = add.enqueue(1, 1)
    worker = start_worker("--concurrency", "1")
    assert wait_for_status(orphan.id) == "FAILED"
    assert wait_for_status(after.id) == "SUCCESSFUL"
    job = Job.objects.get(id=orphan.id)
    assert job.attempts == 1
    assert "does not import" in job.errors[0]["message"]
    assert "MISSING_TASK_GRACE is 3600 s" in job.errors[0]["message"]
    assert worker.process.poll() is None


def test_countdown_job_starts_after_run_after_and_soon_after(start_worker):
    start_worker("--concurrency", "1")
    enqueued = timezone.now()
    result = add.using(countdown=2).enqueue(1, 2)
    assert wait_for_status(result.id, timeout=10) == "SUCCESSFUL"
    job = Job.objects.get(id=result.id)
    assert job.started_at >= job.run_at >= enqueued + timedelta(seconds=2)
    late = (job.started_at - job.run_at).total_seconds()
    assert late < 0.5, f"started {late:.3f} s after run_at"


def test_priority_order_holds_across_one_claim_batch(start_worker, ledger):
    priorities = [0, 50, -20, 100, 10, -100, 50, 0]
    ids = {}
    for priority in priorities:
        result = record_run.using(priority=priority).enqueue(str(priority))
        ids[result.id] = priority
    # One executor with room for all eight: a single claim takes them all, and
    # the executor runs them in the order the claim sorted them.
    start_worker("--concurrency", "1", "--prefetch", "8")
    wait_until(lambda: fetch_value("SELECT count(*) FROM test_ledger") == len(priorities))
    ran = [ids[str(row[0])] for row in fetch("SELECT job_id FROM test_ledger ORDER BY seq")]
    assert ran == sorted(priorities, reverse=True)
    claims = fetch_value("SELECT count(DISTINCT last_attempted_at) FROM jobs_job")
    assert claims == 1, "all eight jobs were claimed in one statement"


def test_four_workers_drain_5000_jobs_each_exactly_once(start_worker, ledger):
    record_run.enqueue_many([(("drain",), {})] * 5000)
    started = time.monotonic()
    workers = [start_worker("--concurrency", "2", wait=False) for _ in range(4)]

    def drained():
        """every job finished"""
        return not Job.objects.exclude(status="SUCCESSFUL").exists()

    wait_until(drained, timeout=120, interval=0.1)
    elapsed = time.monotonic() - started
    assert fetch_value("SELECT count(*) FROM test_ledger") == 5000
    assert fetch_value("SELECT count(*) FROM test_ledger WHERE runs > 1") == 0
    assert fetch_value("SELECT count(DISTINCT pid) FROM test_ledger") > 4, "every worker took part"
    print(f"\n4 workers drained 5,000 jobs in {elapsed:.2f} s ({5000 / elapsed:,.0f} jobs/s)")
    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [worker.wait() for worker in workers] == [0, 0, 0, 0]
    assert fetch_value("SELECT count(*) FROM jobs_worker") == 0


def test_idle_worker_picks_a_job_up_within_milliseconds(start_worker):
    start_worker("--concurrency", "1")
    latencies = []
    for _ in range(20):
        result = noop.enqueue()
        wait_for_status(result.id)
        job = Job.objects.get(id=result.id)
        latencies.append((job.started_at - job.enqueued_at).total_seconds() * 1000)
    latencies.sort()
    p50, worst = latencies[10], latencies[-1]
    print(f"\nenqueue->start on an idle worker: p50 {p50:.1f} ms, max {worst:.1f} ms")
    assert p50 < 100, "woken by NOTIFY, not by the 5 s poll"


def test_runworker_rejects_a_queue_that_is_not_configured(worker_env):
    completed = subprocess.run(
        [sys.executable, "manage.py", "runworker", "--queues", "default,nope"],
        cwd=BASE_DIR,
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 1
    assert "Unknown queue(s) nope" in completed.stderr


def test_worker_logs_a_summary_at_start_and_one_line_per_job(start_worker):
    result = add.enqueue(1, 2)
    worker = start_worker("--concurrency", "1", "--queues", "default")
    wait_for_status(result.id)

    def logged():
        """the job's line is in the log"""
        return result.id in worker.output()

    wait_until(logged)
    output = worker.output()
    assert "started: queues default, concurrency 1" in output
    assert f"Job {result.id} tests.tasks.add SUCCESSFUL" in output
    assert str(uuid.UUID(result.id)) in output


@pytest.mark.parametrize(
    ("verbosity", "env_level", "per_job_line"),
    [("0", None, False), ("1", None, True), ("0", "INFO", True), ("1", "WARNING", False)],
)
def test_verbosity_sets_the_log_level_and_jobs_log_level_overrides_it(
    start_worker, worker_env, verbosity, env_level, per_job_line
):
    env = {name: value for name, value in worker_env.items() if name != "JOBS_LOG_LEVEL"}
    if env_level:
        env["JOBS_LOG_LEVEL"] = env_level
    result = add.enqueue(1, 2)
    worker = start_worker("--concurrency", "1", "-v", verbosity, env=env)
    wait_for_status(result.id)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    output = worker.output()
    assert (f"Job {result.id} tests.tasks.add SUCCESSFUL" in output) is per_job_line
    assert ("Worker " in output and " stopped" in output) is per_job_line
    # Django's own per-task lines say the same as the worker's: kept below -v 2.
    assert f"Task id={result.id}" not in output


def test_a_retried_attempt_logs_the_delay_to_its_retry_and_only_the_last_logs_failed(
    start_worker, worker_env
):
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.worker_settings", "DJANGO_DEBUG": "1"}
    result = fails_twice.enqueue()
    worker = start_worker("--concurrency", "1", env=env)
    assert wait_for_status(result.id) == "FAILED"
    path = "tests.tasks.fails_twice"

    def both_logged():
        """both attempts are in the log"""
        return "(attempt 2 of 2)" in worker.output()

    output = wait_until(both_logged) and worker.output()
    retry = re.search(
        rf"Job {result.id} {path} failed in [0-9.]+ ms \(attempt 1 of 2\): "
        r"builtins\.ValueError: not this time; retry in ([0-9.]+) s",
        output,
    )
    assert retry, output
    # RETRY_BACKOFF_BASE is 0.2 s in tests.worker_settings: the first retry waits 0.1-0.2 s.
    assert 0.05 <= float(retry.group(1)) <= 0.25
    assert re.search(
        rf"ERROR jobs.worker Job {result.id} {path} FAILED in [0-9.]+ ms \(attempt 2 of 2\): "
        r"builtins\.ValueError: not this time",
        output,
    )
    # Django's own ERROR line, with its traceback, only for the attempt that failed for good.
    assert output.count(f"Task id={result.id} path={path} state=FAILED") == 1
