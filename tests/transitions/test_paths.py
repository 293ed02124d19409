"""
Every path that changes a job keeps the rules of workflows and limits: a
dependant moves once, a slot is freed once, a token spent once, and what a
dependant reads outlives its parent. One test per path that once broke them.
"""

import threading

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection, connections, transaction

from jobs import operations, transitions
from jobs.models import Dependency, Job, JobStatus, LimitKey
from jobs.retention import PrunePass
from jobs.workflows import batch, chain, step
from tests.tasks import add, batch_callback, hourly_run, keyed_noop, limited_run
from tests.transitions.driver import (
    age,
    claim,
    claim_one,
    finish,
    give_back,
    limit_key,
    two_and_a_callback,
)

pytestmark = pytest.mark.django_db


def status(result) -> str:
    return Job.objects.get(id=result.id).status


# Retry.


def test_a_retried_member_counts_again_for_a_callback_that_still_waits():
    a, b, f = two_and_a_callback("finish")
    job_a, job_b = claim_one(a.id), claim_one(b.id)
    finish(job_a, "FAILED")
    operations.retry(a.id)
    finish(claim_one(a.id), "SUCCESSFUL", 2)
    # B still runs: the callback waits for it.
    assert status(f) == JobStatus.WAITING
    assert Job.objects.get(id=f.id).parents_left == 1
    finish(job_b, "SUCCESSFUL", 4)
    assert status(f) == JobStatus.READY
    outcomes = Job.objects.get(id=f.id).args[0]
    assert [(o["status"], o["return_value"]) for o in outcomes] == [
        ("SUCCESSFUL", 2),
        ("SUCCESSFUL", 4),
    ]


def test_retrying_both_failed_members_runs_the_success_callback_once_both_succeed():
    a, b, s = two_and_a_callback("success")
    job_a, job_b = claim_one(a.id), claim_one(b.id)
    finish(job_a, "FAILED")
    finish(job_b, "FAILED")
    assert status(s) == JobStatus.CANCELLED
    # "Retry selected": both, before either runs again.
    operations.retry(a.id)
    operations.retry(b.id)
    assert status(s) == JobStatus.WAITING
    finish(claim_one(a.id), "SUCCESSFUL", 2)
    assert status(s) == JobStatus.WAITING
    finish(claim_one(b.id), "SUCCESSFUL", 4)
    assert status(s) == JobStatus.READY
    assert Job.objects.get(id=s.id).args == [[2, 4]]


def test_a_callback_retried_before_its_members_finished_waits_for_them():
    a, f = batch([step(add, 1, 1)], on_finish=step(batch_callback, label="f")).enqueue().results
    operations.cancel(f.id)
    operations.retry(f.id)
    assert status(f) == JobStatus.WAITING
    finish(claim_one(a.id), "SUCCESSFUL", 2)
    assert status(f) == JobStatus.READY


@pytest.mark.django_db(transaction=True)
def test_two_retries_of_failed_siblings_at_once_do_not_deadlock():
    pairs = []
    for _ in range(10):
        a, b, _ = two_and_a_callback("success")
        jobs = [claim_one(a.id), claim_one(b.id)]
        for job in jobs:
            finish(job, "FAILED")
        pairs.append((a.id, b.id))
    errors = []

    def retry_all(index: int) -> None:
        try:
            for pair in pairs:
                operations.retry(pair[index])
        except OperationalError as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=retry_all, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(
        Job.objects.filter(task_path__endswith="batch_callback").values_list(
            "status", "parents_left"
        )
    ) == {(JobStatus.WAITING, 2)}


# Purge, delete, prune.


def test_purging_a_parent_cancels_what_waits_for_it():
    first, second = chain(step(add, 1, 1), step(add, 5)).enqueue().results
    assert operations.purge_queue("default") == 1
    assert not Job.objects.filter(id=first.id).exists()
    child = Job.objects.get(id=second.id)
    assert child.status == JobStatus.CANCELLED
    assert "did not succeed" in child.errors[-1]["message"]
    assert not Job.objects.filter(status=JobStatus.WAITING).exists()


def test_the_admin_deletes_a_running_limited_job_through_a_cancel(limited_backend, admin_client):
    first, second = chain(step(limited_run, "k"), step(add, 1)).enqueue().results
    claim_one(first.id)
    assert limit_key("per-key:k")[0] == 1
    response = admin_client.post(
        "/admin/jobs/job/",
        {"action": "delete_selected", "_selected_action": [first.id], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Job.objects.filter(id=first.id).exists()
    assert limit_key("per-key:k")[0] == 0
    assert status(second) == JobStatus.CANCELLED


def test_a_pruned_parent_is_still_given_to_its_callback():
    a, b, s = two_and_a_callback("success")
    finish(claim_one(a.id), "SUCCESSFUL", 2)
    finish(claim_one(b.id), "FAILED")
    age(a.id, 8 * 86400)
    with connection.cursor() as cursor:
        assert transitions.prune(cursor, PrunePass(("SUCCESSFUL",), 7 * 86400), 100, rules=()) == 1
    operations.retry(b.id)
    finish(claim_one(b.id), "SUCCESSFUL", 4)
    assert status(s) == JobStatus.READY
    assert Job.objects.get(id=s.id).args == [[2, 4]]


def test_edges_go_with_their_child():
    first, second = chain(step(add, 1, 1), step(add, 5)).enqueue().results
    finish(claim_one(first.id), "SUCCESSFUL", 2)
    finish(claim_one(second.id), "SUCCESSFUL", 7)
    age(first.id, 10)
    with connection.cursor() as cursor:
        transitions.prune(cursor, PrunePass(("SUCCESSFUL",), 5), 100, rules=())
    edge = Dependency.objects.get()
    assert edge.parent_outcome == {"status": "SUCCESSFUL", "return_value": 2, "error": None}
    age(second.id, 10)
    with connection.cursor() as cursor:
        transitions.prune(cursor, PrunePass(("SUCCESSFUL",), 5), 100, rules=())
    assert not Dependency.objects.exists()


def test_idle_limit_keys_are_pruned_and_live_ones_kept(limited_backend):
    done, live = keyed_noop.enqueue("done"), keyed_noop.enqueue("live")
    finish(claim_one(done.id))
    with connection.cursor() as cursor:
        assert transitions.prune_limit_keys(cursor, "", 100) == (1, None)
    assert set(LimitKey.objects.values_list("key", flat=True)) == {"tenant:live"}
    assert status(live) == JobStatus.READY


def test_a_retried_job_whose_idle_key_was_pruned_gets_its_key_back(limited_backend):
    job = keyed_noop.enqueue("gone")
    finish(claim_one(job.id), "FAILED")
    with connection.cursor() as cursor:
        assert transitions.prune_limit_keys(cursor, "", 100) == (1, None)
    operations.retry(job.id)
    assert limit_key("tenant:gone") is not None
    assert [claimed.id for claimed in claim()] == [job.id]


@pytest.mark.django_db(transaction=True)
def test_an_enqueue_holds_its_key_against_a_prune(limited_backend):
    """An enqueue in flight holds its key's row: the prune skips it and deletes it later."""
    with transaction.atomic():
        keyed_noop.enqueue("racing")
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                assert transitions.prune_limit_keys(cursor, "", 100) == (0, None)
        finally:
            other.close()
    assert LimitKey.objects.filter(key="tenant:racing").exists()


@pytest.mark.django_db(transaction=True)
def test_enqueues_making_the_same_new_keys_in_opposite_orders_do_not_deadlock(limited_backend):
    tenants = [f"t{n:03}" for n in range(200)]
    errors = []

    def enqueue(order: list[str]) -> None:
        try:
            for _ in range(5):
                with transaction.atomic():
                    keyed_noop.enqueue_many([((tenant,), {}) for tenant in order])
        except OperationalError as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=enqueue, args=(order,)) for order in (tenants, tenants[::-1])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert LimitKey.objects.filter(key__startswith="tenant:t").count() == 200


# Give-back and cancel.


def test_a_give_back_returns_its_token(limited_backend):
    first, *_ = (hourly_run.enqueue() for _ in range(3))
    job = claim_one(first.id)
    assert limit_key("hourly")[1] == pytest.approx(1, abs=0.01)
    give_back(job)
    assert limit_key("hourly")[1] == pytest.approx(2, abs=0.01)
    assert len(claim()) == 2


def test_a_give_back_of_a_job_that_began_frees_its_slot_and_keeps_its_token_spent(limited_backend):
    first, *_ = (hourly_run.enqueue() for _ in range(3))
    job = claim_one(first.id)
    with connection.cursor() as cursor:
        transitions.release(cursor, [job.id], [job.attempt], limited=True, begun=[True])
    running, tokens = limit_key("hourly")
    assert running == 0
    assert tokens == pytest.approx(1, abs=0.01)
    assert Job.objects.get(id=first.id).status == JobStatus.READY


def test_cancel_by_filter_cancels_waiting_jobs_first():
    results = two_and_a_callback("failure")
    call_command("jobs", "cancel", "--queue", "default", "--yes", verbosity=0)
    assert [status(result) for result in results] == [JobStatus.CANCELLED] * 3
    call_command("jobs", "cancel", "--status", "WAITING", "--yes", verbosity=0)
