"""
Outcomes that Postgres cannot store (a lone surrogate, a NUL) fail their own
attempt with a clear error, and never the batch written with them, nor the
worker.
"""

import json

from django.db import connection

from jobs.models import Job
from jobs.worker.completer import Completer
from jobs.worker.database import QueueDatabase
from jobs.worker.protocol import Outcome
from tests.conftest import fetch, fetch_value, wait_for_status, wait_until
from tests.tasks import noop, raises_with_a_lone_surrogate, record_and_return


def counts() -> dict[str, int]:
    return dict(fetch("SELECT status, count(*) FROM jobs_job GROUP BY status"))


def test_three_unstorable_return_values_among_a_thousand_fail_alone(start_worker, ledger):
    values = ["ok"] * 1000
    for position in (10, 500, 990):
        values[position] = "x<surrogate>y"
    results = record_and_return.enqueue_many([((value,), {}) for value in values])
    bad = {results[position].id for position in (10, 500, 990)}
    worker = start_worker("--concurrency", "2")

    def all_finished():
        """every job is SUCCESSFUL or FAILED"""
        return counts().keys() <= {"SUCCESSFUL", "FAILED"}

    wait_until(all_finished, timeout=60)
    assert counts() == {"SUCCESSFUL": 997, "FAILED": 3}
    assert fetch_value("SELECT count(*) FROM test_ledger WHERE runs = 1") == 1000
    for job in Job.objects.filter(status="FAILED"):
        assert str(job.id) in bad
        [error] = job.errors
        assert error["exception_class_path"] == "builtins.ValueError"
        assert "lone surrogate" in error["message"] and "cannot store" in error["message"]
    assert worker.process.poll() is None


def test_an_error_message_with_a_lone_surrogate_is_stored_escaped(start_worker):
    result = raises_with_a_lone_surrogate.enqueue()
    worker = start_worker("--concurrency", "1")
    assert wait_for_status(result.id) == "FAILED"
    [error] = Job.objects.get(id=result.id).errors
    assert error["message"] == "bad \\ud800 input"
    assert "\\ud800" in error["traceback"]
    assert worker.process.poll() is None


def test_a_batch_that_postgres_refuses_for_one_row_writes_the_others(transactional_db):
    jobs = [noop.enqueue() for _ in range(5)]
    database = QueueDatabase(connection.alias, ["default"])
    database.connect(listen=False)
    try:
        claimed = database.claim("refusal-test", 10)
    finally:
        database.close()
    assert len(claimed) == 5
    completer = Completer(QueueDatabase(connection.alias, ["default"]), "refusal-test")
    completer.start()
    try:
        # As an executor would send it, had nothing caught the surrogate:
        # JSON text that Postgres's jsonb refuses.
        refused = claimed[2].id
        outcomes = [
            Outcome(
                job.id,
                job.attempt,
                "SUCCESSFUL",
                1.0e9,
                None,
                json.dumps("x\ud800y") if job.id == refused else "null",
                None,
                0.001,
            )
            for job in claimed
        ]
        completer.submit(list(zip(claimed, outcomes, strict=True)))
        _, accepted = completer.wait(timeout=30)
    finally:
        completer.stop()
    assert accepted == {job.id for job in jobs}
    assert counts() == {"SUCCESSFUL": 4, "FAILED": 1}
    [error] = Job.objects.get(id=refused).errors
    assert error["exception_class_path"].startswith("psycopg.errors.")
    assert error["message"].startswith("Postgres refused to store this attempt's outcome: ")
