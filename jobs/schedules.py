"""
What a schedule is, apart from its row: when it ticks, and whether the
scheduler could run it. The model (jobs.models.Schedule), its admin form, the
declarations in settings and the scheduler all read these; none of this
depends on them.

When a schedule ticks: cron expressions (cronsim) and fixed intervals.

Cron expressions are read in the schedule's own time zone, so "30 2 * * *" in
Europe/Berlin is 02:30 Berlin time all year. cronsim follows Debian cron on DST
days: a daily time that falls in the hour skipped in spring runs once, when the
clocks have jumped (03:00); a daily time that falls in the hour repeated in
autumn runs once, at its first occurrence. Expressions that tick every hour or
more often fire on real elapsed time and so tick through both of autumn's hours.

Intervals are plain elapsed seconds from the schedule's previous tick: DST
never moves them.

Every tick returned here is an aware datetime in UTC, whole seconds.

Whether it could run: schedule_errors() holds the rules, in one place for the
admin form, the model's full_clean() and the system check of the schedules
declared in settings.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends
from django.tasks.exceptions import InvalidTask

from .exceptions import JobsError

# How far back latest_at_or_before() looks for a cron tick, at most.
LOOKBACK_LIMIT = timedelta(days=400)


class TimingError(JobsError, ValueError):
    """A cron expression, interval or time zone that cannot make ticks."""


def zone(name: str) -> ZoneInfo:
    """The ZoneInfo of an IANA time zone name, or a TimingError that says what to use."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise TimingError(
            f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin', "
            "'America/New_York' or 'UTC'."
        ) from None


def validate_cron(expression: str) -> None:
    """Raise TimingError unless the expression is a cron expression that ever ticks."""
    try:
        next(CronSim(expression, datetime.now(UTC)))
    except CronSimError as error:
        raise TimingError(
            f"{expression!r} is not a valid cron expression ({error}). Expected five fields, "
            "minute hour day-of-month month day-of-week, such as '0 18 * * 1-5', or six "
            "with seconds first."
        ) from None
    except StopIteration:
        raise TimingError(f"The cron expression {expression!r} never matches a date.") from None


def validate_interval(seconds: object) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise TimingError(
            f"The interval must be a whole number of seconds, at least 1, not {seconds!r}."
        )


@dataclass(frozen=True)
class Timing:
    """A cron expression in a time zone, or an interval in seconds: exactly one of the two."""

    cron: str = ""
    interval: int | None = None
    time_zone: str = "UTC"

    def __post_init__(self) -> None:
        if bool(self.cron) == (self.interval is not None):
            raise TimingError(
                "Give a cron expression or an interval in seconds, not both or neither."
            )
        if self.cron:
            validate_cron(self.cron)
        else:
            validate_interval(self.interval)
        zone(self.time_zone)

    def next_after(self, moment: datetime, anchor: datetime | None = None) -> datetime | None:
        """
        The first tick strictly after moment (None: the expression never ticks again).

        An interval counts from anchor, a previous tick, when there is one, so
        its ticks stay on one grid; without one it starts a whole interval from
        moment.
        """
        if self.interval is not None:
            step = timedelta(seconds=self.interval)
            if anchor is None:
                return _whole_second(moment) + step
            steps = math.floor((moment - anchor) / step) + 1
            return anchor + max(steps, 0) * step
        return next(self._cron_ticks(moment), None)

    def ticks_after(self, moment: datetime, anchor: datetime | None = None) -> Iterator[datetime]:
        """Every tick strictly after moment, in order."""
        if self.interval is None:
            yield from self._cron_ticks(moment)
            return
        tick = self.next_after(moment, anchor)
        while True:
            yield tick
            tick += timedelta(seconds=self.interval)

    def latest_at_or_before(
        self, moment: datetime, anchor: datetime | None = None
    ) -> datetime | None:
        """
        The last tick at or before moment; for an interval, not before its anchor.

        cronsim can iterate backwards, but not through the repeated hour of an
        autumn DST change, so this searches forwards through a window that
        doubles until it holds a tick.
        """
        if self.interval is not None:
            if anchor is None or moment < anchor:
                return None
            step = timedelta(seconds=self.interval)
            return anchor + math.floor((moment - anchor) / step) * step
        lookback = timedelta(minutes=1)
        while lookback <= LOOKBACK_LIMIT:
            latest = None
            for tick in self._cron_ticks(moment - lookback - timedelta(seconds=1)):
                if tick > moment:
                    break
                latest = tick
            if latest is not None:
                return latest
            lookback *= 2
        return None

    def describe(self) -> str:
        """The schedule in words, for the admin and `manage.py schedules`."""
        if self.interval is not None:
            return f"Every {describe_seconds(self.interval)}"
        # Imported here: only the admin and that command describe schedules,
        # and every process that loads the models (a worker too) would
        # otherwise pay for the import at start.
        from cron_descriptor import (
            ExpressionDescriptor,
            FormatError,
            MissingFieldError,
            WrongArgumentError,
        )

        try:
            words = ExpressionDescriptor(
                self.cron, use_24hour_time_format=True, verbose=False
            ).get_description()
        except (FormatError, MissingFieldError, WrongArgumentError, ValueError):
            # cronsim accepts a few forms the descriptor does not know.
            words = self.cron
        return f"{words} ({self.time_zone})"

    def _cron_ticks(self, moment: datetime) -> Iterator[datetime]:
        """
        cronsim's ticks after moment, in UTC, strictly increasing.

        On the autumn DST day cronsim can answer a daily time that already
        passed in the first of the two repeated hours; such a tick is not after
        moment and is dropped.
        """
        last = moment
        for local in CronSim(self.cron, moment.astimezone(zone(self.time_zone))):
            tick = local.astimezone(UTC)
            if tick > last:
                last = tick
                yield tick


def describe_seconds(seconds: int) -> str:
    """90 -> '90 seconds', 3600 -> 'hour', 7200 -> '2 hours'."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return "second" if seconds == 1 else f"{seconds} seconds"


def _whole_second(moment: datetime) -> datetime:
    """moment rounded up to a whole second, in UTC."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment


class ScheduleFields(Protocol):
    """What schedule_errors() reads of a schedule: a jobs.models.Schedule, saved or not."""

    task_path: str
    cron: str
    interval: int | None
    time_zone: str
    queue: str
    priority: int
    args: Any
    kwargs: Any


def schedule_errors(
    schedule: ScheduleFields, backend_alias: str = DEFAULT_TASK_BACKEND_ALIAS
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
