"""runworker started before its database answers waits for it, then works."""

import signal

from tests.conftest import WorkerProcess, wait_for_status, wait_until
from tests.tasks import add
from tests.tcp_proxy import PostgresProxy, free_port, proxied_database_url

WAITING = "unreachable"


def test_a_worker_started_before_the_database_starts_working_once_it_answers(worker_env, tmp_path):
    port = free_port()
    proxy = PostgresProxy(port)
    worker = WorkerProcess(
        {**worker_env, "DATABASE_URL": proxied_database_url(port)},
        tmp_path / "worker.log",
        ["--concurrency", "1"],
    )
    try:

        def waiting():
            """the worker says it waits for the database"""
            worker.check_running()
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
        {**worker_env, "DATABASE_URL": proxied_database_url(free_port())},
        tmp_path / "worker.log",
        ["--concurrency", "1"],
    )
    try:

        def waiting():
            """the worker says it waits for the database"""
            worker.check_running()
            return WAITING in worker.output()

        wait_until(waiting)
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
        assert "stopped before the database answered" in worker.output()
    finally:
        worker.kill()
