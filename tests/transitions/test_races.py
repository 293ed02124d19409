"""
Two paths at once on one workflow, each on a connection of its own: the one
that commits second sees what the first did, and no dependant is counted
twice, never, or brought back from an operator's cancel.
"""

import threading

import psycopg
import pytest
from django.db import connections

from jobs import operations, transitions
from jobs.models import Job, JobStatus
from jobs.worker.protocol import complete_batch
from tests.conftest import database_url_for_subprocesses, fetch_value, wait_until
from tests.transitions.driver import claim_one, finish, succeeded, two_and_a_callback

pytestmark = pytest.mark.django_db(transaction=True)


def open_transaction() -> psycopg.Connection:
    """A connection in a transaction that a path joins and that the test commits."""
    other = psycopg.connect(database_url_for_subprocesses())
    other.execute("SELECT 1")
    return other


def in_thread(operation, *args) -> threading.Thread:
    def run() -> None:
        try:
            operation(*args)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def blocked_or_done(thread: threading.Thread):
    """A condition: the thread finished, or some backend waits for a row lock."""

    def condition() -> bool:
        """the other path waits for the open transaction's lock, or is done"""
        waiting = fetch_value(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return not thread.is_alive() or waiting > 0

    return condition


def test_a_retry_racing_the_completion_of_a_sibling_counts_it_once():
    x, y, c = two_and_a_callback("success")
    job_x, job_y = claim_one(x.id), claim_one(y.id)
    finish(job_x, "FAILED")
    assert Job.objects.get(id=c.id).status == JobStatus.CANCELLED
    completer = open_transaction()
    try:
        transitions.complete(
            completer.cursor(),
            complete_batch([succeeded(job_y)]),
            limited=False,
            dependants=frozenset({job_y.id}),
        )
        retrying = in_thread(operations.retry, x.id)
        wait_until(blocked_or_done(retrying))
        completer.commit()
    finally:
        completer.close()
    retrying.join()
    callback = Job.objects.get(id=c.id)
    assert (callback.status, callback.parents_left, callback.parents_failed) == ("WAITING", 1, 0)
    finish(claim_one(x.id), "SUCCESSFUL", 2)
    assert Job.objects.get(id=c.id).status == JobStatus.READY


def test_a_retry_racing_an_operators_cancel_of_a_dependant_leaves_it_cancelled():
    x, y, c = two_and_a_callback("finish")
    job_x, _ = claim_one(x.id), claim_one(y.id)
    finish(job_x, "FAILED")
    assert Job.objects.get(id=c.id).status == JobStatus.WAITING
    canceller = open_transaction()
    try:
        transitions.cancel(canceller.cursor(), [c.id], "Not wanted")
        retrying = in_thread(operations.retry, x.id)
        wait_until(blocked_or_done(retrying))
        canceller.commit()
    finally:
        canceller.close()
    retrying.join()
    assert Job.objects.get(id=c.id).status == JobStatus.CANCELLED
    assert Job.objects.get(id=x.id).status == JobStatus.READY
