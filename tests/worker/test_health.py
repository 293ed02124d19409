"""Liveness and readiness probes of runworker and runscheduler, through --health-file."""

import logging
import signal
import time

import pytest
from django.core.management import CommandError, call_command

from jobs.health import HealthFile
from tests.conftest import ManageProcess, wait_until
from tests.tcp_proxy import free_port

# The probes' limit here: a frozen loop is reported within it (and a second).
MAX_AGE = "2"


def healthy(path, *options: str) -> bool:
    """the probe passes"""
    try:
        call_command("probe", str(path), "--max-age", MAX_AGE, *options, verbosity=0)
    except CommandError:
        return False
    return True


def unhealthy_because(path, *options: str) -> str:
    with pytest.raises(CommandError) as refused:
        call_command("probe", str(path), "--max-age", MAX_AGE, *options)
    return str(refused.value)


def test_the_probe_of_a_file_that_is_not_there_says_so(tmp_path):
    assert "is missing or empty" in unhealthy_because(tmp_path / "worker.health")
    with pytest.raises(CommandError, match="--max-age must be more than 0"):
        call_command("probe", str(tmp_path / "x"), "--max-age", "0")


@pytest.mark.parametrize("command", ["runworker", "runscheduler"])
def test_a_frozen_loop_is_unhealthy_within_the_limit_and_healthy_again_when_it_goes_on(
    command, worker_env, tmp_path
):
    path = tmp_path / f"{command}.health"
    process = ManageProcess(command, worker_env, tmp_path / "log", ["--health-file", str(path)])
    try:
        wait_until(lambda: healthy(path, "--ready"))
        process.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        wait_until(lambda: not healthy(path), timeout=10)
        assert time.monotonic() - stopped < float(MAX_AGE) + 2
        assert "the process's loop is stuck" in unhealthy_because(path)
        process.signal(signal.SIGCONT)
        wait_until(lambda: healthy(path, "--ready"), timeout=10)
        assert process.stop() == 0
        assert not path.exists()
    finally:
        process.signal(signal.SIGCONT)
        process.kill()


def test_a_worker_waiting_for_its_database_is_alive_but_not_ready(worker_env, tmp_path):
    path = tmp_path / "worker.health"
    env = {**worker_env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/none"}
    process = ManageProcess("runworker", env, tmp_path / "log", ["--health-file", str(path)])
    try:
        wait_until(lambda: healthy(path))
        assert "the process is waiting: it has no database connection" in unhealthy_because(
            path, "--ready"
        )
        # Still rewritten while it waits for the database.
        written = path.stat().st_mtime_ns
        wait_until(lambda: path.stat().st_mtime_ns > written, timeout=5)
        assert healthy(path)
        assert process.stop() == 0
    finally:
        process.kill()


def test_a_health_file_that_cannot_be_written_is_logged_once_and_work_goes_on(tmp_path, caplog):
    folder = tmp_path / "run"
    folder.mkdir()
    health = HealthFile(folder / "worker.health")
    health.beat(ready=True)
    folder.joinpath("worker.health").unlink()
    folder.rmdir()
    with caplog.at_level(logging.WARNING, logger="jobs.health"):
        health.beat(ready=False)
        health.beat(ready=True)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"Cannot write the health file {folder / 'worker.health'}"
    ]
    folder.mkdir()
    health.beat(ready=False)
    assert (folder / "worker.health").read_text().startswith("waiting ")


@pytest.mark.parametrize("command", ["runworker", "runscheduler"])
def test_a_health_file_in_a_folder_that_is_not_there_is_refused_at_start(command, tmp_path):
    with pytest.raises(CommandError, match=r"the folder .* does not exist"):
        call_command(command, "--health-file", str(tmp_path / "nope" / "worker.health"))
