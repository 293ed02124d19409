"""
Cooperative cancellation (jobs.cancellation): a running task told of its
cancel ends on its own within CANCEL_GRACE, and the jobs beside it in its
executor run on.
"""

import importlib
import threading
import time
from pathlib import Path

import pytest

from jobs import operations
from jobs.cancellation import cancel_requested, wait_for_cancel, watching
from jobs.models import Job
from tests.conftest import executors_of, wait_for_status, wait_until
from tests.docs.pages import python_blocks, section
from tests.tasks import async_stops_when_cancelled, sleep_for, stops_when_cancelled


def test_outside_a_worker_nothing_is_cancelled_and_the_wait_is_a_sleep():
    assert cancel_requested() is False
    began = time.monotonic()
    assert wait_for_cancel(0.05) is False
    assert time.monotonic() - began >= 0.05


@pytest.mark.parametrize("cooperative", [stops_when_cancelled, async_stops_when_cancelled])
def test_a_task_that_looks_ends_within_the_grace_and_its_neighbour_finishes(
    start_worker, started, worker_env, cooperative
):
    neighbour = sleep_for.enqueue(2)
    cancelled = cooperative.enqueue()
    # The project's CANCEL_GRACE, 5 s: the task ends long before it.
    worker = start_worker("--concurrency", "1", "--threads", "2")
    wait_until(started(neighbour.id))
    wait_until(started(cancelled.id))
    [executor] = executors_of(worker.pid)
    assert operations.cancel(cancelled.id) == "RUNNING"
    stopped = Path(worker_env["TEST_STARTED_DIR"], f"{cancelled.id}-stopped")
    wait_until(stopped.exists, timeout=4)

    assert wait_for_status(neighbour.id) == "SUCCESSFUL"
    row = Job.objects.get(id=neighbour.id)
    assert (row.attempts, row.errors) == (1, [])
    # The executor was never killed: the same process ran both to their end.
    assert executors_of(worker.pid) == [executor]
    # The cancel stands: the task's own outcome was not written.
    row = Job.objects.get(id=cancelled.id)
    assert row.status == "CANCELLED" and row.return_value is None
    assert "result discarded, the job was cancelled" in worker.output()


def test_the_readmes_example_stops_at_its_cancel(tmp_path, monkeypatch):
    [block] = python_blocks(section("Cooperative cancellation"))
    (tmp_path / "readme_cancel_tasks.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    export_rows = importlib.import_module("readme_cancel_tasks").export_rows
    assert export_rows.call(1, chunks=3) == 3
    request = threading.Event()
    request.set()
    with watching(request):
        assert export_rows.call(1, chunks=3) == 0
