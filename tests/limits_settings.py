"""
Settings of worker subprocesses that enforce limits (jobs.limits); the tests
enqueue with the same TASKS (override_settings), as a web process would.
"""

from tests.worker_settings import *  # noqa: F403
from tests.worker_settings import TASKS as WORKER_TASKS

LIMITS = {
    # 20 keys, at most 2 of each running.
    "per-key": {"tasks": ["tests.tasks.limited_run"], "key": "key", "concurrency": 2},
    # 50 starts a second over every worker.
    "provider": {"tasks": ["tests.tasks.rate_limited_run"], "rate": "50/s"},
    # Two starts an hour: a third waits, whatever the test's pace.
    "hourly": {"tasks": ["tests.tasks.hourly_run"], "rate": "2/h"},
    # Fair shares only: each key takes its turn.
    "tenant": {"tasks": ["tests.tasks.keyed_noop"], "key": "tenant"},
    # One at a time per key, under a shared rate, as the signup's text messages.
    "user": {"tasks": ["tests.tasks.limited_sleep"], "key": "user_id", "concurrency": 1},
    "shared": {"tasks": ["tests.tasks.limited_sleep"], "concurrency": 3},
    # Keys with values of their own: "gold" 3 at once, every other key 1.
    "tiered": {
        "tasks": ["tests.tasks.tiered_run"],
        "key": "key",
        "concurrency": 1,
        "per_key": {"gold": {"concurrency": 3}},
    },
    # Values a callable gives each key as its row is made.
    "by-tenant": {
        "tasks": ["tests.tasks.tenant_noop"],
        "key": "tenant",
        "concurrency": 1,
        "per_key": "tests.tasks.tier_of",
    },
}

TASKS = {
    **WORKER_TASKS,
    "default": {
        **WORKER_TASKS["default"],
        "OPTIONS": {**WORKER_TASKS["default"]["OPTIONS"], "LIMITS": LIMITS},
    },
}
