"""
Settings of the benchmark's limits phase: the project's, with LIMITS as
BENCH_LIMITS names them (see tasks_with).
"""

import os

from project.settings import *  # noqa: F403
from project.settings import TASKS as PROJECT_TASKS

PER_KEY = {"per-key": {"tasks": ["bench.tasks.keyed_noop"], "key": "key", "concurrency": 2}}
# The same keys with room for every job: the price of a limit that never binds.
WIDE = {"wide": {"tasks": ["bench.tasks.keyed_noop"], "key": "key", "concurrency": 1000}}
# Fair shares and nothing else: no concurrency, no rate.
TENANT = {"tenant": {"tasks": ["bench.tasks.tenant_job"], "key": "tenant"}}


def tasks_with(limits: str) -> dict:
    """
    TASKS with "none": no LIMITS at all, so that the worker runs the claim of
    a backend without limits; or "per-key": bench.tasks.keyed_noop at most 2 at
    once per key; or "wide": at most 1,000 at once per key; or "tenant":
    bench.tasks.tenant_job served tenant by tenant (the neighbour phase); each
    beside the project's own limits.
    """
    chosen = {
        "none": {},
        "per-key": {**PROJECT_TASKS["default"]["OPTIONS"]["LIMITS"], **PER_KEY},
        "wide": {**PROJECT_TASKS["default"]["OPTIONS"]["LIMITS"], **WIDE},
        "tenant": {**PROJECT_TASKS["default"]["OPTIONS"]["LIMITS"], **TENANT},
    }[limits]
    default = PROJECT_TASKS["default"]
    return {
        **PROJECT_TASKS,
        "default": {**default, "OPTIONS": {**default["OPTIONS"], "LIMITS": chosen}},
    }


TASKS = tasks_with(os.environ.get("BENCH_LIMITS", "per-key"))
