"""
Settings for worker subprocesses in tests: heartbeats, backoff and a
cancel's grace in fractions of a second.
"""

from project.settings import *  # noqa: F403
from project.settings import TASKS

TASKS = {
    **TASKS,
    "default": {
        **TASKS["default"],
        "OPTIONS": {
            **TASKS["default"]["OPTIONS"],
            "HEARTBEAT_INTERVAL": 0.5,
            "WORKER_DEAD_AFTER": 2.0,
            "RETRY_BACKOFF_BASE": 0.2,
            "CANCEL_GRACE": 0.5,
        },
    },
}
