"""
A stateful property test of the door (jobs.transitions): random sequences of
enqueue (plain, limited, chains and batches with each kind of callback),
claim, completion, give-back, rescue, cancel, retry, purge, prune and delete,
on real Postgres with the queue's own statements, and after every step the
invariants that span paths:

- a WAITING job's count of parents left equals its unfinished parents, and
  its count of failed ones its finished parents that did not succeed;
- no WAITING job has all its parents finished;
- a dependant starts only once its parents have all finished, and a
  dependant whose parents have all finished was made due, or cancelled
  because its condition did not hold, or by an operator;
- each key's running count equals its RUNNING jobs; its tokens stay within
  [0, burst];
- no edge points to a child that is gone, nor to a parent that is gone
  without its outcome kept; every live job's key rows exist.

The examples are derandomized (the same on every run). JOBS_PROPERTY_EXAMPLES
sets how many (300 by default); a failure prints the steps that led to it.
"""

import os

import pytest
from django.db import connection, transaction
from django.test import override_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from jobs import operations, transitions
from jobs.retention import PrunePass
from jobs.workflows import batch, chain, step
from tests.limits_settings import TASKS
from tests.tasks import add, batch_callback, hourly_run, limited_run
from tests.transitions.driver import age, claim, finish, give_back

FINISHED = ("SUCCESSFUL", "FAILED", "CANCELLED")
KEYS = ("a", "b", "c")


def rows(statement: str, params: object = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()


class Door(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.savepoint = transaction.atomic()
        self.savepoint.__enter__()
        self.jobs: list[str] = []
        self.running = []
        # Dependants an operator cancelled or retried: their condition is theirs.
        self.touched: set[str] = set()

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self.savepoint.__exit__(None, None, None)

    def _added(self, results) -> None:
        self.jobs += [result.id for result in results if result is not None]

    # Enqueue.

    @rule(count=st.integers(1, 3))
    def enqueue_plain(self, count: int) -> None:
        self._added(add.enqueue_many([((1, 2), {})] * count))

    @rule(key=st.sampled_from(KEYS))
    def enqueue_limited(self, key: str) -> None:
        self._added([limited_run.enqueue(key)])

    @rule()
    def enqueue_rated(self) -> None:
        self._added([hourly_run.enqueue()])

    @rule(length=st.integers(2, 3), limited=st.booleans())
    def enqueue_chain(self, length: int, limited: bool) -> None:
        first = step(limited_run, "a").alone() if limited else step(add, 1, 1)
        rest = [step(add, 1) for _ in range(length - 1)]
        self._added(chain(first, *rest).enqueue().results)

    @rule(members=st.integers(1, 3), kind=st.sampled_from(["success", "failure", "finish"]))
    def enqueue_batch(self, members: int, kind: str) -> None:
        callback = {f"on_{kind}": step(batch_callback, label=kind)}
        self._added(batch([step(add, n, n) for n in range(members)], **callback).enqueue().results)

    # The worker's paths.

    @rule(limit=st.integers(1, 4))
    def claim_jobs(self, limit: int) -> None:
        claimed = claim(limit)
        for job in claimed:
            parents = rows(
                "SELECT COALESCE(p.status, e.parent_outcome ->> 'status') FROM jobs_dependency e "
                "LEFT JOIN jobs_job p ON p.id = e.parent_id WHERE e.child_id = %s",
                [job.id],
            )
            assert all(status in FINISHED for (status,) in parents), (
                f"{job.id} started before its parents finished: {parents}"
            )
        self.running += claimed

    @rule(data=st.data(), status=st.sampled_from(["SUCCESSFUL", "FAILED", "READY"]))
    def complete(self, data, status: str) -> None:
        if self.running:
            job = self.running.pop(data.draw(st.integers(0, len(self.running) - 1)))
            finish(job, status, 1)

    @rule(data=st.data())
    def give_back_one(self, data) -> None:
        if self.running:
            give_back(self.running.pop(data.draw(st.integers(0, len(self.running) - 1))))

    @rule()
    def rescue(self) -> None:
        # The driver's worker has no jobs_worker row: it is dead to the rescue.
        with connection.cursor() as cursor:
            transitions.rescue(cursor, 30, "jobs.exceptions.WorkerLost")
        self.running = []

    # An operator's paths.

    def _pick(self, data, statuses: tuple[str, ...]) -> str | None:
        """One of this example's jobs in one of `statuses`, or None."""
        found = [
            str(job_id)
            for (job_id,) in rows(
                "SELECT id FROM jobs_job WHERE status = ANY(%s) ORDER BY id", [list(statuses)]
            )
        ]
        return data.draw(st.sampled_from(found)) if found else None

    @rule(data=st.data())
    def cancel(self, data) -> None:
        if job_id := self._pick(data, ("WAITING", "READY", "RUNNING")):
            self.touched.add(job_id)
            operations.cancel(job_id)

    @rule(data=st.data())
    def retry(self, data) -> None:
        if job_id := self._pick(data, ("FAILED", "CANCELLED")):
            self.touched.add(job_id)
            operations.retry(job_id)

    @rule()
    def purge(self) -> None:
        operations.purge_queue("default")

    @rule(data=st.data())
    def delete(self, data) -> None:
        if job_id := self._pick(data, ("WAITING", "READY", "RUNNING", *FINISHED)):
            operations.delete([job_id])

    @rule()
    def prune(self) -> None:
        for (job_id,) in rows("SELECT id FROM jobs_job WHERE status = ANY(%s)", [list(FINISHED)]):
            age(job_id, 3600)
        with connection.cursor() as cursor:
            transitions.prune(cursor, PrunePass(FINISHED, 60), 1000, rules=())

    @rule()
    def prune_idle_keys(self) -> None:
        with connection.cursor() as cursor:
            transitions.prune_limit_keys(cursor, "", 1000)

    # Invariants.

    @invariant()
    def waiting_counts_are_right(self) -> None:
        wrong = rows(
            """
            SELECT child.id, child.parents_left, child.parents_failed, left_, failed
            FROM jobs_job AS child, LATERAL (
                SELECT count(*) FILTER (WHERE s.status NOT IN ('SUCCESSFUL', 'FAILED',
                                                               'CANCELLED')),
                       count(*) FILTER (WHERE s.status IN ('FAILED', 'CANCELLED'))
                FROM jobs_dependency AS e LEFT JOIN jobs_job AS p ON p.id = e.parent_id,
                     LATERAL (SELECT COALESCE(p.status, e.parent_outcome ->> 'status')) AS s(status)
                WHERE e.child_id = child.id
            ) AS actual(left_, failed)
            WHERE child.status = 'WAITING'
              AND (child.parents_left <> left_ OR child.parents_failed <> failed OR left_ = 0)
            """
        )
        assert wrong == []

    @invariant()
    def dependants_whose_parents_finished_moved(self) -> None:
        stuck = rows(
            """
            SELECT child.id, child.status, child.run_when, failed
            FROM jobs_job AS child, LATERAL (
                SELECT bool_and(s.status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')),
                       count(*) FILTER (WHERE s.status <> 'SUCCESSFUL')
                FROM jobs_dependency AS e LEFT JOIN jobs_job AS p ON p.id = e.parent_id,
                     LATERAL (SELECT COALESCE(p.status, e.parent_outcome ->> 'status')) AS s(status)
                WHERE e.child_id = child.id
            ) AS parents(finished, failed)
            WHERE parents.finished AND child.status = 'CANCELLED' AND child.attempts = 0
              AND NOT (child.run_when = 'success' AND failed > 0)
              AND NOT (child.run_when = 'failure' AND failed = 0)
            """
        )
        assert [row for row in stuck if str(row[0]) not in self.touched] == []

    @invariant()
    def slots_and_tokens_are_counted_once(self) -> None:
        wrong = rows(
            """
            SELECT k.key, k.running, k.tokens, k.burst,
                   (SELECT count(*) FROM jobs_job
                    WHERE status = 'RUNNING' AND k.key IN (limit_key, shared_limit_key))
            FROM jobs_limit_key AS k
            """
        )
        for key, running, tokens, burst, actual in wrong:
            assert running == actual, f"key {key} counts {running} running, {actual} run"
            assert 0 <= tokens <= (burst or 0) + 1e-9, f"key {key} holds {tokens} tokens"

    @invariant()
    def nothing_points_nowhere(self) -> None:
        assert (
            rows(
                """
            SELECT e.child_id, e.position FROM jobs_dependency AS e
            WHERE NOT EXISTS (SELECT FROM jobs_job WHERE id = e.child_id)
               OR (NOT EXISTS (SELECT FROM jobs_job WHERE id = e.parent_id)
                   AND e.parent_outcome IS NULL)
            """
            )
            == []
        )
        assert (
            rows(
                """
            SELECT j.id FROM jobs_job AS j, LATERAL (VALUES (limit_key), (shared_limit_key)) k(key)
            WHERE j.status IN ('WAITING', 'READY', 'RUNNING') AND k.key IS NOT NULL
              AND NOT EXISTS (SELECT FROM jobs_limit_key WHERE key = k.key)
            """
            )
            == []
        )


@pytest.mark.django_db
def test_every_path_keeps_the_invariants():
    with override_settings(TASKS=TASKS):
        run_state_machine_as_test(
            Door,
            settings=settings(
                max_examples=int(os.environ.get("JOBS_PROPERTY_EXAMPLES", 300)),
                stateful_step_count=20,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
