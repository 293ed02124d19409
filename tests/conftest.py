"""
Fixtures for tests against real Postgres and real worker processes.

Workers are `python manage.py runworker` subprocesses pointed at the test
database through DATABASE_URL; tests that use them need committed data, so
they use the `transactional_db` fixture.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.02):
    """Return the first truthy value of condition(), or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"condition not met within {timeout} s: {condition.__doc__ or condition}"
            )
        time.sleep(interval)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at any instant (an end before a start at a tie)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


FINAL_STATUSES = ("SUCCESSFUL", "FAILED", "CANCELLED")


def job_status(job_id: str) -> str | None:
    return fetch_value("SELECT status FROM jobs_job WHERE id = %s", [job_id])


def wait_for_status(job_id: str, statuses: tuple[str, ...] = FINAL_STATUSES, timeout: float = 30.0):
    """Wait until the job has one of statuses (by default, any final one); return it."""

    def reached():
        """the job reached the status"""
        status = job_status(job_id)
        return status if status in statuses else None

    return wait_until(reached, timeout)


def database_url_for_subprocesses() -> str:
    """A DATABASE_URL that reaches the test database, for subprocesses."""
    params = connection.get_connection_params()
    host = quote(str(params.get("host") or ""), safe="")
    port = f":{params['port']}" if params.get("port") else ""
    password = f":{quote(params['password'], safe='')}" if params.get("password") else ""
    return f"postgres://{params.get('user', 'postgres')}{password}@{host}{port}/{params['dbname']}"


def fetch(sql: str, params: object = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def fetch_value(sql: str, params: object = None):
    rows = fetch(sql, params)
    return rows[0][0] if rows else None


def executors_of(pid: int) -> list[psutil.Process]:
    """The executor processes of a worker (not multiprocessing's resource tracker)."""
    return [
        child
        for child in psutil.Process(pid).children()
        if "resource_tracker" not in " ".join(child.cmdline())
    ]


def gone(process: psutil.Process) -> bool:
    """Ended, or a zombie; a process that ends between the two questions is gone too."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class ManageProcess:
    """One `manage.py` command as a subprocess, its output kept in a log file."""

    def __init__(
        self,
        command: str,
        env: dict[str, str],
        log_path: Path,
        args: list[str],
        *,
        own_group: bool = False,
    ) -> None:
        self.command = command
        self.log_path = log_path
        self.log = open(log_path, "wb")
        # own_group: a process group of its own (with its children), which
        # signal_group() can freeze whole without freezing the test.
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", command, *args],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_running(self) -> None:
        """Fail with the output if the command exited: a wait for it would only time out."""
        if self.process.poll() is not None:
            raise AssertionError(f"{self.command} exited early:\n{self.output()}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        """Signal the command and its children at once, as a host's freeze stops them all."""
        os.killpg(self.process.pid, signum)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self.log.close()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as a deploy stops the command; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL if it still runs, so that no process outlives its test."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.wait()


class WorkerProcess(ManageProcess):
    """One `runworker` subprocess."""

    def __init__(
        self, env: dict[str, str], log_path: Path, args: list[str], *, own_group: bool = False
    ) -> None:
        super().__init__("runworker", env, log_path, args, own_group=own_group)

    def wait_registered(self, timeout: float = 30.0) -> str:
        """Wait until the worker has its jobs_worker row; return the worker id."""

        def registered():
            """the worker registered in jobs_worker"""
            self.check_running()
            return fetch_value("SELECT id FROM jobs_worker WHERE pid = %s", [self.pid])

        return wait_until(registered, timeout)


@pytest.fixture
def worker_env(transactional_db, tmp_path) -> dict[str, str]:
    started_dir = tmp_path / "started"
    started_dir.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocesses(),
        "PYTHONUNBUFFERED": "1",
        "TEST_STARTED_DIR": str(started_dir),
    }
    env.setdefault("JOBS_LOG_LEVEL", "INFO")
    return env


@pytest.fixture
def started(worker_env) -> Callable[..., Callable[[], bool]]:
    """started(*ids) is a condition: the first attempt of each job has begun (tasks.note_start)."""
    directory = Path(worker_env["TEST_STARTED_DIR"])

    def condition(*job_ids: str, attempt: int = 1) -> Callable[[], bool]:
        def all_started() -> bool:
            """the jobs' code runs in an executor"""
            return all((directory / f"{job_id}-{attempt}").exists() for job_id in job_ids)

        return all_started

    return condition


@pytest.fixture
def start_worker(worker_env, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start runworker subprocesses; all are killed at the end of the test."""
    workers: list[WorkerProcess] = []

    def start(
        *args: str, wait: bool = True, env: dict[str, str] | None = None, own_group: bool = False
    ) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(workers)}.log"
        worker = WorkerProcess(env or worker_env, log_path, list(args), own_group=own_group)
        workers.append(worker)
        if wait:
            worker.wait_registered()
        return worker

    yield start
    for worker in workers:
        worker.kill()
    connection.close()


@pytest.fixture
def ledger(transactional_db) -> None:
    """test_ledger: one row per job that ran, with how many times it ran."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE TABLE IF NOT EXISTS test_ledger (
                job_id uuid PRIMARY KEY,
                runs int NOT NULL,
                last_attempt int NOT NULL,
                pid int NOT NULL,
                seq bigserial
            )
            """
        )
        cursor.execute("TRUNCATE test_ledger RESTART IDENTITY")


@pytest.fixture
def limit_ledger(transactional_db) -> None:
    """test_limit_ledger: when each attempt of tasks.limited_run started and ended."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE TABLE IF NOT EXISTS test_limit_ledger (
                job_id uuid NOT NULL,
                attempt int NOT NULL,
                key text NOT NULL,
                started_at timestamptz NOT NULL,
                ended_at timestamptz,
                PRIMARY KEY (job_id, attempt)
            )
            """
        )
        cursor.execute("TRUNCATE test_limit_ledger")


@pytest.fixture
def embedded_only() -> None:
    if os.environ.get("DATABASE_URL"):
        pytest.skip("runs only on the embedded Postgres (DATABASE_URL is set)")


def pytest_collection_modifyitems(config, items) -> None:
    """Mark the tests that start processes (a worker, a scheduler, a manage.py).

    What can differ from one Postgres version to the next is the SQL, which the
    in-process tests run in full; CI runs those on a second server with
    `-m "not processes"`, and the process tests (most of the time) once.
    """
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "worker_env" in fixtures or "embedded_only" in fixtures:
            item.add_marker(pytest.mark.processes)


def pytest_report_header(config) -> str:
    database = (
        os.environ.get("DATABASE_URL") or f"embedded Postgres in {settings.EMBEDDED_POSTGRES_DIR}"
    )
    return f"database: {database}"


@pytest.fixture
def limited_backend():
    """The default backend with the LIMITS of tests/limits_settings.py, as a web process."""
    from django.tasks import task_backends
    from django.test import override_settings

    from tests.limits_settings import TASKS

    with override_settings(TASKS=TASKS):
        yield task_backends["default"]


@pytest.fixture
def limited_env(worker_env) -> dict[str, str]:
    """A worker's environment with those same LIMITS."""
    return {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.limits_settings"}
