"""runworker --threads: I/O-bound jobs at once in one process, and what a kill takes with it."""

import pytest

from jobs import operations
from jobs.models import Job
from tests.conftest import fetch, fetch_value, wait_for_status, wait_until
from tests.tasks import add, calls_sys_exit, rendezvous, sleep_for, slow_on_first_attempt, times_out


def test_eight_threads_run_eight_jobs_at_once_in_one_process(start_worker, ledger):
    ids = [r.id for r in rendezvous.enqueue_many([((8,), {})] * 8)]
    start_worker("--concurrency", "1", "--threads", "8")
    for job_id in ids:
        wait_for_status(job_id, ("SUCCESSFUL",))
    pids = {job.return_value for job in Job.objects.filter(id__in=ids)}
    assert len(pids) == 1
    assert fetch_value("SELECT sum(runs) FROM test_ledger") == 8


@pytest.mark.parametrize("stop", ["timeout", "cancel"])
def test_a_killed_thread_job_interrupts_its_neighbour_which_is_retried(
    start_worker, started, ledger, stop, worker_env
):
    neighbour = slow_on_first_attempt.enqueue(30)
    culprit = times_out.enqueue() if stop == "timeout" else sleep_for.enqueue(30)
    # A task that does not look for its cancel is killed after CANCEL_GRACE (0.5 s here).
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.worker_settings"}
    start_worker("--concurrency", "1", "--threads", "2", env=env)
    wait_for_status(neighbour.id, ("RUNNING",))
    wait_for_status(culprit.id, ("RUNNING",))
    wait_until(started(neighbour.id))
    if stop == "cancel":
        wait_until(started(culprit.id))
    if stop == "cancel":
        assert operations.cancel(culprit.id) == "RUNNING"

    wait_for_status(neighbour.id, ("SUCCESSFUL",))
    culprit_row = Job.objects.get(id=culprit.id)
    assert culprit_row.status == ("FAILED" if stop == "timeout" else "CANCELLED")
    expected = "JobTimeout" if stop == "timeout" else "JobCancelled"
    assert culprit_row.errors[-1]["exception_class_path"] == f"jobs.exceptions.{expected}"
    neighbour_row = Job.objects.get(id=neighbour.id)
    assert neighbour_row.attempts == 2
    [interrupted] = neighbour_row.errors
    assert interrupted["exception_class_path"] == "jobs.exceptions.JobInterrupted"
    assert culprit.id in interrupted["message"]
    # Attempt 1 was killed before it counted itself; attempt 2 completed.
    assert fetch("SELECT runs, last_attempt FROM test_ledger") == [(1, 2)]


def test_sys_exit_in_a_thread_fails_its_attempt_and_the_executor_goes_on(start_worker):
    exited = calls_sys_exit.enqueue()
    worker = start_worker("--concurrency", "1", "--threads", "2")
    wait_for_status(exited.id, ("FAILED",))
    [error] = Job.objects.get(id=exited.id).errors
    assert error["exception_class_path"] == "builtins.SystemExit"
    after = add.enqueue(1, 2)
    wait_for_status(after.id, ("SUCCESSFUL",))
    assert "executor process died" not in worker.output()
