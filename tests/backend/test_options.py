"""
The backend's OPTIONS, parsed once into jobs.options.QueueOptions: each key
into its field, what the setting gets wrong into a system check's error, and
no other module reading the setting by its keys.
"""

import ast
from dataclasses import fields
from pathlib import Path

import pytest
from django.core import checks
from django.tasks import task_backends

import jobs
from jobs.backend import PostgresBackend
from jobs.models import Job
from jobs.options import QueueOptions
from jobs.retention import PrunePass
from tests.docs.pages import python_blocks, section
from tests.tasks import add

KEYS = [spec.metadata["key"] for spec in fields(QueueOptions)]


def parsed(setting: dict) -> tuple[QueueOptions, list[checks.CheckMessage]]:
    return QueueOptions.parse("default", setting)


def test_every_key_lands_in_its_field():
    options, errors = parsed(
        {
            "DATABASE": "other",
            "MAX_ATTEMPTS": 5,
            "TIMEOUT": 30,
            "RETRY_BACKOFF_BASE": 0.5,
            "RETRY_BACKOFF_MAX": 60,
            "POLL_INTERVAL": 2,
            "HEARTBEAT_INTERVAL": 1,
            "WORKER_DEAD_AFTER": 10,
            "RETAIN_SUCCESSFUL": None,
            "RETAIN_FAILED": 0,
            "PREPARED_STATEMENTS": False,
            "MISSING_TASK_GRACE": None,
            "LIMITS": {"reports": {"queues": ["reports"], "concurrency": 2}},
        }
    )
    assert errors == []
    assert (options.database, options.max_attempts, options.timeout) == ("other", 5, 30.0)
    assert (options.retry_backoff_base, options.retry_backoff_max) == (0.5, 60.0)
    assert (options.poll_interval, options.heartbeat_interval) == (2.0, 1.0)
    assert options.worker_dead_after == 10.0
    assert options.prune_passes("default") == [
        PrunePass(("SUCCESSFUL",), None),
        PrunePass(("FAILED", "CANCELLED"), 0.0),
    ]
    assert options.prepared_statements is False
    assert options.missing_task_grace is None
    assert [limit.name for limit in options.limits.all] == ["reports"]


def test_no_setting_gives_the_documented_defaults():
    options, errors = parsed({})
    assert errors == []
    assert options.database == "default"
    assert options.max_attempts == 3
    assert options.timeout is None
    assert options.prune_passes("default") == [
        PrunePass(("SUCCESSFUL",), 7 * 24 * 3600.0),
        PrunePass(("FAILED", "CANCELLED"), 30 * 24 * 3600.0),
    ]
    assert not options.limits


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("MAX_ATTEMPTS", "3", "a whole number of at least 1"),
        ("MAX_ATTEMPTS", 0, "a whole number of at least 1"),
        ("TIMEOUT", 0, "a positive number of seconds, or None"),
        ("POLL_INTERVAL", "5", "a positive number of seconds"),
        ("RETRY_BACKOFF_BASE", -1, "a number of seconds, 0 or more"),
        ("RETAIN_FAILED", float("inf"), "a number of seconds, 0 or more, or None"),
        ("PREPARED_STATEMENTS", "no", "True or False"),
        ("DATABASE", "", "the alias of a database in DATABASES"),
    ],
)
def test_a_value_that_cannot_be_used_is_named_and_the_default_kept(key, value, rule):
    options, [error] = parsed({key: value})
    assert error.id == "jobs.E009"
    assert error.msg.startswith(f"Task backend 'default': OPTIONS[{key!r}] is {value!r}; ")
    assert rule in error.msg
    assert "runs with the default" in error.hint
    assert options == QueueOptions(limits=options.limits)


def test_unknown_keys_are_named_with_the_known_ones():
    _, [error] = parsed({"POLL_INTERVALL": 1, "RETRIES": 3})
    assert error.id == "jobs.E001"
    assert error.msg == "Unknown OPTIONS for task backend 'default': POLL_INTERVALL, RETRIES."
    assert error.hint == f"Known options: {', '.join(KEYS)}."


def test_the_backend_reports_what_its_options_get_wrong():
    backend = PostgresBackend("typo", {"OPTIONS": {"MAX_ATTEMPTS": 0, "RETRYS": 1}})
    ids = [message.id for message in backend.check()]
    assert "jobs.E009" in ids and "jobs.E001" in ids
    assert backend.queue_options.max_attempts == 3


@pytest.mark.django_db
def test_the_settings_reference_example_makes_a_backend_that_enqueues_with_its_options(
    settings,
):
    [block] = python_blocks(section("`TASKS`"))
    namespace = {}
    exec(block, namespace)
    settings.TASKS = namespace["TASKS"]
    backend = task_backends["default"]
    assert isinstance(backend, PostgresBackend) and backend.check() == []
    assert backend.queues == {"default", "communications", "reports"}
    # OPTIONS["MAX_ATTEMPTS"] is the attempts of a job whose task sets none.
    assert Job.objects.get(id=add.using(queue_name="reports").enqueue(1, 2).id).max_attempts == 5


def option_keys_read(path: Path) -> list[str]:
    """Where a module reads an OPTIONS key: `x["KEY"]` or `x.get("KEY")`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Subscript):
            key = node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            key = node.args[0]
        else:
            continue
        if isinstance(key, ast.Constant) and key.value in KEYS:
            found.append(f"{path.name}:{node.lineno} reads {key.value!r}")
    return found


def test_only_jobs_options_reads_the_setting_by_its_keys():
    package = Path(jobs.__file__).parent
    found = [
        place
        for path in sorted(package.rglob("*.py"))
        if path.name != "options.py" and "migrations" not in path.parts
        for place in option_keys_read(path)
    ]
    assert found == []
