"""
Settings of worker subprocesses with RETAIN rules (jobs.retention); the tests
enqueue with the same TASKS (override_settings), as a web process would.
"""

from tests.worker_settings import *  # noqa: F403
from tests.worker_settings import TASKS as WORKER_TASKS

RETAIN = {
    # Kept a second once successful: the worker prunes them as it goes.
    "pings": {"tasks": ["tests.tasks.noop"], "successful": 1},
    # Kept for ever once successful, however old.
    "ledger": {"tasks": ["tests.tasks.multiply"], "successful": None},
    # Every job of the reports queue, but a task's own rule wins.
    "reports": {"queues": ["reports"], "successful": 3600, "failed": 3600},
}

TASKS = {
    **WORKER_TASKS,
    "default": {
        **WORKER_TASKS["default"],
        "OPTIONS": {**WORKER_TASKS["default"]["OPTIONS"], "RETAIN": RETAIN},
    },
}
