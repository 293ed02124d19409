"""
jobs.testing: the test backends, the record of what was enqueued, the due jobs
run in the test's process, the TestCase mixin and the pytest fixtures.
"""

import json
import os
import re
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.tasks import TaskResultStatus, default_task_backend, task, task_backends
from django.tasks.exceptions import InvalidTask
from django.tasks.signals import task_finished, task_started
from django.test import TestCase, TransactionTestCase
from django.utils import timezone

from jobs import operations
from jobs.models import Job
from jobs.task import JobTask
from jobs.testing import (
    DummyBackend,
    ImmediateBackend,
    JobsTestMixin,
    capture_enqueued,
    run_due_jobs,
)
from jobs.workflows import chain, step
from tests.conftest import BASE_DIR, database_url_for_subprocesses
from tests.docs.pages import python_blocks, section
from tests.tasks import add, noop
from tests.testing_tasks import (
    always_fails,
    creates_user,
    enqueues_itself,
    enqueues_next,
    fails_in_sql,
    gives_up,
    retries_later,
    succeeds_on_attempt,
)

# The fixtures a project enables in its conftest.py.
pytest_plugins = ["jobs.pytest_plugin"]

TEST_BACKENDS = ["jobs.testing.ImmediateBackend", "jobs.testing.DummyBackend"]


def plain_function(a: int = 0) -> str:
    """Made a task inside the tests, under whichever backend they set."""
    return f"ran with {a}"


@pytest.fixture
def use_backend(settings):
    """use_backend(path): TASKS' default backend becomes that class, with the project's QUEUES."""

    def use(path: str):
        settings.TASKS = {
            "default": {"BACKEND": path, "QUEUES": settings.TASKS["default"]["QUEUES"]}
        }
        return task_backends["default"]

    return use


@pytest.fixture(params=["db", "transactional_db"])
def database(request) -> str:
    """Each test twice: inside a transaction rolled back at its end, and in autocommit."""
    request.getfixturevalue(request.param)
    return request.param


# The test backends.


@pytest.mark.parametrize("path", TEST_BACKENDS)
def test_a_task_declared_with_the_queues_options_builds_under_a_test_backend(use_backend, path):
    backend = use_backend(path)
    assert backend.task_class is JobTask
    declared = task(queue_name="communications", max_attempts=5, timeout=30)(plain_function)
    assert isinstance(declared, JobTask)
    assert (declared.max_attempts, declared.timeout, declared.queue_name) == (
        5,
        30,
        "communications",
    )
    configured = declared.using(countdown=10, max_attempts=2, timeout=1.5, unique_key="k")
    assert (configured.max_attempts, configured.timeout, configured.unique_key) == (2, 1.5, "k")
    assert configured.run_after > timezone.now() + timedelta(seconds=9)


def test_immediate_backend_runs_the_task_at_once(use_backend):
    backend = use_backend("jobs.testing.ImmediateBackend")
    assert isinstance(backend, ImmediateBackend)
    result = add.enqueue(2, 3)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert uuid.UUID(result.id).version == 7
    assert result.args == [2, 3]
    assert result.attempts == 1


def test_immediate_backend_runs_at_once_whatever_the_options(use_backend):
    use_backend("jobs.testing.ImmediateBackend")
    in_a_day = timezone.now() + timedelta(days=1)
    for configured in [
        add.using(countdown=3600),
        add.using(run_after=in_a_day),
        add.using(max_attempts=9, timeout=0.5, unique_key="once", priority=50),
        add.using(queue_name="reports"),
    ]:
        result = configured.enqueue(1, 1)
        assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 2)
    results = add.enqueue_many([((1, 2), {}), ((), {"a": 3, "b": 4})])
    assert [result.return_value for result in results] == [3, 7]


def test_immediate_backend_records_a_failure_once_retry_or_not(use_backend):
    use_backend("jobs.testing.ImmediateBackend")
    for failing, error in [
        (always_fails, "builtins.ValueError"),
        (retries_later, "jobs.exceptions.RetryJob"),
        (gives_up, "jobs.exceptions.DoNotRetry"),
    ]:
        args = [5] if failing is retries_later else []
        result = failing.enqueue(*args)
        assert result.status == TaskResultStatus.FAILED
        assert [e.exception_class_path for e in result.errors] == [error]
        assert result.attempts == 1


@pytest.mark.django_db
def test_immediate_backend_hands_the_task_its_arguments_as_json(use_backend):
    use_backend("jobs.testing.ImmediateBackend")
    result = creates_user.enqueue(username="ada")
    assert User.objects.get(id=result.return_value).username == "ada"
    echo = task(plain_function)
    assert echo.enqueue((1, 2)).return_value == "ran with [1, 2]"


@pytest.mark.django_db
def test_dummy_backend_keeps_the_tasks_without_running_them(use_backend):
    backend = use_backend("jobs.testing.DummyBackend")
    assert isinstance(backend, DummyBackend)
    later = timezone.now() + timedelta(hours=1)
    first = creates_user.enqueue("ada")
    second = creates_user.using(run_after=later, max_attempts=4, priority=-5).enqueue("bob")
    assert [result.id for result in backend.results] == [first.id, second.id]
    assert all(result.status == TaskResultStatus.READY for result in backend.results)
    assert backend.results[1].task.run_after == later
    assert backend.results[1].task.max_attempts == 4
    assert backend.get_result(first.id).args == ["ada"]
    assert not User.objects.exists()
    backend.clear()
    assert backend.results == []


def test_dummy_backend_keeps_one_task_per_unique_key(use_backend):
    backend = use_backend("jobs.testing.DummyBackend")
    first = creates_user.using(unique_key="signup:1").enqueue("ada")
    again = creates_user.using(unique_key="signup:1").enqueue("ada")
    other = creates_user.using(unique_key="signup:2").enqueue("bob")
    assert again.id == first.id
    assert [result.id for result in backend.results] == [first.id, other.id]
    results = creates_user.enqueue_many([(["c"], {}), (["d"], {})])
    assert len(backend.results) == 4 and len(results) == 2


@pytest.mark.parametrize("path", TEST_BACKENDS)
def test_test_backends_refuse_what_the_queue_refuses(use_backend, path):
    use_backend(path)
    with pytest.raises(InvalidTask, match="max_attempts"):
        task(max_attempts=0)(plain_function)
    with pytest.raises(InvalidTask, match="max_attempts"):
        add.using(max_attempts="5")
    with pytest.raises(InvalidTask, match="timeout"):
        add.using(timeout=-1)
    with pytest.raises(InvalidTask, match="Queue 'nowhere'"):
        add.using(queue_name="nowhere")
    with pytest.raises(InvalidTask, match="priority"):
        add.using(priority=101)
    with pytest.raises(InvalidTask, match="aware"):
        add.using(run_after=timezone.now().replace(tzinfo=None))
    with pytest.raises(TypeError, match="countdown or run_after"):
        add.using(countdown=1, run_after=timezone.now())
    with pytest.raises(TypeError, match=r"argument 0 of tests\.tasks\.add is not JSON"):
        add.enqueue(object(), 1)
    with pytest.raises(InvalidTask, match="unique key names one job"):
        add.using(unique_key="k").enqueue_many([((1, 2), {}), ((3, 4), {})])
    # The options of retry policies, snoozes and uniqueness (jobs.retries, jobs.uniqueness).
    with pytest.raises(InvalidTask, match=r"retry is a jobs\.retries\.Retry"):
        task(retry="fast")(plain_function)
    with pytest.raises(InvalidTask, match="retry_on is a list of exception classes"):
        task(retry_on=["ValueError"])(plain_function)
    with pytest.raises(InvalidTask, match="max_snoozes"):
        task(max_snoozes=-1)(plain_function)
    with pytest.raises(InvalidTask, match="unique_for goes with a unique_key"):
        add.using(unique_for=60)
    with pytest.raises(InvalidTask, match="unique_states is a list of statuses"):
        add.using(unique_key="k", unique_states=["DONE"])
    if path.endswith("DummyBackend"):
        # Nothing refused was captured.
        assert default_task_backend.results == []


@pytest.mark.parametrize("path", TEST_BACKENDS)
def test_test_backends_check_each_call_and_each_step_as_the_queue_does(settings, path):
    from tests.limits_settings import TASKS
    from tests.tasks import keyed_noop

    settings.TASKS = {"default": {**TASKS["default"], "BACKEND": path}}
    with pytest.raises(InvalidTask, match="Limit key 'tenant:xxx"):
        keyed_noop.enqueue("x" * 300)
    with pytest.raises(InvalidTask, match="Limit key 'tenant:yyy"):
        keyed_noop.enqueue_many([(("a",), {}), (("y" * 300,), {})])
    with pytest.raises(InvalidTask, match="cannot have a unique key"):
        chain(step(add, 1, 2), step(add.using(unique_key="k"), 3)).enqueue()
    with pytest.raises(TypeError, match="JSON object keys are strings"):
        chain(step(add, {1: 2}, 3)).enqueue()
    if path.endswith("DummyBackend"):
        assert default_task_backend.results == []


# The record of what was enqueued.


@pytest.mark.django_db
def test_the_record_matches_a_task_or_its_path_and_optionally_its_arguments():
    with capture_enqueued() as enqueued:
        first = add.enqueue(2, 3)
        second = add.enqueue(a=2, b=3)
        creates_user.enqueue("ada")
    add.enqueue(9, 9)  # after the block: not recorded

    assert [result.id for result in enqueued.results][:2] == [first.id, second.id]
    assert len(enqueued.results) == 3
    assert enqueued.assert_enqueued(add, count=2) == enqueued.results[:2]
    assert enqueued.assert_enqueued("tests.tasks.add", args=(2, 3)) == [enqueued.results[0]]
    assert enqueued.assert_enqueued(add, kwargs={"a": 2, "b": 3}) == [enqueued.results[1]]
    assert enqueued.assert_enqueued(add, args=[], kwargs={"b": 3, "a": 2}, count=1)
    assert enqueued.assert_enqueued(creates_user.using(priority=5), args=["ada"])
    enqueued.assert_not_enqueued(add, args=[9, 9])
    enqueued.assert_not_enqueued(noop)
    enqueued.clear()
    enqueued.assert_nothing_enqueued()


@pytest.mark.django_db
def test_the_records_failures_say_what_was_expected_and_what_was_enqueued():
    with capture_enqueued() as enqueued:
        enqueued.assert_nothing_enqueued()
        with pytest.raises(AssertionError) as failure:
            enqueued.assert_enqueued(add)
        assert str(failure.value) == "tests.tasks.add was not enqueued.\nNothing was enqueued."

        add.enqueue(2, 3)
        creates_user.enqueue(username="ada")
        listing = (
            "Enqueued (2):\n"
            "  tests.tasks.add(2, 3)\n"
            "  tests.testing_tasks.creates_user(username='ada')"
        )

        with pytest.raises(AssertionError) as failure:
            enqueued.assert_enqueued(add, args=[3, 2])
        expected = f"tests.tasks.add with args [3, 2] was not enqueued.\n{listing}"
        assert str(failure.value) == expected

        with pytest.raises(AssertionError) as failure:
            enqueued.assert_enqueued("tests.tasks.add", args=[2, 3], kwargs={}, count=2)
        assert str(failure.value) == (
            f"tests.tasks.add with args [2, 3] and kwargs {{}} was enqueued once, not 2 times.\n"
            f"{listing}"
        )

        with pytest.raises(AssertionError) as failure:
            enqueued.assert_not_enqueued(creates_user)
        assert str(failure.value) == (
            f"tests.testing_tasks.creates_user was enqueued once.\n{listing}"
        )

        with pytest.raises(AssertionError) as failure:
            enqueued.assert_nothing_enqueued()
        assert str(failure.value) == f"Expected nothing enqueued.\n{listing}"


@pytest.mark.django_db
def test_the_record_sees_enqueue_many_and_a_rolled_back_enqueue():
    with capture_enqueued() as enqueued:
        add.enqueue_many([((1, 1), {}), ((2, 2), {})])
        with pytest.raises(RuntimeError), transaction.atomic():
            noop.enqueue()
            raise RuntimeError
    enqueued.assert_enqueued(add, count=2)
    enqueued.assert_enqueued(noop)
    assert not Job.objects.filter(task_path="tests.tasks.noop").exists()


@pytest.mark.parametrize("path", TEST_BACKENDS)
def test_the_record_works_with_the_test_backends(use_backend, path):
    use_backend(path)
    with capture_enqueued() as enqueued:
        add.enqueue(1, 2)
    [result] = enqueued.assert_enqueued(add, args=[1, 2])
    expected = TaskResultStatus.SUCCESSFUL if "Immediate" in path else TaskResultStatus.READY
    assert result.status == expected


# run_due_jobs() on the queue's backend.


def test_run_due_jobs_runs_each_due_job_through_the_workers_code(database):
    seen = []

    def record(sender, task_result, signal, **kwargs):
        seen.append((signal, task_result.id, task_result.status))

    first = add.enqueue(2, 3)
    second = creates_user.enqueue("ada")
    task_started.connect(record)
    task_finished.connect(record)
    try:
        run = run_due_jobs()
    finally:
        task_started.disconnect(record)
        task_finished.disconnect(record)

    assert run.counts == {"SUCCESSFUL": 2}
    assert run.attempts == 2
    assert [result.id for result in run.results] == [first.id, second.id]
    assert run.results[0].return_value == 5
    assert User.objects.get(id=run.results[1].return_value).username == "ada"
    job = Job.objects.get(id=first.id)
    assert (job.status, job.attempts, job.return_value) == ("SUCCESSFUL", 1, 5)
    assert job.worker_ids == [f"run_due_jobs-{os.getpid()}"]
    assert job.enqueued_at <= job.started_at <= job.finished_at
    assert [(s, i) for s, i, _ in seen] == [
        (task_started, first.id),
        (task_finished, first.id),
        (task_started, second.id),
        (task_finished, second.id),
    ]
    assert run_due_jobs().results == []


def test_run_due_jobs_runs_higher_priorities_first_and_only_the_queues_asked(database):
    low = add.enqueue(1, 1)
    high = add.using(priority=10).enqueue(2, 2)
    report = add.using(queue_name="reports").enqueue(3, 3)
    run = run_due_jobs(queues=["default"])
    assert [result.id for result in run.results] == [high.id, low.id]
    assert Job.objects.get(id=report.id).status == "READY"
    assert [result.id for result in run_due_jobs().results] == [report.id]
    with pytest.raises(ValueError, match="no queue nowhere"):
        run_due_jobs(queues=["nowhere"])


def test_run_due_jobs_runs_every_queue_of_a_backend_without_queues(database, settings):
    settings.TASKS = {"default": {"BACKEND": "jobs.backend.PostgresBackend", "QUEUES": []}}
    anywhere = add.using(queue_name="anywhere").enqueue(1, 2)
    assert run_due_jobs(queues=["elsewhere"]).attempts == 0
    run = run_due_jobs()
    assert [result.id for result in run.results] == [anywhere.id]
    assert run.counts == {"SUCCESSFUL": 1}


def test_a_retry_waits_for_its_backoff_unless_retries_are_included(database):
    flaky = succeeds_on_attempt.enqueue(3)
    run = run_due_jobs()
    assert (run.counts, run.attempts) == ({"READY": 1}, 1)
    [result] = run.results
    assert result.attempts == 1
    assert [error.exception_class_path for error in result.errors] == ["builtins.ValueError"]
    assert Job.objects.get(id=flaky.id).run_at > timezone.now()
    assert run_due_jobs().attempts == 0

    run = run_due_jobs(include_retries=True)
    assert (run.counts, run.attempts) == ({"SUCCESSFUL": 1}, 2)
    [result] = run.results
    assert (result.attempts, result.return_value, len(result.errors)) == (3, 3, 2)


def test_a_job_fails_for_good_once_its_attempts_are_spent(database):
    failing = always_fails.enqueue()
    run = run_due_jobs(include_retries=True)
    assert (run.counts, run.attempts) == ({"FAILED": 1}, 2)
    job = Job.objects.get(id=failing.id)
    assert (job.status, job.attempts, job.max_attempts) == ("FAILED", 2, 2)
    assert [error["message"] for error in job.errors] == ["never works", "never works"]


def test_retry_job_and_do_not_retry_behave_as_in_the_worker(database):
    later = retries_later.enqueue(3600)
    stop = gives_up.enqueue()
    run = run_due_jobs()
    assert run.counts == {"READY": 1, "FAILED": 1}
    job = Job.objects.get(id=later.id)
    assert job.run_at > timezone.now() + timedelta(minutes=59)
    assert job.errors[0]["exception_class_path"] == "jobs.exceptions.RetryJob"
    job = Job.objects.get(id=stop.id)
    assert (job.status, job.attempts) == ("FAILED", 1)
    assert job.errors[0]["exception_class_path"] == "jobs.exceptions.DoNotRetry"
    assert job.errors[0]["message"] == "no point in trying again"

    run = run_due_jobs(include_retries=True)
    assert (run.counts, run.results[0].return_value) == ({"SUCCESSFUL": 1}, 2)


def test_jobs_enqueued_by_jobs_run_in_later_rounds(database):
    enqueues_next.enqueue(3)
    run = run_due_jobs()
    assert [result.return_value for result in run.results] == [3, 2, 1, 0]


def test_a_task_that_enqueues_itself_stops_at_max_rounds(database):
    enqueues_itself.enqueue()
    with pytest.raises(RuntimeError, match="still due after 5 rounds"):
        run_due_jobs(max_rounds=5)


def test_retries_that_outlast_max_rounds_raise_too(database):
    failing = always_fails.using(max_attempts=50).enqueue()
    with pytest.raises(RuntimeError, match="still due after 3 rounds"):
        run_due_jobs(include_retries=True, max_rounds=3)
    assert Job.objects.get(id=failing.id).attempts == 3


def test_a_job_scheduled_for_later_runs_once_made_due(database):
    scheduled = add.using(countdown=3600).enqueue(1, 2)
    assert run_due_jobs(include_retries=True).attempts == 0
    operations.run_now(scheduled.id)
    assert run_due_jobs().counts == {"SUCCESSFUL": 1}


def test_a_task_whose_sql_fails_leaves_the_tests_transaction_usable(database):
    before = User.objects.create(username="before")
    failing = fails_in_sql.enqueue("lost")
    run = run_due_jobs(include_retries=True)
    assert run.counts == {"FAILED": 1}
    assert [error.exception_class_path for error in run.results[0].errors] == [
        "django.db.utils.DataError",
        "django.db.utils.DataError",
    ]
    assert Job.objects.get(id=failing.id).status == "FAILED"
    assert User.objects.filter(id=before.id).exists()
    if database == "db":
        # The job's savepoint was rolled back, with the user it wrote.
        assert not User.objects.filter(username="lost").exists()


@pytest.mark.django_db
def test_run_due_jobs_keeps_the_tests_connection_and_transaction():
    user = User.objects.create(username="kept")
    raw = connection.connection
    add.enqueue(1, 1)
    assert run_due_jobs().counts == {"SUCCESSFUL": 1}
    assert connection.connection is raw
    assert connection.in_atomic_block
    assert User.objects.filter(id=user.id).exists()


def test_run_due_jobs_needs_the_queues_backend(use_backend):
    use_backend("jobs.testing.ImmediateBackend")
    with pytest.raises(TypeError, match="runs the jobs of a PostgresBackend"):
        run_due_jobs()


# The pytest fixtures, used here as a project's tests use them.


def test_the_fixtures_record_and_run(transactional_db, enqueued_jobs, run_jobs):
    enqueued_jobs.assert_nothing_enqueued()
    result = creates_user.enqueue("ada")
    enqueued_jobs.assert_enqueued(creates_user, args=["ada"], count=1)
    assert run_jobs().counts == {"SUCCESSFUL": 1}
    assert Job.objects.get(id=result.id).status == "SUCCESSFUL"
    assert User.objects.filter(username="ada").exists()


# The TestCase mixin.


class MixinInATestCase(JobsTestMixin, TestCase):
    def test_it_records_each_tests_enqueues_and_runs_them(self):
        self.assertNothingEnqueued()
        result = succeeds_on_attempt.enqueue(2)
        [recorded] = self.assertEnqueued(succeeds_on_attempt, args=[2])
        self.assertEqual(recorded.id, result.id)
        self.assertNotEnqueued(add)

        run = self.run_due_jobs(include_retries=True)

        self.assertEqual((run.counts, run.attempts), ({"SUCCESSFUL": 1}, 2))
        self.assertEqual(Job.objects.get(id=result.id).status, "SUCCESSFUL")

    def test_its_assertions_fail_with_the_list_of_what_was_enqueued(self):
        add.enqueue(1, 2)
        listing = "Enqueued (1):\n  tests.tasks.add(1, 2)"
        expected = f"tests.tasks.noop was not enqueued.\n{listing}"
        with self.assertRaisesMessage(AssertionError, expected):
            self.assertEnqueued(noop)
        with self.assertRaisesMessage(AssertionError, f"was enqueued once.\n{listing}"):
            self.assertNotEnqueued(add)
        with self.assertRaisesMessage(AssertionError, f"Expected nothing enqueued.\n{listing}"):
            self.assertNothingEnqueued()


class MixinInATransactionTestCase(JobsTestMixin, TransactionTestCase):
    def test_it_runs_the_jobs_in_autocommit(self):
        creates_user.enqueue("ada")
        self.assertEnqueued(creates_user)
        self.assertEqual(self.run_due_jobs().counts, {"SUCCESSFUL": 1})
        self.assertTrue(User.objects.filter(username="ada").exists())


# A project whose test settings switch TASKS to the test backend.

# Every task of accounts/tasks.py, and the channel of the delivery it is given.
ACCOUNT_TASKS = {
    "send_welcome_email": "email",
    "send_welcome_sms": "sms",
    "send_welcome_push": "push",
}
# The signup's follow-up, run by the signup itself once the three have finished.
FOLLOW_UPS = ["record_welcome_outcome"]

RUN_EVERY_ACCOUNT_TASK = """
import json
import sys

import django

django.setup()

from django.contrib.auth.models import User
from django.core import mail
from django.tasks import Task, task_backends

import accounts.tasks
from accounts.models import Delivery, Profile
from accounts.signup import SignupForm

channels = json.loads(sys.argv[1])
user = User.objects.create_user("ada", "ada@example.com")
recipients = {"email": user.email, "sms": "+14155550123", "push": f"user:{user.id}"}
found = {name: value for name, value in vars(accounts.tasks).items() if isinstance(value, Task)}
results = {}
for name, task in found.items():
    if name in channels:
        channel = channels[name]
        delivery = Delivery.objects.create(
            user=user, channel=channel, recipient=recipients[channel]
        )
        result = task.enqueue(delivery.id, user_id=user.id)
        results[name] = {
            "status": result.status,
            "return_value": result.return_value if result.is_finished else None,
            "errors": [error.exception_class_path for error in result.errors],
        }
form = SignupForm(
    {"email": "grace@example.com", "phone": "+14155550124", "password": "correct-horse-42!"}
)
signup = form.save() if form.is_valid() else None
backend = type(task_backends["default"])
print(json.dumps({
    "backend": f"{backend.__module__}.{backend.__qualname__}",
    "found": sorted(found),
    "results": results,
    "errors": form.errors,
    "welcome_sent": Profile.objects.get(user=signup.user).welcome_sent,
    "signup": [
        [delivery.channel, delivery.status, str(delivery.task_id)]
        for delivery in Delivery.objects.filter(user=signup.user).order_by("channel")
    ] if signup else None,
    "emails": [message.to for message in mail.outbox],
}))
"""


def test_test_settings_with_the_immediate_backend_run_every_account_task(transactional_db):
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocesses(),
        "DJANGO_SETTINGS_MODULE": "tests.testing_settings",
        "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
    }
    completed = subprocess.run(
        [sys.executable, "-c", RUN_EVERY_ACCOUNT_TASK, json.dumps(ACCOUNT_TASKS)],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.splitlines()[-1])

    assert report["backend"] == "jobs.testing.backends.ImmediateBackend"
    assert report["found"] == sorted([*ACCOUNT_TASKS, *FOLLOW_UPS]), (
        "accounts/tasks.py has a task this test does not run: give it a channel in ACCOUNT_TASKS"
    )
    for name, channel in ACCOUNT_TASKS.items():
        result = report["results"][name]
        assert (result["status"], result["errors"]) == ("SUCCESSFUL", []), name
        assert (result["return_value"]["channel"], result["return_value"]["status"]) == (
            channel,
            "sent",
        )
    assert report["errors"] == {}
    assert [(channel, status) for channel, status, _ in report["signup"]] == [
        ("email", "sent"),
        ("push", "sent"),
        ("sms", "sent"),
    ]
    assert all(uuid.UUID(task_id).version == 7 for _, _, task_id in report["signup"])
    # The follow-up ran once all three had: all three went out.
    assert report["welcome_sent"] == 3
    assert report["emails"] == [["ada@example.com"], ["grace@example.com"]]


# The section "Testing your tasks" of the documentation.


def test_the_readmes_example_tests_pass_as_written(tmp_path):
    files = {}
    for block in python_blocks(section("Testing your tasks")):
        first_line = block.splitlines()[0]
        if re.fullmatch(r"# \w+\.py", first_line):
            files[first_line[2:]] = block
    assert set(files) == {"conftest.py", "test_welcome.py"}
    for name, block in files.items():
        (tmp_path / name).write_text(block)
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocesses(),
        # A test database of its own, beside this run's.
        "TEST_DATABASE_NAME": f"{connection.settings_dict['NAME']}_readme",
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PYTHONPATH": str(BASE_DIR),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "2 passed" in completed.stdout


def test_the_readmes_test_settings_make_a_backend_that_runs_the_queues_tasks(settings):
    [tasks_setting] = [
        block
        for block in python_blocks(section("Testing your tasks"))
        if block.startswith("TASKS = ")
    ]
    namespace = {}
    exec(tasks_setting, namespace)
    settings.TASKS = namespace["TASKS"]
    assert isinstance(task_backends["default"], ImmediateBackend)
    assert add.using(countdown=60, max_attempts=2).enqueue(1, 2).return_value == 3
    settings.TASKS = {
        "default": {**namespace["TASKS"]["default"], "BACKEND": "jobs.testing.DummyBackend"}
    }
    add.enqueue(1, 2)
    assert len(task_backends["default"].results) == 1
