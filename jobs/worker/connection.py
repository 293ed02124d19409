"""
Connecting to the queue's database apart from Django, and trying again.

The coordinator's two connections (its own and its completer's) and the
scheduler's wait for the database the same way: psycopg.connect() with the
Django alias's parameters, a one-line description of where that is for the
logs, and a doubling delay between attempts.
"""

import psycopg
from django.db import connections

# The errors that mean the connection, not the statement, failed.
DATABASE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
RECONNECT_DELAY_MIN = 0.5
RECONNECT_BACKOFF_MAX = 10.0
# A worker waiting for the database at start tries at least this often, so
# that it starts within seconds of the database answering.
START_BACKOFF_MAX = 2.0
# How often it says again why it waits, when the reason has not changed.
START_WAIT_REPEAT = 60.0


def connection_params(alias: str) -> dict:
    """psycopg.connect() arguments for a Django database alias."""
    wrapper = connections[alias]
    params = wrapper.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("server_side_binding", None)
    params.pop("prepare_threshold", None)
    return params


def describe(alias: str) -> str:
    """Where the queue lives, for the start-up summary (no password)."""
    params = connection_params(alias)
    host = params.get("host") or "local socket"
    port = f":{params['port']}" if params.get("port") else ""
    return f"{params.get('dbname')} on {host}{port}"


def first_line(error: BaseException) -> str:
    """The first line of an error's message (psycopg's run to several), or its class name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Backoff:
    """
    The delays between attempts at something that fails for a while: from
    `minimum`, doubling on each failure up to `maximum`, back to `minimum`
    once it works. A capped delay keeps a long outage from being noticed
    late; the doubling keeps a short one from being hammered.
    """

    def __init__(
        self, minimum: float = RECONNECT_DELAY_MIN, maximum: float = RECONNECT_BACKOFF_MAX
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.delay = minimum
        self.failures = 0

    @property
    def failing(self) -> bool:
        """Whether an attempt failed since the last reset()."""
        return self.failures > 0

    def next(self) -> float:
        """After a failure: the delay before the next attempt; the one after it is longer."""
        delay = self.delay
        self.delay = min(delay * 2, self.maximum)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.delay = self.minimum
        self.failures = 0
