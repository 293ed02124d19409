"""
The app's management commands as a set: each one's --help ends with the
others, and the old names are the deprecated ones, each naming what replaced it.
"""

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command, find_commands, load_command_class

import jobs.management
from jobs.management.base import DEPRECATED, app_commands

EVERY_COMMAND = sorted(find_commands(str(Path(jobs.management.__file__).parent)))


def test_the_commands_are_the_documented_ones():
    assert app_commands() == ["jobs", "probe", "runscheduler", "runworker", "schedules"]
    assert set(EVERY_COMMAND) == {*app_commands(), "queues", "prunejobs"}
    assert {name for name in DEPRECATED if " " not in name} == {"queues", "prunejobs"}


@pytest.mark.parametrize("name", EVERY_COMMAND)
def test_the_help_of_each_command_ends_with_the_others(name, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    command = load_command_class("jobs", name)
    lines = command.create_parser("manage.py", name).format_help().splitlines()
    others = ", ".join(other for other in app_commands() if other != name)
    assert lines[-1] == f"Other commands of this app: {others}."


@pytest.mark.parametrize(
    ("name", "replacement"), [("queues", "jobs queues"), ("prunejobs", "jobs prune")]
)
def test_a_deprecated_command_names_its_replacement_in_its_help(name, replacement):
    command = load_command_class("jobs", name)
    assert command.help.startswith(f"Deprecated: use `manage.py {replacement}`")


@pytest.mark.django_db
def test_prune_tells_in_json_what_it_would_delete():
    out = io.StringIO()
    call_command("jobs", "prune", "--dry-run", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {
        "dry_run": True,
        "jobs": [
            {
                "statuses": ["SUCCESSFUL"],
                "rule": None,
                "orphaned": False,
                "retain": 604800.0,
                "count": 0,
            },
            {
                "statuses": ["FAILED", "CANCELLED"],
                "rule": None,
                "orphaned": False,
                "retain": 2592000.0,
                "count": 0,
            },
            {
                "statuses": ["SUCCESSFUL"],
                "rule": None,
                "orphaned": True,
                "retain": 604800.0,
                "count": 0,
            },
            {
                "statuses": ["FAILED", "CANCELLED"],
                "rule": None,
                "orphaned": True,
                "retain": 2592000.0,
                "count": 0,
            },
        ],
        "limit_keys": None,
    }
