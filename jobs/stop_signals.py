"""SIGTERM and SIGINT for the queue's long-running processes: the worker and the scheduler."""

import os
import signal
from collections.abc import Callable
from types import FrameType


class StopSignals:
    """
    Routes SIGTERM and SIGINT to a handler, and wakes the process's wait().

    Both processes sleep on sockets (select, multiprocessing's wait()); a
    signal handler alone would run only when that sleep ends. Python's
    wake-up fd writes a byte to a pipe on every signal, and the read end,
    among the waitables, ends the wait at once.
    """

    def __init__(self) -> None:
        self.reader, self._writer = os.pipe()

    def install(self, handler: Callable[[int, FrameType | None], None]) -> None:
        os.set_blocking(self._writer, False)
        signal.set_wakeup_fd(self._writer)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def drain(self, ready: list[object]) -> None:
        """Empty the pipe when it was among the waitables that woke."""
        if self.reader in ready:
            os.read(self.reader, 64)
