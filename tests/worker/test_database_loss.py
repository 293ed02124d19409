"""Stop the real Postgres under running workers and start it again."""

import os
import shutil
import signal
import subprocess
import time

import pytest
from django.conf import settings
from django.db import connection

from jobs.models import Job
from jobs.worker.attempts import WORKER_LOST
from project import embedded_postgres
from tests.conftest import fetch, fetch_value, wait_until
from tests.tasks import record_run_patiently, sleep_then_record
from tests.tcp_proxy import PostgresProxy, free_port, proxied_database_url

JOBS = 20_000
DEAD_AFTER = 2.0  # tests/worker_settings.py


class DatabaseServer:
    """Stops and starts whichever server the tests run on."""

    def __init__(self) -> None:
        self.embedded = not os.environ.get("DATABASE_URL")
        host = str(connection.settings_dict.get("HOST") or "")
        if not self.embedded and host not in ("127.0.0.1", "localhost"):
            pytest.skip(f"cannot stop the database server at {host!r}")
        if not self.embedded and not shutil.which("pg_ctlcluster"):
            pytest.skip("pg_ctlcluster is not available to stop the local PostgreSQL")

    def _cluster(self, action: str, *extra: str) -> None:
        version = os.listdir("/etc/postgresql")[0]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *extra],
            check=True,
        )

    def stop(self) -> None:
        connection.close()
        if self.embedded:
            embedded_postgres.stop(settings.EMBEDDED_POSTGRES_DIR)
        else:
            self._cluster("stop", "-m", "fast")

    def start(self) -> None:
        if self.embedded:
            embedded_postgres.ensure_running(settings.EMBEDDED_POSTGRES_DIR)
        else:
            self._cluster("start")


def test_database_restart_during_a_20000_job_run_loses_nothing(start_worker, worker_env, ledger):
    server = DatabaseServer()
    record_run_patiently.enqueue_many([(("restart",), {})] * JOBS)
    workers = [start_worker("--concurrency", "2", env=worker_env) for _ in range(2)]
    wait_until(lambda: fetch_value("SELECT count(*) FROM test_ledger") > JOBS // 10, timeout=120)

    server.stop()
    try:
        time.sleep(5)  # the outage itself: five seconds without a database
    finally:
        server.start()

    def all_done():
        """every job SUCCESSFUL"""
        try:
            return fetch_value("SELECT count(*) FROM jobs_job WHERE status = 'SUCCESSFUL'") == JOBS
        except Exception:
            connection.close()
            return False

    try:
        wait_until(all_done, timeout=180, interval=0.5)
    except AssertionError:
        print(fetch("SELECT status, count(*) FROM jobs_job GROUP BY 1"))
        for worker in workers:
            print(worker.output()[-3000:])
        raise
    runs = fetch_value("SELECT count(*) FROM test_ledger")
    duplicates = fetch_value("SELECT coalesce(sum(runs - 1), 0) FROM test_ledger")
    print(f"\n{runs} of {JOBS} jobs in the ledger, {duplicates} duplicate run(s)")
    assert runs == JOBS
    # At most the jobs in flight at the moment of the stop may run twice.
    assert duplicates <= 2 * 2 * 4
    for worker in workers:
        assert "Database unreachable" in worker.output()
        assert "Database reachable again" in worker.output()
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0


def test_an_outage_longer_than_dead_after_declares_no_live_worker_dead(
    start_worker, worker_env, started, ledger, embedded_only
):
    """
    Workers come back from an outage at different moments (their backoffs out
    of step, their networks): the first back must give the others
    WORKER_DEAD_AFTER to beat again before it takes them for dead, rescues
    their jobs and so runs them twice. One worker reaches the database through
    a proxy, closed a moment before the database stops (its backoff counts
    from then) and opened half a second after it is back. Each worker is
    running two jobs when the database goes: it stops them once its lease
    lapses (see test_fence), and they run again, once, when it is back.
    """
    server = DatabaseServer()
    proxy = PostgresProxy(free_port())
    proxy.open()
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.worker_settings"}
    ids = [r.id for r in sleep_then_record.enqueue_many([((2.0,), {})] * 8)]
    late_env = {**env, "DATABASE_URL": proxied_database_url(proxy.port)}
    late = start_worker("--concurrency", "2", "--prefetch", "1", env=late_env)
    first = start_worker("--concurrency", "2", "--prefetch", "1", env=env)
    running = Job.objects.filter(status="RUNNING")
    wait_until(lambda: running.count() == 4)
    wait_until(started(*(str(job_id) for job_id in running.values_list("id", flat=True))))

    proxy.close()
    time.sleep(0.25)
    server.stop()
    try:
        time.sleep(DEAD_AFTER + 0.5)  # the outage: longer than WORKER_DEAD_AFTER
    finally:
        server.start()
    time.sleep(0.5)  # the late worker's way back, well within WORKER_DEAD_AFTER
    proxy.open()

    def all_done():
        """every job SUCCESSFUL"""
        try:
            return Job.objects.filter(id__in=ids, status="SUCCESSFUL").count() == len(ids)
        except Exception:
            connection.close()
            return False

    wait_until(all_done, timeout=30, interval=0.2)
    outputs = late.output() + first.output()
    assert "Database reachable again" in late.output()
    assert "declared dead" not in outputs
    assert "result discarded" not in outputs
    lost = [{"exception_class_path": WORKER_LOST}]
    assert not Job.objects.filter(id__in=ids, errors__contains=lost).exists()
    assert fetch("SELECT count(*), max(runs) FROM test_ledger") == [(len(ids), 1)]
