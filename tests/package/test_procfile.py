"""
The Procfile under honcho, as ./scripts/run.sh starts it: a stop is clean for
every process, and honcho says so (exit code 0, not "rc=-15": the shell
honcho starts each line in, killed by SIGTERM, unless the line execs).
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import BASE_DIR, fetch_value, wait_until


def test_a_stop_under_honcho_ends_each_process_with_exit_code_0(worker_env, tmp_path: Path):
    log_path = tmp_path / "honcho.log"
    env = {**worker_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with open(log_path, "wb") as log:
        # The worker and the scheduler: the web server's port may be taken here.
        honcho = subprocess.Popen(
            ["honcho", "-f", "Procfile", "start", "worker", "scheduler"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:

            def both_started() -> bool:
                """the worker registered and the scheduler started"""
                assert honcho.poll() is None, log_path.read_text()
                registered = fetch_value("SELECT count(*) FROM jobs_worker")
                return registered == 1 and "Scheduler" in log_path.read_text()

            wait_until(both_started, timeout=60)
            # As ./scripts/run.sh stops it; honcho itself then exits 143 (SIGTERM's).
            honcho.send_signal(signal.SIGTERM)
            honcho.wait(timeout=60)
        finally:
            if honcho.poll() is None:
                os.killpg(honcho.pid, signal.SIGKILL)
    output = log_path.read_text()
    assert "worker.1 stopped (rc=0)" in output, output
    assert "scheduler.1 stopped (rc=0)" in output, output
