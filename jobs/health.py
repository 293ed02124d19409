"""
Liveness and readiness of `runworker` and `runscheduler`, through a file.

Started with `--health-file PATH`, the process rewrites PATH at least every
HEALTH_INTERVAL seconds while its main loop turns, with its state: "ready"
while it holds its database connection, "waiting" while it waits for the
database. A loop that is frozen (SIGSTOP, a paused VM) or stuck stops
rewriting it, so the file's age says whether the process is alive, and its
content whether it is ready. `python manage.py probe PATH` reads both, for a
Kubernetes exec probe; the file is removed on a clean exit.

A file rather than a port: nothing to bind or secure, and a probe that cannot
be answered by a thread of a process whose loop is stuck.
"""

import logging
import os
import time
from pathlib import Path

logger = logging.getLogger("jobs.health")

# Seconds between rewrites while nothing changes; the loops wake at least
# this often when a health file is kept.
HEALTH_INTERVAL = 1.0

READY = "ready"
WAITING = "waiting"


class HealthFile:
    """The file one process keeps fresh; does nothing when path is None."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None
        self.state: str | None = None
        self.due_at = 0.0
        self.failing = False

    def beat(self, *, ready: bool) -> None:
        """Rewrite the file when its state changed or HEALTH_INTERVAL has passed."""
        if self.path is None:
            return
        state = READY if ready else WAITING
        now = time.monotonic()
        if state == self.state and now < self.due_at:
            return
        # Written aside and renamed: a probe never reads half a file.
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            partial.write_text(f"{state} {os.getpid()}\n")
            os.replace(partial, self.path)
        except OSError as error:
            # The process goes on: the stale file tells the probe, which is
            # the supervisor's to act on, not a reason to stop working.
            if not self.failing:
                logger.warning("Cannot write the health file %s: %s", self.path, error)
            self.failing = True
        else:
            self.failing = False
        self.state = state
        self.due_at = now + HEALTH_INTERVAL

    def wait_limit(self, timeout: float) -> float:
        """A wait's timeout, shortened so that the file is rewritten on time."""
        if self.path is None:
            return timeout
        return max(0.0, min(timeout, self.due_at - time.monotonic()))

    def remove(self) -> None:
        """Remove the file at a clean exit; a failure is logged, the exit goes on."""
        if self.path is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as error:
            logger.warning("Cannot remove the health file %s: %s", self.path, error)


def probe(path: str | os.PathLike[str], *, max_age: float, ready: bool) -> str | None:
    """Why the process that keeps path is unhealthy (or not ready), or None when it is well."""
    path = Path(path)
    try:
        age = time.time() - path.stat().st_mtime
        state = path.read_text().split()[0]
    except (OSError, IndexError):
        return f"{path} is missing or empty: the process is not running, or has not started"
    if age > max_age:
        return f"{path} is {age:.0f} s old (at most {max_age:g}): the process's loop is stuck"
    if ready and state != READY:
        return f"the process is {state}: it has no database connection"
    return None
