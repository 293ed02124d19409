"""runworker started before its database answers waits for it, then works."""

import signal

from django.db import connection

from tests.conftest import WorkerProcess, wait_for_status, wait_until
from tests.tasks import add
from tests.tcp_proxy import PostgresProxy, free_port

WAITING = "unreachable"


def proxied_url(port: int) -> str:
    params = connection.get_connection_params()
    return f"postgres://{params.get('user') or 'postgres'}@127.0.0.1:{port}/{params['dbname']}"


def test_a_worker_started_before_the_database_starts_working_once_it_answers(worker_env, tmp_path):
    port = free_port()
    proxy = PostgresProxy(port)
    worker = WorkerProcess(
        {**worker_env, "DATABASE_URL": proxied_url(port)},
        tmp_path / "worker.log",
        ["--concurrency", "1"],
    )
    try:

        def waiting():
            """the worker says it waits for the database"""
            assert worker.process.poll() is None, worker.output()
            return WAITING in worker.output()

        wait_until(waiting)
        result = add.enqueue(2, 3)
        proxy.open()
        assert wait_for_status(result.id, timeout=10) == "SUCCESSFUL"
        assert worker.output().count(WAITING) == 1, "said once, not at every try"
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
    finally:
        worker.kill()
        proxy.close()


def test_a_worker_waiting_for_the_database_stops_at_once_on_sigterm(worker_env, tmp_path):
    worker = WorkerProcess(
        {**worker_env, "DATABASE_URL": proxied_url(free_port())},
        tmp_path / "worker.log",
        ["--concurrency", "1"],
    )
    try:
        wait_until(lambda: WAITING in worker.output())
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
        assert "stopped before the database answered" in worker.output()
    finally:
        worker.kill()
