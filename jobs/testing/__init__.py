"""
Testing code that uses the queue.

- ImmediateBackend and DummyBackend: Django's backends of the same name for
  test settings, taking every option a task of the queue takes.
- capture_enqueued(): what was enqueued, on any backend, with assertions.
- run_due_jobs(): the queue's due jobs run in the test's process, through the
  worker's own code.
- JobsTestMixin for TestCase, and jobs.pytest_plugin's fixtures for pytest.
"""

from .backends import DummyBackend, ImmediateBackend
from .cases import JobsTestMixin
from .enqueued import EnqueuedJobs, capture_enqueued
from .runner import JobsRun, run_due_jobs

__all__ = [
    "DummyBackend",
    "EnqueuedJobs",
    "ImmediateBackend",
    "JobsRun",
    "JobsTestMixin",
    "capture_enqueued",
    "run_due_jobs",
]
