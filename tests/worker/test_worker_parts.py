"""
The worker's policy pieces, in this process, with no worker running: what
crosses between SQL and the worker, backoff, claim sizing, an executor's
queue of waiting jobs, and what the jobs of a lost executor become.
"""

import re
import time
from multiprocessing.connection import wait

import pytest
from django.db import connection

from jobs import queries
from jobs.models import JobStatus
from jobs.retries import Retry, RetryRules
from jobs.worker import protocol
from jobs.worker.attempts import given_back, lost_attempts
from jobs.worker.connection import Backoff
from jobs.worker.database import Notifications, QueueDatabase
from jobs.worker.executor import WaitingJobs
from jobs.worker.executor_handle import Executor, LostWork
from jobs.worker.lease import Lease
from jobs.worker.pool import PREFETCH_LIMIT, ExecutorPool
from jobs.worker.protocol import COMPLETE_FIELDS, ClaimedJob, Outcome


def claimed(job_id: str, *, attempt: int = 1, max_attempts: int = 3) -> ClaimedJob:
    return ClaimedJob(
        job_id, "default", "tests.tasks.noop", "default", 0, 0.0, "[]", "{}",
        attempt, max_attempts, None, 0.0, 0.0, 0.0, ["w"], "[]", None, None, False, False,
    )  # fmt: skip


def outcome(job: ClaimedJob) -> Outcome:
    return Outcome(job.id, job.attempt, "SUCCESSFUL", 0.0, None, "null", None, 0.1)


@pytest.mark.django_db
@pytest.mark.parametrize("statement", [queries.claim.CLAIM, queries.claim.CLAIM_EVERY_QUEUE])
def test_claim_returns_the_fields_of_claimed_job_in_order(statement):
    with connection.cursor() as cursor:
        cursor.execute(statement, {"queues": ["default"], "limit": 0, "worker_id": "parts"})
        names = tuple(column.name for column in cursor.description)
    assert names == ClaimedJob._fields


def test_complete_reads_the_leading_fields_of_outcome_in_order():
    [columns] = re.findall(r"AS outcome\(([^)]*)\)", queries.finish.COMPLETE)
    names = tuple(name.strip() for name in columns.split(","))
    assert names == Outcome._fields[:COMPLETE_FIELDS]


def test_backoff_doubles_from_its_minimum_up_to_its_maximum_and_resets():
    backoff = Backoff(0.5, 3.0)
    assert not backoff.failing
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.failing
    backoff.reset()
    assert not backoff.failing and backoff.next() == 0.5


def test_retry_delays_stay_within_half_and_all_of_the_capped_ceiling():
    policy = Retry(base=2.0, cap=10.0)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (20, 10.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)


def pool_of(executors: int, *, threads: int = 1, prefetch: int | None = None) -> ExecutorPool:
    """A pool whose executors are handles only: sizing reads nothing else."""
    pool = ExecutorPool(executors, prefetch, "parts", Lease(20.0), threads=threads)
    pool.executors = [
        Executor(process=None, conn=None, slots=[0] * (threads + 1), threads=threads)
        for _ in range(executors)
    ]
    return pool


def test_jobs_per_executor_follows_the_prefetch_or_the_duration_of_recent_jobs():
    assert pool_of(2, threads=4, prefetch=10).jobs_per_executor() == 10
    assert pool_of(2, threads=4, prefetch=1).jobs_per_executor() == 4
    adaptive = pool_of(2, threads=2)
    assert adaptive.jobs_per_executor() == 2
    adaptive.average_duration = 0.01
    assert adaptive.jobs_per_executor() == 20
    adaptive.average_duration = 0.0
    assert adaptive.jobs_per_executor() == PREFETCH_LIMIT
    adaptive.average_duration = 5.0
    assert adaptive.jobs_per_executor() == 2


def test_claim_size_waits_for_half_the_room_unless_a_thread_idles():
    pool = pool_of(2, prefetch=4)
    assert pool.claim_size() == 8
    for number, executor in enumerate(pool.executors):
        for index in range(3):
            executor.assign(claimed(f"{number}-{index}"))
    # Two free of eight, and every thread has a job: wait, unless news of a
    # job due now asks for the room there is.
    assert pool.free_slots == 2 and pool.claim_size() == 0
    assert pool.claim_size(eager=True) == 2
    pool.executors[0].answer(("0-0", 1))
    pool.executors[0].answer(("0-1", 1))
    assert pool.claim_size() == 4
    # Nothing queued behind one executor's thread: claim at once.
    pool = pool_of(2, prefetch=4)
    for index in range(4):
        pool.executors[0].assign(claimed(f"0-{index}"))
    pool.executors[1].assign(claimed("1-0"))
    pool.executors[1].answer(("1-0", 1))
    assert pool.claim_size() == 4


def test_claim_size_counts_what_an_executor_may_still_run_before_it_is_replaced():
    pool = pool_of(1, prefetch=10)
    pool.max_tasks_per_child = 3
    pool.executors[0].jobs_run = 2
    assert pool.claim_size() == 1
    pool.executors[0].retiring = True
    assert pool.claim_size() == 0


def held_lease() -> Lease:
    lease = Lease(20.0)
    lease.renew(time.monotonic())
    return lease


def test_waiting_jobs_are_taken_in_order_and_each_leaves_once():
    running = [0, 0, 0]
    waiting = WaitingJobs(running, held_lease().shared, refuse=None)
    first, second, third = claimed("a"), claimed("b"), claimed("c")
    waiting.add([first, second, third])
    assert waiting.take(0) == first
    assert running == [1, 0, 1]
    assert waiting.withdraw(("b", 1)) == second
    assert waiting.withdraw(("b", 1)) is None
    assert waiting.withdraw(("a", 1)) is None
    assert waiting.take(1) == third
    # The last slot holds the highest number taken: every job up to it began
    # or was withdrawn.
    assert running == [1, 3, 3]
    waiting.end()
    assert waiting.take(0) is None


def test_no_waiting_job_starts_once_the_lease_lapsed():
    running = [0, 0]
    lease = held_lease()
    refused = []
    waiting = WaitingJobs(running, lease.shared, refuse=refused.append)
    first, second, third = claimed("a"), claimed("b"), claimed("c")
    waiting.add([first, second])
    assert waiting.take(0) == first
    # Renewed by the last heartbeat long enough ago: lapsed.
    lease.renew(time.monotonic() - lease.length)
    assert lease.lapsed()
    waiting.add([third])
    waiting.end()
    assert waiting.take(0) is None
    assert refused == [second, third]
    # Neither counts as begun: the last slot still holds the first's number.
    assert running == [1, 1]


def lost(*, died: bool, attempt: int = 1) -> LostWork:
    return LostWork(
        running=[
            (claimed("late", attempt=attempt), 4.0),
            (claimed("beside", attempt=attempt), 2.0),
        ],
        unreported=[claimed("finished", attempt=attempt)],
        unstarted=[claimed("waiting", attempt=attempt)],
        exitcode=-9,
        died=died,
        finished=[(claimed("reported"), outcome(claimed("reported")))],
    )


def backend_rules(job: ClaimedJob) -> RetryRules:
    return RetryRules.of(None, Retry(base=1.0, cap=1.0))


def outcomes_by_id(finished: list[tuple[ClaimedJob, Outcome]]) -> dict[str, Outcome]:
    return {job.id: outcome for job, outcome in finished}


def error_class(outcome: Outcome) -> str:
    return re.search(r'"exception_class_path": "([^"]+)"', outcome.error)[1]


def test_a_timed_out_executor_fails_its_running_jobs_and_gives_back_the_rest():
    finished, released = lost_attempts(
        lost(died=False), worker_id="parts", rules=backend_rules, timed_out={"late"}
    )
    by_id = outcomes_by_id(finished)
    assert set(by_id) == {"reported", "late", "beside"}
    assert error_class(by_id["late"]) == "jobs.exceptions.JobTimeout"
    assert error_class(by_id["beside"]) == "jobs.exceptions.JobInterrupted"
    assert by_id["late"].status == by_id["beside"].status == "READY"
    assert by_id["late"].retry_at is not None
    assert {job.id for job in released} == {"finished", "waiting"}


def test_an_executor_that_died_fails_every_job_it_began_and_the_last_attempt_for_good():
    finished, released = lost_attempts(
        lost(died=True, attempt=3), worker_id="parts", rules=backend_rules
    )
    by_id = outcomes_by_id(finished)
    assert set(by_id) == {"reported", "late", "beside", "finished"}
    for job_id in ("late", "beside", "finished"):
        assert error_class(by_id[job_id]) == "jobs.exceptions.ExecutorDied"
        assert by_id[job_id].status == "FAILED"
    assert [job.id for job in released] == ["waiting"]


def test_a_cancelled_job_is_left_to_the_cancel_and_its_neighbours_are_interrupted():
    finished, released = lost_attempts(
        lost(died=False), worker_id="parts", rules=backend_rules, cancelled="late"
    )
    by_id = outcomes_by_id(finished)
    assert set(by_id) == {"reported", "beside"}
    assert error_class(by_id["beside"]) == "jobs.exceptions.JobInterrupted"
    assert {job.id for job in released} == {"finished", "waiting"}


def test_at_shutdown_every_unanswered_job_goes_back_unspent():
    finished, released = given_back(lost(died=False))
    assert [job.id for job, _ in finished] == ["reported"]
    assert {job.id for job in released} == {"late", "beside", "finished", "waiting"}


def test_the_outcome_statuses_that_complete_writes_are_job_statuses():
    assert {protocol.SUCCESSFUL, protocol.FAILED, protocol.READY} <= set(JobStatus.values)
    assert not {protocol.SKIPPED, protocol.POSTPONED, protocol.SNOOZED} & set(JobStatus.values)


@pytest.mark.django_db(transaction=True)
def test_a_notify_that_comes_in_with_a_statements_results_is_still_read():
    # The NOTIFY is on the socket before the heartbeat runs: psycopg reads it
    # with the heartbeat's results and keeps it, so the socket has nothing
    # left to wake a wait. The coordinator reads notifications before it
    # waits whenever a statement ran (notifications_unread), or the job that
    # NOTIFY announced would wait for the next wake-up.
    db = QueueDatabase("default", [])
    db.connect()
    try:
        db.notifications()
        assert not db.notifications_unread
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {queries.channels.READY_CHANNEL}, 'default'")
        db.heartbeat("no-such-worker")
        assert db.notifications_unread
        assert wait([db.conn], timeout=0.2) == []
        assert db.notifications() == Notifications(wake=True)
        assert not db.notifications_unread
    finally:
        db.close()


def test_a_cancel_finds_the_attempt_that_was_cancelled_not_a_later_one():
    pool = pool_of(2)
    first, second = pool.executors
    first.assign(claimed("job", attempt=1))
    second.assign(claimed("job", attempt=2))
    assert pool.locate("job", 1)[0] is first
    assert pool.locate("job", 3) is None
    # A NOTIFY of an older version names the job alone: its latest attempt.
    assert pool.locate("job")[0] is second
