"""
Bad input at the queue's edges gets a clear error and writes nothing: values
Postgres cannot store, names too long for their column, a task that no longer
loads, and runworker arguments that name nothing.
"""

import subprocess
import sys
import textwrap

import pytest
from django.core.management import CommandError, call_command
from django.tasks import TaskResultStatus, default_task_backend, task
from django.tasks.exceptions import InvalidTask

from jobs.models import Job
from jobs.workflows import chain, step
from tests.conftest import BASE_DIR
from tests.tasks import add


@pytest.mark.parametrize(
    ("enqueue", "named"),
    [
        (lambda: add.enqueue("a\x00b", 1), "argument 0"),
        (lambda: add.enqueue({"key\x00": 1}, 1), "argument 0"),
        (lambda: add.enqueue(1, b="x\ud800"), "keyword argument 'b'"),
        (lambda: add.enqueue_many([((1, 2), {}), (([1, "\x00"], 2), {})]), "argument 0"),
    ],
)
def test_an_argument_postgres_cannot_store_is_named_and_nothing_is_written(db, enqueue, named):
    with pytest.raises(ValueError, match=f"{named} of tests.tasks.add holds") as raised:
        enqueue()
    assert "cannot store in jsonb" in str(raised.value)
    assert not Job.objects.exists()


def test_a_literal_backslash_u0000_in_an_argument_is_plain_text(db):
    result = add.enqueue("\\u0000", "")
    assert Job.objects.get(id=result.id).args == ["\\u0000", ""]


@pytest.mark.parametrize(
    ("configure", "message"),
    [
        (lambda: add.using(unique_key="k" * 256), "unique_key is 256 characters long; at most 255"),
        (lambda: add.using(unique_key="a\x00b"), "unique_key holds a NUL character"),
    ],
)
def test_a_unique_key_the_column_cannot_hold_is_refused_before_writing(db, configure, message):
    with pytest.raises(InvalidTask, match=message):
        configure().enqueue(1, 2)
    assert not Job.objects.exists()


def test_get_result_of_a_job_whose_task_module_fails_to_import_says_what_is_known(
    db, tmp_path, monkeypatch
):
    (tmp_path / "module_that_divides_by_zero.py").write_text("1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = add.enqueue(1, 2)
    Job.objects.filter(id=result.id).update(task_path="module_that_divides_by_zero.task")
    fetched = default_task_backend.get_result(result.id)
    assert fetched.status == TaskResultStatus.READY
    assert fetched.task.module_path == "module_that_divides_by_zero.task"
    assert fetched.args == [1, 2] and fetched.enqueued_at == result.enqueued_at
    with pytest.raises(InvalidTask, match="ZeroDivisionError"):
        fetched.task.call(1, 2)


def test_get_result_of_a_job_of_a_backend_that_is_gone_says_what_is_known(db):
    result = add.enqueue(1, 2)
    Job.objects.filter(id=result.id).update(backend="retired")
    fetched = default_task_backend.get_result(result.id)
    assert fetched.id == result.id and fetched.backend == "retired"
    assert fetched.task.module_path == "tests.tasks.add"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--queues", ","], "--queues ',' names no queue"),
        (["--queues", ""], "--queues '' names no queue"),
        (["--shutdown-timeout", "-5"], "--shutdown-timeout must be 0 or more seconds"),
        (["--backend", "nope"], "No task backend 'nope' in the TASKS setting; it has 'default'"),
    ],
)
def test_runworker_refuses_arguments_that_name_nothing(worker_env, arguments, message):
    # Pointed at the test database: a worker that wrongly started works there.
    finished = subprocess.run(
        [sys.executable, "manage.py", "runworker", *arguments],
        cwd=BASE_DIR,
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 1
    assert message in finished.stderr, textwrap.shorten(finished.stderr, 500)


# Options and arguments of the wrong kind, by every way in.


def test_a_priority_that_is_not_a_number_is_an_invalid_task(db):
    with pytest.raises(InvalidTask, match="priority must be a whole number"):
        add.using(priority="high")
    with pytest.raises(InvalidTask, match="priority must be a whole number"):
        task(priority="high")(add.func)
    with pytest.raises(InvalidTask, match="priority must be a whole number"):
        chain(step(add, 1, 2), step(add.using(priority=[1]), 3))
    with pytest.raises(CommandError, match="--priority: invalid int value: 'high'"):
        call_command("jobs", "enqueue", "tests.tasks.add", "--priority", "high")
    with pytest.raises(CommandError, match="Not enqueued: priority must be a whole number"):
        call_command("jobs", "enqueue", "tests.tasks.add", "--args", "[1, 2]", "--priority", "500")
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("enqueue", "named"),
    [
        (lambda: add.enqueue({1: "one"}, 2), r"argument 0 of tests\.tasks\.add has key 1"),
        (lambda: add.enqueue(1, b=[{"a": {2.5: 0}}]), "keyword argument 'b' .* has key 2.5"),
        (lambda: add.enqueue_many([((1, 2), {}), ((1, {None: 2}), {})]), "argument 1 .* None"),
        (lambda: chain(step(add, 1, 2), step(add, {True: 1})).enqueue(), "argument 0 .* True"),
        (lambda: default_task_backend.enqueue(add, [1], {"a": 1, 2: 2}), "keyword argument 2"),
    ],
)
def test_a_dict_whose_keys_are_not_strings_is_refused_at_enqueue(db, enqueue, named):
    with pytest.raises(TypeError, match=named) as raised:
        enqueue()
    assert "JSON object keys are strings" in str(raised.value)
    assert not Job.objects.exists()


def test_an_argument_that_is_not_json_says_what_djangos_backends_say():
    """Django's own tests look for "Unsupported type" (django.utils.json.normalize_json)."""
    with pytest.raises(TypeError, match=r"argument 0 of tests\.tasks\.add") as raised:
        add.enqueue({1, 2}, 3)
    assert str(raised.value).startswith("Unsupported type: <class 'set'>. ")
    with pytest.raises(TypeError, match=r"^Unsupported type: <class 'object'>\. "):
        add.enqueue(1, b=[1, {"deep": object()}])
