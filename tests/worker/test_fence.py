"""
A worker that cannot heartbeat fences itself before its peers may rescue it:
frozen whole (SIGSTOP of its process group, as a paused VM or a stalled host
stops every process at once), it wakes to stop the runs it had begun and to
start none of the jobs it held.
"""

import signal
import time

import pytest

from jobs.models import Job, JobStatus
from tests.conftest import executors_of, fetch, fetch_value, gone, wait_until
from tests.tasks import limited_run, record_run, sleep_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("limited_backend")]

# How soon after it wakes a frozen worker stops the runs it had begun. Its
# settings (tests/worker_settings.py): a worker silent for 2 s is dead, and
# stops its jobs after 1.5 s.
STOPPED_WITHIN = 1.0


def runs_started(attempt: int) -> int:
    return fetch_value("SELECT count(*) FROM test_limit_ledger WHERE attempt = %s", [attempt])


def test_a_frozen_worker_stops_its_runs_before_they_overlap_the_reruns(
    start_worker, limited_env, limit_ledger
):
    """
    Two runs of one key under a limit of 2 are frozen with their worker and
    re-run elsewhere; on waking, the frozen runs must not go on beside the
    re-runs (4 of the key at once), but be stopped at once.
    """
    ids = [r.id for r in limited_run.enqueue_many([(("frozen", 6.0), {})] * 2)]
    frozen = start_worker("--concurrency", "2", env=limited_env, own_group=True)
    wait_until(lambda: runs_started(1) == 2)
    executors = executors_of(frozen.pid)
    assert len(executors) == 2
    frozen.signal_group(signal.SIGSTOP)
    try:
        start_worker("--concurrency", "2", env=limited_env)
        wait_until(lambda: runs_started(2) == 2, timeout=20)
    finally:
        frozen.signal_group(signal.SIGCONT)
    woke = time.monotonic()

    def stopped():
        """the frozen worker killed the executors that ran its first attempts"""
        return all(gone(process) for process in executors)

    try:
        wait_until(stopped, timeout=STOPPED_WITHIN)
    finally:
        print(f"\nfrozen runs stopped {time.monotonic() - woke:.2f} s after the wake")
    done = Job.objects.filter(id__in=ids, status=JobStatus.SUCCESSFUL, attempts=2)
    wait_until(lambda: done.count() == 2, timeout=20)
    # The first attempts never reached their end: nothing of them ran after
    # the kill, so at most the two re-runs of the key ran from then on.
    rows = fetch("SELECT attempt, ended_at IS NOT NULL FROM test_limit_ledger ORDER BY attempt")
    assert rows == [(1, False), (1, False), (2, True), (2, True)]
    assert "has not heartbeaten" in frozen.output()


def test_a_frozen_worker_does_not_start_the_job_queued_behind_one_that_ended(
    start_worker, worker_env, started, ledger
):
    """
    The job running when the worker froze ends during the freeze; on waking,
    its executor would take the next job at once, before the coordinator
    could say no. The executor itself sees that the lease ran out.
    """
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.worker_settings"}
    short = sleep_for.enqueue(0.5)
    queued = record_run.enqueue("queued")
    frozen = start_worker("--concurrency", "1", "--prefetch", "2", env=env, own_group=True)
    wait_until(lambda: Job.objects.filter(status="RUNNING").count() == 2)
    wait_until(started(short.id))
    frozen.signal_group(signal.SIGSTOP)
    try:
        start_worker("--concurrency", "1", env=env)
        wait_until(
            lambda: Job.objects.filter(id=queued.id, status="SUCCESSFUL").exists(), timeout=20
        )
        wait_until(lambda: Job.objects.filter(id=short.id, status="SUCCESSFUL").exists())
    finally:
        frozen.signal_group(signal.SIGCONT)
    wait_until(lambda: "declared dead" in frozen.output(), timeout=10)
    frozen.signal(signal.SIGTERM)
    assert frozen.wait() == 0
    assert fetch("SELECT runs FROM test_ledger") == [(1,)], "the queued job ran twice"
    assert "has not heartbeaten" in frozen.output()
