"""runworker started before its database answers waits for it, then works."""

import signal

from django.db import connection

from tests.conftest import (
    WorkerProcess,
    database_url_for_subprocesses,
    wait_for_status,
    wait_until,
)
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


def test_a_worker_on_a_database_never_migrated_exits_saying_to_migrate(worker_env, tmp_path):
    name = f"{connection.settings_dict['NAME']}_unmigrated"
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = database_url_for_subprocesses().rsplit("/", 1)[0] + f"/{name}"
    worker = WorkerProcess({**worker_env, "DATABASE_URL": url}, tmp_path / "w.log", [])
    try:
        assert worker.wait(timeout=60) == 1
        output = worker.output()
        assert "lacks" in output and "migration(s) of the jobs app (0001_initial" in output
        assert "run `python manage.py migrate` first" in output
        assert "Traceback" not in output
    finally:
        worker.kill()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
