"""
The coordinator's main connection through an outage, tried again with
backoff while the executors go on.
"""

import logging
import time

from .connection import (
    DATABASE_ERRORS,
    RECONNECT_BACKOFF_MAX,
    RECONNECT_DELAY_MIN,
    Backoff,
    first_line,
)
from .database import QueueDatabase

logger = logging.getLogger("jobs.worker")


class Reconnector:
    """
    The coordinator's main connection through an outage: closed when an
    operation fails, tried again with backoff, and how long it was gone. The
    coordinator's deadlines wait for it meanwhile (see Coordinator._wait_timeout).

    The backoff stops at a quarter of WORKER_DEAD_AFTER (`dead_after`) if
    that is shorter: once the database is back, the worker is back well
    within the time the first worker back gives the others to heartbeat
    (Maintenance.connected).
    """

    def __init__(self, db: QueueDatabase, dead_after: float) -> None:
        self.db = db
        self.backoff = Backoff(
            maximum=max(RECONNECT_DELAY_MIN, min(RECONNECT_BACKOFF_MAX, dead_after / 4))
        )
        self.due_at = 0.0
        self.lost_at: float | None = None

    def lost(self, error: Exception) -> None:
        if self.lost_at is None:
            self.lost_at = time.monotonic()
            logger.error(
                "Database unreachable (%s); executors go on, outcomes are held, "
                "reconnecting with backoff up to %g s",
                first_line(error),
                self.backoff.maximum,
            )
        self.db.close()
        self.due_at = time.monotonic() + self.backoff.next()

    def reconnect(self) -> float | None:
        """Try again if it is time: the seconds the connection was gone, once it is back."""
        if time.monotonic() < self.due_at:
            return None
        try:
            self.db.connect()
        except DATABASE_ERRORS:
            self.db.close()
            self.due_at = time.monotonic() + self.backoff.next()
            return None
        now = time.monotonic()
        gone = now - (self.lost_at or now)
        self.lost_at = None
        self.backoff.reset()
        return gone
