"""
The embedded Postgres started by many threads of many processes at once, as the
executors of `runworker --threads 4` do on a fresh `./scripts/run.sh`: one
server comes up, every caller gets its socket and none fails.

Each test runs a server of its own in a temporary data directory and stops it.
"""

import subprocess
import sys

import psycopg
import pytest

from project.embedded_postgres import ensure_running, stop
from tests.conftest import BASE_DIR, wait_until
from tests.embedded_starter import start_from_threads

PROCESSES = 4
THREADS = 4


@pytest.fixture
def pgdata(tmp_path):
    """A data directory of the test's own; its server is stopped at the end."""
    data_dir = tmp_path / "pgdata"
    yield data_dir
    stop(data_dir)
    assert not (data_dir / "postmaster.pid").exists()


def answers(socket_dir: str) -> bool:
    with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres") as connection:
        return connection.execute("SELECT 1").fetchone() == (1,)


def test_many_threads_starting_a_fresh_server_at_once_all_get_it(pgdata):
    results = start_from_threads(pgdata, 8)
    assert [line for line in results if not line.startswith("socket ")] == []
    [socket] = {line.removeprefix("socket ") for line in results}
    assert answers(socket)


def test_many_processes_of_many_threads_starting_a_fresh_server_at_once_all_get_it(
    pgdata, tmp_path
):
    go = tmp_path / "go"
    starters = []
    for number in range(PROCESSES):
        ready = tmp_path / f"ready-{number}"
        starters.append(
            (
                ready,
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.embedded_starter",
                        *map(str, (pgdata, ready, go, THREADS)),
                    ],
                    cwd=BASE_DIR,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    try:

        def all_ready() -> bool:
            """every starter process is waiting for the go"""
            return all(ready.exists() for ready, _ in starters)

        wait_until(all_ready, timeout=60)
        go.touch()
        # This process joins in with threads of its own.
        results = start_from_threads(pgdata, THREADS)
        for _, process in starters:
            output, errors = process.communicate(timeout=120)
            assert process.returncode == 0, errors
            results += output.splitlines()
    finally:
        for _, process in starters:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert len(results) == (PROCESSES + 1) * THREADS
    assert [line for line in results if not line.startswith("socket ")] == []
    [socket] = {line.removeprefix("socket ") for line in results}
    assert answers(socket)
    # One server: a second start would have found postmaster.pid taken and failed.
    assert (pgdata / "postmaster.pid").exists()


def test_a_stopped_server_is_started_again_by_the_next_caller(pgdata):
    first = ensure_running(pgdata)
    assert stop(pgdata)
    assert not (pgdata / "postmaster.pid").exists()
    assert start_from_threads(pgdata, 4) == [f"socket {first}"] * 4
    assert answers(str(first))
