"""
Cooperative cancellation: a running task can see that its job was cancelled
and end cleanly, before its worker kills it.

    from jobs.cancellation import cancel_requested, wait_for_cancel

    @task
    def export_rows(export_id: int) -> None:
        for chunk in chunks(export_id):
            if cancel_requested():
                return  # clean up, then end: the job stays CANCELLED
            write(chunk)

A cancel (jobs.operations.cancel, the admin, `jobs cancel`) marks the job
CANCELLED at once; the worker that runs it then tells the task, here, and
kills its executor only if it is still running CANCEL_GRACE seconds later.
A task that ends within the grace leaves the jobs running beside it in the
same executor (`--threads`) untouched. Its outcome is not written: the
cancel stands.
"""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# The cancel request of the job this context runs, set by the executor
# around each job; asgiref's async_to_sync carries it into an async task.
_request: ContextVar[threading.Event | None] = ContextVar("jobs_cancel_request", default=None)


def cancel_requested() -> bool:
    """Whether the job running here was cancelled; False outside a worker's job."""
    request = _request.get()
    return request is not None and request.is_set()


def wait_for_cancel(timeout: float) -> bool:
    """
    Sleep up to `timeout` seconds, or until the job running here is
    cancelled; return whether it was. The sleep of a task that waits between
    steps, without holding up its cancel.
    """
    request = _request.get()
    if request is None:
        time.sleep(timeout)
        return False
    return request.wait(timeout)


@contextmanager
def watching(request: threading.Event) -> Iterator[None]:
    """Run the job of this context with `request` as its cancel request."""
    token = _request.set(request)
    try:
        yield
    finally:
        _request.reset(token)
