"""Many workers racing for one large backlog: every job runs, and runs once."""

import signal

import pytest

from tests.conftest import fetch, fetch_value, wait_until
from tests.tasks import record_run

JOBS = 20_000
WORKERS = 8


@pytest.mark.slow
def test_8_workers_run_20000_jobs_none_lost_none_twice(start_worker, worker_env, ledger):
    for start in range(0, JOBS, 10_000):
        record_run.enqueue_many([(("scale",), {})] * min(10_000, JOBS - start))
    workers = [
        start_worker("--concurrency", "2", env={**worker_env, "JOBS_LOG_LEVEL": "WARNING"})
        for _ in range(WORKERS)
    ]

    def all_finished():
        """no job READY or RUNNING"""
        return not fetch_value("SELECT count(*) FROM jobs_job WHERE status IN ('READY', 'RUNNING')")

    wait_until(all_finished, timeout=240, interval=0.5)
    statuses = dict(fetch("SELECT status, count(*) FROM jobs_job GROUP BY status"))
    runs, duplicates, span = fetch(
        """
        SELECT count(*), coalesce(sum(runs - 1), 0),
               extract(epoch FROM max(finished_at) - min(started_at))
        FROM test_ledger JOIN jobs_job ON jobs_job.id = test_ledger.job_id
        """
    )[0]
    per_worker = fetch("SELECT count(DISTINCT pid) FROM test_ledger")[0][0]
    print(
        f"\n{runs} of {JOBS} jobs ran, {duplicates} twice, on {per_worker} executor processes, "
        f"{JOBS / span:.0f} jobs/s from first start to last finish"
    )
    assert statuses == {"SUCCESSFUL": JOBS}
    assert runs == JOBS
    assert duplicates == 0
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait() == 0
