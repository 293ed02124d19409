"""
What makes a schedule valid, in one place for the admin form, the model's
full_clean() and the system check of the schedules declared in settings.
"""

from typing import TYPE_CHECKING

from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends
from django.tasks.exceptions import InvalidTask

from .timing import TimingError, validate_cron, validate_interval, zone

if TYPE_CHECKING:
    from ..models import Schedule


def schedule_errors(
    schedule: "Schedule", backend_alias: str = DEFAULT_TASK_BACKEND_ALIAS
) -> dict[str, str]:
    """Field name -> a message that says what is wrong and what would be right."""
    errors = {}
    if bool(schedule.cron) == (schedule.interval is not None):
        errors["cron"] = "Give either a cron expression or an interval in seconds" + (
            ", not both." if schedule.cron else "."
        )
    elif schedule.cron:
        _collect(errors, "cron", validate_cron, schedule.cron)
    else:
        _collect(errors, "interval", validate_interval, schedule.interval)
    _collect(errors, "time_zone", zone, schedule.time_zone)

    backend = task_backends[backend_alias]
    try:
        backend.load_task(schedule.task_path)
    except InvalidTask as error:
        errors["task_path"] = (
            f"{error}. Give the dotted path of a function decorated with @task, "
            "e.g. accounts.reports.send_signup_report."
        )
    if backend.queues and schedule.queue not in backend.queues:
        errors["queue"] = (
            f"Unknown queue {schedule.queue!r}; the task backend's QUEUES are "
            f"{', '.join(sorted(backend.queues))}."
        )
    if not -100 <= schedule.priority <= 100:
        errors["priority"] = f"Priority must be between -100 and 100, not {schedule.priority}."
    if not isinstance(schedule.args, list):
        errors["args"] = 'Arguments must be a JSON list, e.g. [1, "two"].'
    if not isinstance(schedule.kwargs, dict):
        errors["kwargs"] = 'Keyword arguments must be a JSON object, e.g. {"days": 1}.'
    return errors


def _collect(errors: dict[str, str], field: str, validate, value) -> None:
    try:
        validate(value)
    except TimingError as error:
        errors[field] = str(error)
