"""What operators rely on: rescue, fencing, shutdown, retries, timeouts, cancel, pruning."""

import itertools
import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from jobs import operations, results
from jobs.models import Job
from jobs.worker.coordinator import REPEATED_SIGNAL_WINDOW
from tests.conftest import (
    executors_of,
    fetch,
    fetch_value,
    gone,
    wait_for_status,
    wait_until,
)
from tests.tasks import (
    add,
    always_fails,
    exits_the_process,
    noop,
    record_run,
    sleep_for,
    sleeps_past_timeout,
    slow_on_first_attempt,
)

DEAD_AFTER = 2.0  # tests/worker_settings.py


@pytest.fixture
def fast_env(worker_env):
    return {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.worker_settings"}


def job(job_id: str) -> Job:
    return Job.objects.get(id=job_id)


def test_kill_9_of_a_worker_mid_job_is_rescued_and_run_once(start_worker, fast_env, ledger):
    result = slow_on_first_attempt.enqueue(30)
    first = start_worker("--concurrency", "1", env=fast_env)
    wait_for_status(result.id, ("RUNNING",))
    executors = executors_of(first.pid)
    assert len(executors) == 1
    killed_at = time.monotonic()
    first.signal(signal.SIGKILL)
    first.wait()
    # The kernel kills the orphaned executor too, so the first run never completes.
    wait_until(lambda: all(gone(p) for p in executors))

    start_worker("--concurrency", "1", env=fast_env)
    wait_for_status(result.id, ("SUCCESSFUL",), timeout=30)
    rescued_in = time.monotonic() - killed_at
    row = job(result.id)
    assert row.attempts == 2
    assert row.errors[0]["exception_class_path"] == "jobs.exceptions.WorkerLost"
    assert fetch("SELECT runs, last_attempt FROM test_ledger") == [(1, 2)]
    assert rescued_in < DEAD_AFTER + 10
    print(f"\nre-run {rescued_in:.1f} s after kill -9 (dead after {DEAD_AFTER} s)")


def test_a_frozen_worker_that_wakes_cannot_overwrite_the_rerun(start_worker, fast_env, ledger):
    result = slow_on_first_attempt.enqueue(3)
    frozen = start_worker("--concurrency", "1", env=fast_env)
    wait_for_status(result.id, ("RUNNING",))
    frozen.signal(signal.SIGSTOP)
    try:
        start_worker("--concurrency", "1", env=fast_env)
        wait_for_status(result.id, ("SUCCESSFUL",), timeout=30)
        # The frozen worker's executor finishes attempt 1 meanwhile (its outcome
        # waits in the pipe of the frozen coordinator).
        wait_until(lambda: fetch_value("SELECT runs FROM test_ledger") == 2, timeout=10)
    finally:
        frozen.signal(signal.SIGCONT)

    def discarded():
        """the woken worker logged that its result was discarded"""
        return "result discarded" in frozen.output()

    wait_until(discarded, timeout=15)
    row = job(result.id)
    assert (row.status, row.attempts, row.return_value) == ("SUCCESSFUL", 2, 2)


def test_a_worker_declared_dead_does_not_start_the_jobs_it_held(start_worker, fast_env, ledger):
    """The rescue gave its queued jobs to another worker: they must run there only."""
    # Longer than the freeze can last on a slow machine (the second worker's
    # start, the rescue, five jobs): it must still be running on waking.
    long = slow_on_first_attempt.enqueue(60)
    queued = [r.id for r in record_run.enqueue_many([(("queued",), {})] * 5)]
    frozen = start_worker("--concurrency", "1", "--prefetch", "10", env=fast_env)
    wait_until(lambda: Job.objects.filter(status="RUNNING").count() == 6)
    frozen.signal(signal.SIGSTOP)
    try:
        start_worker("--concurrency", "1", env=fast_env)
        wait_until(
            lambda: Job.objects.filter(id__in=queued, status="SUCCESSFUL").count() == 5,
            timeout=30,
        )
    finally:
        frozen.signal(signal.SIGCONT)

    def stopped():
        """the woken worker stopped the long job and gave back the others"""
        return "stopping its 1 running job(s) and the 5 others it holds" in frozen.output()

    wait_until(stopped, timeout=30)
    frozen.signal(signal.SIGTERM)
    assert frozen.wait() == 0
    runs = dict(fetch("SELECT job_id::text, runs FROM test_ledger"))
    assert [runs[job_id] for job_id in queued] == [1] * 5
    # The job it was running, in an executor that the freeze of the
    # coordinator alone did not stop, was killed on waking, before its end.
    assert runs[long.id] == 1
    assert "result discarded" not in frozen.output()


def test_sigterm_lets_running_jobs_finish_and_exits_0(start_worker, started, ledger):
    ids = [r.id for r in sleep_for.enqueue_many([((1.0,), {})] * 2)]
    worker = start_worker("--concurrency", "2", "--prefetch", "1", "--shutdown-timeout", "20")
    wait_until(started(*ids))
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert set(Job.objects.filter(id__in=ids).values_list("status", flat=True)) == {"SUCCESSFUL"}
    assert fetch_value("SELECT count(*) FROM jobs_worker") == 0


def test_sigterm_gives_back_claimed_jobs_at_once_while_the_running_one_finishes(
    start_worker, started, ledger
):
    running = sleep_for.enqueue(3.0)
    queued = [r.id for r in record_run.enqueue_many([(("queued",), {})] * 4)]
    worker = start_worker("--concurrency", "1", "--prefetch", "5", "--shutdown-timeout", "20")
    wait_until(lambda: Job.objects.filter(status="RUNNING").count() == 5)
    wait_until(started(running.id))
    worker.signal(signal.SIGTERM)

    def given_back():
        """the four waiting jobs are READY again, their attempt not spent"""
        rows = Job.objects.filter(id__in=queued)
        return {(row.status, row.attempts) for row in rows} == {("READY", 0)}

    wait_until(given_back, timeout=2.0)
    assert job(running.id).status == "RUNNING"
    assert worker.wait() == 0
    assert job(running.id).status == "SUCCESSFUL"
    assert fetch_value("SELECT count(*) FROM test_ledger") == 0


def test_ctrl_c_under_a_process_manager_is_one_stop_request(start_worker, started):
    """SIGINT from the terminal and SIGTERM from honcho at once: still a graceful stop."""
    result = sleep_for.enqueue(1.0)
    worker = start_worker("--concurrency", "1", "--shutdown-timeout", "20")
    wait_until(started(result.id))
    worker.signal(signal.SIGINT)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert job(result.id).status == "SUCCESSFUL"
    assert "stopping now" not in worker.output()


def test_a_second_signal_later_stops_at_once(start_worker, started):
    result = sleep_for.enqueue(60)
    worker = start_worker("--concurrency", "1", "--shutdown-timeout", "60")
    wait_until(started(result.id))
    worker.signal(signal.SIGTERM)
    wait_until(lambda: "no more claims" in worker.output())
    # The gap is the point: a signal within the window would be the same request.
    time.sleep(REPEATED_SIGNAL_WINDOW + 0.2)
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert "SIGTERM again: stopping now" in worker.output()
    # Killed without waiting for the grace, and put back like any job left at shutdown.
    assert (job(result.id).status, job(result.id).attempts) == ("READY", 0)


def test_sigterm_past_the_grace_puts_jobs_back_without_spending_an_attempt(start_worker, started):
    ids = [r.id for r in sleep_for.enqueue_many([((60,), {})] * 3)]
    worker = start_worker("--concurrency", "2", "--prefetch", "2", "--shutdown-timeout", "1")
    wait_until(lambda: Job.objects.filter(status="RUNNING").count() == 3)
    # Dealt one at a time: the first two run, one on each executor.
    wait_until(started(*ids[:2]))
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    rows = Job.objects.filter(id__in=ids)
    assert [(r.status, r.attempts, r.worker_ids) for r in rows] == [("READY", 0, [])] * 3
    # The one waiting job went back at the signal, the two running at the grace's end.
    assert "Giving back 1 claimed job(s) that had not started" in worker.output()
    assert "Put 2 unfinished job(s) back to READY" in worker.output()


def test_a_task_that_always_raises_runs_max_attempts_with_growing_gaps(
    start_worker, fast_env, ledger
):
    result = always_fails.enqueue()
    start_worker("--concurrency", "1", env=fast_env)
    wait_for_status(result.id, ("FAILED",), timeout=30)
    row = job(result.id)
    assert row.attempts == 4
    assert fetch_value("SELECT runs FROM test_ledger") == 4
    assert [e["message"] for e in row.errors] == [f"attempt {n} failed" for n in range(1, 5)]
    assert all("RuntimeError" in e["traceback"] for e in row.errors)
    times = [e["at"] for e in row.errors]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps == sorted(gaps), f"backoff gaps must grow: {gaps}"


def test_a_task_past_its_timeout_is_killed_on_time_and_retried(start_worker, fast_env):
    result = sleeps_past_timeout.enqueue()
    start_worker("--concurrency", "1", env=fast_env)
    wait_for_status(result.id, ("FAILED",), timeout=30)
    row = job(result.id)
    assert row.attempts == 2
    assert [e["exception_class_path"] for e in row.errors] == ["jobs.exceptions.JobTimeout"] * 2
    elapsed = (row.finished_at - row.started_at).total_seconds()
    assert elapsed < 6, f"two 1 s attempts took {elapsed:.1f} s"


def test_an_executor_that_dies_fails_only_its_own_job(start_worker):
    doomed = exits_the_process.enqueue()
    fine = [r.id for r in add.enqueue_many([((1, 2), {})] * 5)]
    start_worker("--concurrency", "1", "--prefetch", "6")
    wait_for_status(doomed.id, ("FAILED",))
    wait_until(lambda: Job.objects.filter(id__in=fine, status="SUCCESSFUL").count() == 5)
    assert "exit code 3" in job(doomed.id).errors[0]["message"]


def test_a_job_that_kills_its_executor_after_a_run_of_short_ones_is_the_one_that_fails(
    start_worker, ledger
):
    """
    Outcomes travel in batches, so when the executor dies some finished jobs
    may not have been reported yet. The slots tell which job was running: the
    doomed one fails once and for all. A short job whose outcome was lost
    with the process spends an attempt too (it may have been the cause), and
    runs again.
    """
    short = [r.id for r in record_run.enqueue_many([(("short",), {})] * 200)]
    doomed = exits_the_process.enqueue()
    start_worker("--concurrency", "1", "--prefetch", "250")
    wait_for_status(doomed.id, ("FAILED",))
    wait_until(lambda: Job.objects.filter(id__in=short, status="SUCCESSFUL").count() == 200)
    row = job(doomed.id)
    assert row.attempts == 1
    assert [e["exception_class_path"] for e in row.errors] == ["jobs.exceptions.ExecutorDied"]
    assert "while running the job" in row.errors[0]["message"]
    for retried in Job.objects.filter(id__in=short, attempts__gt=1):
        assert retried.attempts == 2
        assert "its outcome was lost" in retried.errors[0]["message"]
    assert fetch_value("SELECT count(*) FROM test_ledger") == 200


def test_the_outcome_connection_lost_mid_run_pauses_claims_and_loses_nothing(start_worker, ledger):
    ids = [r.id for r in record_run.enqueue_many([(("many",), {})] * 3000)]
    worker = start_worker("--concurrency", "2")
    wait_until(lambda: Job.objects.filter(id__in=ids, status="SUCCESSFUL").exists())
    terminated = fetch_value(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE 'jobs worker % outcomes'"
    )
    assert terminated == 1
    wait_until(
        lambda: Job.objects.filter(id__in=ids, status="SUCCESSFUL").count() == 3000, timeout=60
    )
    assert fetch_value("SELECT max(runs) FROM test_ledger") == 1
    assert fetch_value("SELECT count(*) FROM test_ledger") == 3000
    output = worker.output()
    assert "Outcomes cannot be written" in output
    assert "Outcomes are written again" in output
    assert "Database unreachable" not in output


def test_cancel_before_start_never_runs(start_worker, ledger):
    result = record_run.enqueue("cancelled")
    operations.cancel(result.id)
    after = noop.enqueue()
    start_worker("--concurrency", "1")
    wait_for_status(after.id, ("SUCCESSFUL",))
    assert job(result.id).status == "CANCELLED"
    assert fetch_value("SELECT count(*) FROM test_ledger") == 0


def test_cancel_while_running_stops_the_executor_after_its_grace(
    start_worker, started, ledger, fast_env
):
    result = slow_on_first_attempt.enqueue(60)
    worker = start_worker("--concurrency", "1", env=fast_env)
    wait_until(started(result.id))
    [executor] = executors_of(worker.pid)
    assert operations.cancel(result.id) == "RUNNING"
    cancelled_at = time.monotonic()
    wait_until(lambda: gone(executor), timeout=10)
    # The task, which does not look, had CANCEL_GRACE (0.5 s in tests.worker_settings).
    assert time.monotonic() - cancelled_at >= 0.5
    after = noop.enqueue()
    wait_for_status(after.id, ("SUCCESSFUL",))
    assert job(result.id).status == "CANCELLED"
    assert fetch_value("SELECT count(*) FROM test_ledger") == 0


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_enqueues_of_one_unique_key_make_one_job():
    barrier = threading.Barrier(50)
    ids, errors = [], []

    def enqueue():
        try:
            barrier.wait()
            ids.append(add.using(unique_key="report:2026-11-24").enqueue(1, 2).id)
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=enqueue) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 1
    assert Job.objects.filter(unique_key="report:2026-11-24").count() == 1


@pytest.mark.django_db(transaction=True)
def test_pruning_removes_exactly_the_finished_jobs_past_their_age(capsys):
    old = timezone.now() - timedelta(days=40)
    recent = timezone.now() - timedelta(days=1)
    ids = {}
    for name, status, finished in [
        ("old_ok", "SUCCESSFUL", old),
        ("old_failed", "FAILED", old),
        ("old_cancelled", "CANCELLED", old),
        ("recent_ok", "SUCCESSFUL", recent),
        ("old_ready", "READY", None),
        ("old_running", "RUNNING", None),
    ]:
        result = add.enqueue(1, 2)
        Job.objects.filter(id=result.id).update(
            status=status, finished_at=finished, enqueued_at=old, run_at=old
        )
        ids[name] = result.id

    call_command("jobs", "prune", "--dry-run")
    out = capsys.readouterr().out
    assert "SUCCESSFUL: 1 job(s)" in out and "FAILED/CANCELLED: 2 job(s)" in out
    assert Job.objects.count() == 6

    call_command("jobs", "prune")
    out = capsys.readouterr().out
    assert "SUCCESSFUL: deleted 1 job(s)" in out and "FAILED/CANCELLED: deleted 2 job(s)" in out
    left = set(Job.objects.values_list("id", flat=True))
    assert {str(i) for i in left} == {ids["recent_ok"], ids["old_ready"], ids["old_running"]}


@pytest.mark.django_db(transaction=True)
def test_prunejobs_says_it_is_deprecated_and_prunes(capsys):
    result = add.enqueue(1, 2)
    old = timezone.now() - timedelta(days=40)
    Job.objects.filter(id=result.id).update(status="SUCCESSFUL", finished_at=old)
    call_command("prunejobs", "--dry-run")
    out, err = capsys.readouterr()
    [notice] = err.splitlines()
    assert notice.startswith("`manage.py prunejobs` is deprecated: use `manage.py jobs prune`")
    assert "SUCCESSFUL: 1 job(s) older than 604800 s would be deleted" in out
    call_command("prunejobs", "--batch-size", "10")
    assert "SUCCESSFUL: deleted 1 job(s)" in capsys.readouterr().out
    assert not Job.objects.exists()


def test_waiting_on_a_job_returns_within_milliseconds_of_its_completion(start_worker):
    start_worker("--concurrency", "1")
    result = sleep_for.enqueue(0.5)
    fetched = results.wait(result.id, timeout=30)
    returned_at = timezone.now()
    assert fetched.status == "SUCCESSFUL"
    lag = (returned_at - fetched.finished_at).total_seconds() * 1000
    print(f"\nwait() returned {lag:.1f} ms after the job finished")
    assert lag < 200

    pending = sleep_for.using(countdown=3600).enqueue(1)
    with pytest.raises(TimeoutError):
        results.wait(pending.id, timeout=0.3)


def test_max_tasks_per_child_recycles_executors(start_worker, ledger):
    record_run.enqueue_many([(("recycle",), {})] * 6)
    start_worker("--concurrency", "1", "--prefetch", "1", "--max-tasks-per-child", "2")
    wait_until(lambda: fetch_value("SELECT count(*) FROM test_ledger") == 6)
    assert fetch_value("SELECT count(DISTINCT pid) FROM test_ledger") == 3
    assert os.getpid() not in [row[0] for row in fetch("SELECT pid FROM test_ledger")]
