"""Enqueue and get_result through Django's Tasks API, without a worker."""

import importlib
import uuid
from datetime import timedelta

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.db import IntegrityError, connection, transaction
from django.tasks import TaskResultStatus, default_task_backend, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.backend import PostgresBackend
from jobs.models import Job
from tests.conftest import database_url_for_subprocesses, job_status
from tests.docs.pages import python_blocks, section
from tests.tasks import add, async_add, noop, patient, sleep_for

pytestmark = pytest.mark.django_db


def test_backend_supports_everything_django_asks_about():
    assert isinstance(task_backends["default"], PostgresBackend)
    assert default_task_backend.supports_defer
    assert default_task_backend.supports_async_task
    assert default_task_backend.supports_get_result
    assert default_task_backend.supports_priority


def test_enqueue_writes_one_ready_row_whose_id_is_the_task_id():
    result = add.enqueue(2, 3)
    job = Job.objects.get(id=result.id)
    assert result.status == TaskResultStatus.READY
    assert job.status == "READY"
    assert job.task_path == "tests.tasks.add"
    assert job.args == [2, 3] and job.kwargs == {}
    assert job.queue == "default" and job.priority == 0
    assert job.attempts == 0 and job.max_attempts == 3
    assert job.enqueued_at == result.enqueued_at
    assert job.run_at <= timezone.now()


def test_task_ids_are_time_ordered_uuid7():
    first = noop.enqueue()
    second = noop.enqueue()
    assert uuid.UUID(first.id).version == 7
    assert first.id < second.id


def test_decorator_options_and_using_options_land_on_the_row():
    job = Job.objects.get(id=patient.enqueue().id)
    assert (job.max_attempts, job.timeout) == (5, timedelta(seconds=30))

    row_task = add.using(max_attempts=7, timeout=12.5, priority=10, queue_name="reports")
    job = Job.objects.get(id=row_task.enqueue(1, 1).id)
    assert (job.max_attempts, job.timeout, job.priority, job.queue) == (
        7,
        timedelta(seconds=12.5),
        10,
        "reports",
    )


def test_countdown_and_run_after_set_run_at():
    before = timezone.now()
    job = Job.objects.get(id=add.using(countdown=60).enqueue(1, 2).id)
    assert before + timedelta(seconds=59) < job.run_at < timezone.now() + timedelta(seconds=61)

    eta = timezone.now() + timedelta(hours=2)
    job = Job.objects.get(id=add.using(run_after=eta).enqueue(1, 2).id)
    assert job.run_at == eta

    with pytest.raises(TypeError, match="countdown or run_after"):
        add.using(countdown=1, run_after=eta)


def test_enqueue_many_is_one_round_trip():
    with CaptureQueriesContext(connection) as queries:
        results = add.enqueue_many([((i, i), {}) for i in range(500)])
    assert len(queries) == 1
    assert len(results) == 500
    assert Job.objects.count() == 500
    assert sorted(Job.objects.values_list("args", flat=True))[0] == [0, 0]


def test_the_docs_example_enqueues_with_each_option_it_shows(tmp_path, monkeypatch):
    _, block = python_blocks(section("Enqueue jobs and read their results"))
    (tmp_path / "docs_enqueue_example.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    example = importlib.import_module("docs_enqueue_example")
    user_id = example.user.id
    jobs = list(Job.objects.order_by("id"))
    assert {
        (job.task_path, job.queue, job.max_attempts, job.timeout, tuple(job.args)) for job in jobs
    } == {
        (
            "docs_enqueue_example.send_welcome_email",
            "communications",
            5,
            timedelta(seconds=30),
            (user_id,),
        )
    }
    # In the order the example enqueues them.
    first, later, keyed, _, at_nine, _, tagged = jobs
    assert str(first.id) == example.result.id
    assert (example.result.status, example.result.attempts, example.result.errors) == (
        TaskResultStatus.READY,
        0,
        [],
    )
    assert 59 < (later.run_at - later.enqueued_at).total_seconds() < 61
    assert at_nine.run_at == example.tomorrow_9am
    assert timezone.localtime(at_nine.run_at).hour == 9
    assert [job.priority for job in jobs] == [0, 0, 0, 0, 0, 50, 0]
    assert keyed.unique_key == f"welcome:{user_id}"
    assert (tagged.tags, tagged.meta) == (["onboarding"], {"account": 42})


@pytest.mark.django_db(transaction=True)
def test_a_batch_gets_its_rows_enqueue_time_and_signals_once_each():
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append((task_result.id, task_result.enqueued_at))

    task_enqueued.connect(receiver)
    try:
        results = add.enqueue_many([((i, i), {}) for i in range(300)])
    finally:
        task_enqueued.disconnect(receiver)
    stored = dict(Job.objects.values_list("id", "enqueued_at"))
    assert [(r.id, r.enqueued_at) for r in results] == seen
    assert {uuid.UUID(r.id): r.enqueued_at for r in results} == stored
    assert results[299].args == [299, 299]


@pytest.mark.django_db(transaction=True)
def test_a_batch_postgres_refuses_enqueues_nothing_and_the_connection_goes_on():
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append(task_result.id)

    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE jobs_job ADD CONSTRAINT test_refuse_add "
            "CHECK (task_path <> 'tests.tasks.add')"
        )
    task_enqueued.connect(receiver)
    try:
        with pytest.raises(IntegrityError, match="test_refuse_add"):
            add.enqueue_many([((1, 1), {})] * 50)
        with pytest.raises(IntegrityError), transaction.atomic():
            noop.enqueue_many([((), {})] * 5)
            add.enqueue_many([((1, 1), {})] * 5)
    finally:
        task_enqueued.disconnect(receiver)
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE jobs_job DROP CONSTRAINT test_refuse_add")
    assert seen[5:] == []
    assert Job.objects.count() == 0
    assert len(noop.enqueue_many([((), {})] * 3)) == Job.objects.count() == 3


def test_enqueue_sends_task_enqueued_signal():
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append(task_result.id)

    task_enqueued.connect(receiver)
    try:
        result = add.enqueue(1, 1)
    finally:
        task_enqueued.disconnect(receiver)
    assert seen == [result.id]


@pytest.mark.django_db(transaction=True)
def test_rolled_back_enqueue_leaves_no_row():
    with pytest.raises(RuntimeError), transaction.atomic():
        result = add.enqueue(1, 2)
        assert Job.objects.filter(id=result.id).exists()
        raise RuntimeError("signup failed")
    assert not Job.objects.filter(id=result.id).exists()
    assert Job.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_notify_once_per_transaction_and_queue_only_for_jobs_due_before_the_next_poll():
    listener = psycopg.connect(database_url_for_subprocesses(), autocommit=True)
    try:
        listener.execute("LISTEN jobs_ready")

        with transaction.atomic():
            for _ in range(3):
                add.enqueue(1, 1)
            add.using(queue_name="reports").enqueue(1, 1)
            noop.enqueue_many([((), {})] * 10)
            # Due after the workers' next poll: nothing to wake anybody for.
            add.using(countdown=3600).enqueue(1, 1)
            listener_payloads = [n.payload for n in listener.notifies(timeout=0.2)]
            assert listener_payloads == [], "NOTIFY must wait for the commit"

        payloads = sorted(n.payload for n in listener.notifies(timeout=1.0, stop_after=2))
        payloads += [n.payload for n in listener.notifies(timeout=0.2)]
        assert sorted(payloads) == ["default", "reports"]

        add.using(countdown=3600).enqueue(1, 1)
        assert [n.payload for n in listener.notifies(timeout=0.3)] == []
    finally:
        listener.close()


def test_non_json_argument_fails_at_enqueue_naming_the_argument():
    with pytest.raises(
        TypeError, match=r"argument 1 of tests\.tasks\.add is not JSON serializable"
    ):
        add.enqueue(1, object())
    with pytest.raises(TypeError, match=r"keyword argument 'b' of tests\.tasks\.add"):
        add.enqueue(1, b={1, 2})
    with pytest.raises(TypeError, match="argument 0"):
        add.enqueue(float("nan"), 1)
    assert Job.objects.count() == 0


def test_a_queue_not_in_queues_is_refused_naming_the_setting_and_what_it_allows():
    with pytest.raises(InvalidTask) as refused:
        add.using(queue_name="nope").enqueue(1, 2)
    assert str(refused.value) == (
        "Queue 'nope' is not in the QUEUES of task backend 'default', which allows "
        "'communications', 'default', 'reports'."
    )
    assert Job.objects.count() == 0


def test_bad_task_options_are_refused():
    with pytest.raises(InvalidTask, match="priority"):
        add.using(priority=101)
    with pytest.raises(InvalidTask, match="max_attempts"):
        add.using(max_attempts=0)
    with pytest.raises(InvalidTask, match="timeout"):
        add.using(timeout=-1)


def test_get_result_of_unknown_or_malformed_id_raises_does_not_exist():
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(uuid.uuid4()))
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("not-a-uuid")
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result("' OR 1=1 --")


def test_get_result_reads_the_row():
    result = sleep_for.using(priority=5).enqueue(0.5)
    fetched = sleep_for.get_result(result.id)
    assert fetched.id == result.id
    assert fetched.status == TaskResultStatus.READY
    assert fetched.args == [0.5]
    assert fetched.task.priority == 5
    assert fetched.attempts == 0
    with pytest.raises(ValueError, match="not finished"):
        _ = fetched.return_value


def test_get_result_of_a_job_whose_task_no_longer_imports_says_what_is_known():
    result = noop.enqueue()
    Job.objects.filter(id=result.id).update(task_path="tests.tasks.renamed_long_ago")
    fetched = default_task_backend.get_result(result.id)
    assert (fetched.id, fetched.status) == (result.id, TaskResultStatus.READY)
    assert fetched.task.module_path == "tests.tasks.renamed_long_ago"
    with pytest.raises(InvalidTask, match="does not import"):
        fetched.task.call()


@pytest.mark.django_db(transaction=True)
def test_async_enqueue_and_get_result():
    async def enqueue_and_fetch():
        result = await async_add.aenqueue(2, 2)
        return await default_task_backend.aget_result(result.id)

    fetched = async_to_sync(enqueue_and_fetch)()
    assert fetched.status == TaskResultStatus.READY
    assert fetched.task.func is async_add.func


def test_enqueue_inside_atomic_is_on_the_callers_connection():
    with transaction.atomic():
        result = add.enqueue(1, 2)
        # Visible inside the transaction that enqueued it, since it is the same connection.
        assert job_status(result.id) == "READY"
