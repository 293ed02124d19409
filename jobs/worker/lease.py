"""
How long a worker may go on with the jobs it holds since its last heartbeat.

Another worker takes it for dead once its heartbeat is WORKER_DEAD_AFTER old,
and rescues and re-runs its jobs. So a worker stops first: LEASE_SHARE of that
time (jobs.options) after the last heartbeat it knows was written, its
executors start no job they hold (they read the lease from memory shared with
the coordinator), and the coordinator kills those that run one (Maintenance.fence_if_lapsed).
A worker cannot tell a freeze of its host (SIGSTOP, a paused VM), a network
that cut it off and an outage of the database that its peers share: it stops
in all three.

Time is the monotonic clock, which on Linux is one clock for every process of
the host, and which goes on while they are stopped: a worker frozen past its
lease finds it lapsed on waking.
"""

import ctypes
import multiprocessing
import time

from ..options import LEASE_SHARE


def lapsed(shared: ctypes.c_longlong) -> bool:
    """Whether a lease, as its executors read it (monotonic nanoseconds), has run out."""
    return time.monotonic_ns() >= shared.value


class Lease:
    """
    The coordinator's lease: renewed by each heartbeat that was written,
    read by its executors before they start a job, and marked `fenced` once
    the coordinator stopped what it held after it lapsed.
    """

    def __init__(self, dead_after: float) -> None:
        self.length = dead_after * LEASE_SHARE
        # The deadline in monotonic nanoseconds: a plain 64-bit word, written
        # by the coordinator alone, read whole by the executors. Zero (lapsed)
        # until the worker registers: no job may start before.
        self.shared = multiprocessing.RawValue(ctypes.c_longlong, 0)
        # When the last heartbeat written was sent; until the first, when
        # the worker began.
        self.renewed_at = time.monotonic()
        self.fenced = False

    @property
    def expires_at(self) -> float:
        """The monotonic time at which it runs out."""
        return self.shared.value / 1e9

    def renew(self, beat_sent_at: float) -> None:
        """
        A heartbeat sent at `beat_sent_at` (monotonic) was written. The
        database stamped it then or later, so the peers' count of its age
        starts no sooner than this one's.
        """
        self.shared.value = int((beat_sent_at + self.length) * 1e9)
        self.renewed_at = beat_sent_at
        self.fenced = False

    def lapsed(self) -> bool:
        return lapsed(self.shared)
