"""
Schedules declared in code, in settings.JOBS_SCHEDULES, synced into jobs_schedule.

    JOBS_SCHEDULES = {
        "signup-report": {
            "task": "accounts.reports.send_signup_report",
            "cron": "0 18 * * 1-5",
        },
    }

The table is what runs; `runscheduler` syncs the declarations into it at
start. Which wins when code and admin disagree: a sync creates the declared
schedules that are missing and, in those that exist, changes a field only when
its value in code changed since the previous sync. An admin's edit (say,
disabling the report for a holiday) stands until a deploy changes that same
field in code; then the code's new value wins. A schedule removed from code is
disabled, not deleted, so its history stays.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connections, transaction
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, DEFAULT_TASK_QUEUE_NAME, task_backends
from django.tasks.exceptions import InvalidTask

from .. import queries
from ..models import Schedule

# What a declaration may say, and the model field each key sets.
KEYS = {
    "task": "task_path",
    "cron": "cron",
    "interval": "interval",
    "time_zone": "time_zone",
    "args": "args",
    "kwargs": "kwargs",
    "queue": "queue",
    "priority": "priority",
    "enabled": "enabled",
    "catch_up": "catch_up",
    "catch_up_window": "catch_up_window",
}
FIELD_KEYS = {model_field: key for key, model_field in KEYS.items()}


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    # Name -> why: a schedule whose row, with the code's changes, would not
    # be valid (a field an admin set that no longer is) stays as it was, and
    # the next sync tries again.
    refused: dict[str, str] = field(default_factory=dict)


def declaration_problems() -> list[str]:
    """Every problem of settings.JOBS_SCHEDULES, one sentence each (the system check)."""
    declarations = getattr(settings, "JOBS_SCHEDULES", {})
    if not isinstance(declarations, dict):
        return ["JOBS_SCHEDULES must be a dict of schedule name -> declaration."]
    problems = []
    for name, declaration in declarations.items():
        problems += [
            f"JOBS_SCHEDULES[{name!r}]: {problem}" for problem in _problems(name, declaration)
        ]
    return problems


def declared_fields() -> dict[str, dict[str, Any]]:
    """The model fields of each declared schedule; ImproperlyConfigured if any is invalid."""
    problems = declaration_problems()
    if problems:
        raise ImproperlyConfigured(" ".join(problems))
    return {
        name: _fields(declaration)
        for name, declaration in getattr(settings, "JOBS_SCHEDULES", {}).items()
    }


def sync_declared(using: str = "default") -> SyncReport:
    """Bring the declared schedules into the table, in one transaction (see the module doc)."""
    declared = declared_fields()
    report = SyncReport()
    with transaction.atomic(using=using):
        with connections[using].cursor() as cursor:
            cursor.execute(queries.schedules.LOCK_SCHEDULE_SYNC)
        existing = {schedule.name: schedule for schedule in Schedule.objects.using(using)}
        for name, fields in declared.items():
            schedule = existing.get(name)
            if schedule is None:
                Schedule(name=name, declared=fields, **fields).save(using=using)
                report.created.append(name)
                continue
            previous = schedule.declared
            changed = [
                model_field
                for model_field, value in fields.items()
                if previous is None or previous.get(model_field) != value
            ]
            if changed or previous != fields:
                for model_field in changed:
                    setattr(schedule, model_field, fields[model_field])
                schedule.declared = fields
                try:
                    schedule.save(using=using)
                except ValidationError as error:
                    report.refused[name] = "; ".join(
                        f"{FIELD_KEYS.get(model_field, model_field)}: {' '.join(messages)}"
                        for model_field, messages in error.message_dict.items()
                    )
                    continue
                if changed:
                    report.updated.append(name)
        for name, schedule in existing.items():
            if schedule.declared is not None and name not in declared:
                schedule.enabled = False
                schedule.declared = None
                schedule.save(using=using)
                report.disabled.append(name)
    return report


def _problems(name: object, declaration: object) -> list[str]:
    if not isinstance(name, str) or not name:
        return ["the name must be a non-empty string."]
    if not isinstance(declaration, dict):
        return ['the declaration must be a dict such as {"task": "...", "cron": "0 18 * * 1-5"}.']
    unknown = sorted(set(declaration) - set(KEYS))
    if unknown:
        return [f"unknown key(s) {', '.join(unknown)}; known keys: {', '.join(KEYS)}."]
    if "task" not in declaration:
        return ["'task' is required: the dotted path of a @task function."]
    schedule = Schedule(name=name, **_fields(declaration))
    try:
        schedule.clean_fields(exclude=["declared", *Schedule.SCHEDULER_FIELDS])
        schedule.clean()
    except ValidationError as error:
        return [
            f"{FIELD_KEYS.get(model_field, model_field)}: {' '.join(messages)}"
            for model_field, messages in error.message_dict.items()
        ]
    return []


def _fields(declaration: dict[str, Any]) -> dict[str, Any]:
    """The model fields a declaration sets; queue and priority default to the task's own."""
    fields = {
        "cron": "",
        "interval": None,
        "time_zone": settings.TIME_ZONE,
        "args": [],
        "kwargs": {},
        "enabled": True,
        "catch_up": Schedule._meta.get_field("catch_up").default,
        "catch_up_window": Schedule._meta.get_field("catch_up_window").default,
        **_task_defaults(declaration["task"]),
    }
    for key, value in declaration.items():
        fields[KEYS[key]] = value
    for key in ("interval", "catch_up_window"):
        if isinstance(fields[key], timedelta):
            fields[key] = int(fields[key].total_seconds())
    if isinstance(fields["args"], tuple):
        fields["args"] = list(fields["args"])
    return fields


def _task_defaults(task_path: str) -> dict[str, Any]:
    try:
        task = task_backends[DEFAULT_TASK_BACKEND_ALIAS].load_task(task_path)
    except InvalidTask:
        return {"queue": DEFAULT_TASK_QUEUE_NAME, "priority": 0}
    return {"queue": task.queue_name, "priority": task.priority}
