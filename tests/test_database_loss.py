"""Stop the real Postgres under running workers and start it again."""

import os
import shutil
import signal
import subprocess
import time

import pytest
from django.conf import settings
from django.db import connection

from project import embedded_postgres
from tests.conftest import fetch, fetch_value, wait_until
from tests.tasks import record_run_patiently

JOBS = 20_000


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
