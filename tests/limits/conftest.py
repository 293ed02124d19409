"""The limits' tests share a worker's connection to the queue, with their LIMITS."""

import pytest

from jobs.worker.database import QueueDatabase


@pytest.fixture
def db(limited_backend):
    """A worker's QueueDatabase for the backend with the LIMITS of tests/limits_settings.py."""
    database = QueueDatabase("default", ["default"], limits=limited_backend.queue_options.limits)
    database.connect()
    yield database
    database.close()
