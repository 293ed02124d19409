"""
pytest fixtures for testing code that uses the queue.

Enable them in the project's conftest.py:

    pytest_plugins = ["jobs.pytest_plugin"]

This module imports nothing of Django's models at import time, since pytest
may load it before Django is set up.
"""

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from jobs.testing import EnqueuedJobs, JobsRun


@pytest.fixture
def enqueued_jobs() -> Iterator["EnqueuedJobs"]:
    """The tasks enqueued during the test, on any backend, with assert_enqueued() and others."""
    from jobs.testing import capture_enqueued

    with capture_enqueued() as enqueued:
        yield enqueued


@pytest.fixture
def run_jobs() -> Callable[..., "JobsRun"]:
    """
    jobs.testing.run_due_jobs: runs the queue's due jobs in the test's process,
    as a worker would. The test needs the database (`db` or `transactional_db`).
    """
    from jobs.testing import run_due_jobs

    return run_due_jobs
