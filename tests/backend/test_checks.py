"""The queue's system checks: each problem named, with an id and a hint."""

import importlib.util
import os
import subprocess
import sys

from django.conf import settings
from django.core import checks
from django.tasks import task_backends
from django.test import override_settings

from jobs import checks as jobs_checks
from jobs.backend import PostgresBackend
from tests.conftest import BASE_DIR
from tests.docs.pages import python_blocks, section


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [message.id for message in messages]


def test_a_project_set_up_as_documented_passes_every_check(db):
    assert checks.run_checks(databases=["default"]) == []


def test_the_enqueue_guides_settings_are_the_projects_and_pass_every_check(db, settings):
    block, _ = python_blocks(section("Enqueue jobs and read their results"))
    namespace = {}
    exec(block, namespace)
    # "Already in project/settings.py": the apps, the backend and its queues.
    _, *apps = namespace["INSTALLED_APPS"]
    assert set(apps) <= set(settings.INSTALLED_APPS)
    guide, project = namespace["TASKS"]["default"], settings.TASKS["default"]
    assert (guide["BACKEND"], guide["QUEUES"]) == (project["BACKEND"], project["QUEUES"])
    settings.TASKS = namespace["TASKS"]
    assert isinstance(task_backends["default"], PostgresBackend)
    assert checks.run_checks(databases=["default"]) == []


def test_psycopg_3_missing_is_named_with_how_to_install_it(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "psycopg" else find_spec(name, *args),
    )
    [error] = [m for m in task_backends["default"].check() if m.id == "jobs.E004"]
    assert "psycopg 3" in error.msg
    assert "pip install 'psycopg[binary]'" in error.hint


def test_a_server_older_than_the_queue_supports_is_named(db, monkeypatch):
    assert jobs_checks.check_database_version(databases=["default"]) == []
    monkeypatch.setattr(jobs_checks, "MINIMUM_POSTGRES_VERSION", 99)
    [error] = jobs_checks.check_database_version(databases=["default"])
    assert error.id == "jobs.E005"
    assert "PostgreSQL 99 or newer" in error.msg and error.hint


def test_the_version_check_connects_only_when_asked_to():
    assert jobs_checks.check_database_version(databases=None) == []


def test_django_contrib_postgres_missing_is_named():
    apps = [app for app in settings.INSTALLED_APPS if app != "django.contrib.postgres"]
    with override_settings(INSTALLED_APPS=apps):
        [error] = jobs_checks.check_postgres_app_installed()
    assert error.id == "jobs.E006"
    assert "INSTALLED_APPS" in error.hint


def test_heartbeats_too_far_apart_for_the_lease_are_named():
    backend = settings.TASKS["default"]
    slow = {**backend, "OPTIONS": {"HEARTBEAT_INTERVAL": 10.0, "WORKER_DEAD_AFTER": 20.0}}
    with override_settings(TASKS={"default": slow}):
        [error] = [m for m in task_backends["default"].check() if m.id == "jobs.E008"]
    assert error.id == "jobs.E008"
    assert "stops its jobs when it has not heartbeaten for 15 s" in error.msg
    assert "every 7.5 s at most, or raise WORKER_DEAD_AFTER to 27 s" in error.hint


def test_a_project_on_sqlite_is_told_what_to_set(tmp_path):
    """startproject's database: `check` names the setting and the engine to put there."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "(jobs.E003) Task backend 'default' needs PostgreSQL; database 'default' is sqlite." in (
        done.stderr
    )
    assert "HINT: Set DATABASES['default']['ENGINE'] to 'django.db.backends.postgresql'" in (
        done.stderr
    )
