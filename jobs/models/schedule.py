"""Schedules: tasks enqueued on a cron expression or an interval by runscheduler."""

from datetime import datetime
from itertools import islice

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.utils import timezone

from ..queries.schedules import NOTIFY_SCHEDULERS
from ..schedules import Timing, schedule_errors


def default_time_zone() -> str:
    """New schedules tick in the project's time zone unless they name another."""
    return settings.TIME_ZONE


class CatchUp(models.TextChoices):
    SKIP = "skip", "Skip missed ticks"
    LATEST = "latest", "Run the latest missed tick once"


class Schedule(models.Model):
    """
    A task enqueued on a cron expression, or every so many seconds.

    `runscheduler` claims the rows whose next_run_at has come, enqueues the
    tick's job and moves next_run_at on, all in one transaction, so any number
    of schedulers enqueue exactly one job per tick. Saving a schedule
    recomputes next_run_at when its timing changed and wakes the schedulers.
    """

    # Written by the schedulers only: a save from the admin or the shell never
    # writes them back, so it cannot undo a tick that fired while it was open.
    SCHEDULER_FIELDS = ("next_run_at", "last_run_at")

    name = models.CharField(max_length=200, unique=True)
    task_path = models.CharField(
        "task",
        max_length=255,
        help_text="Dotted path of a @task function, e.g. accounts.reports.send_signup_report.",
    )
    args = models.JSONField(default=list, blank=True, help_text="A JSON list.")
    kwargs = models.JSONField(default=dict, blank=True, help_text="A JSON object.")
    cron = models.CharField(
        max_length=100,
        blank=True,
        help_text=(
            "minute hour day-of-month month day-of-week, e.g. '0 18 * * 1-5' "
            "(six fields: seconds first). Leave empty to use an interval."
        ),
    )
    interval = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds between runs, instead of a cron expression."
    )
    time_zone = models.CharField(
        max_length=64,
        default=default_time_zone,
        help_text="IANA name, e.g. Europe/Berlin: the cron expression is read in this zone.",
    )
    queue = models.CharField(max_length=100, default="default")
    priority = models.SmallIntegerField(default=0, help_text="-100..100, higher first.")
    enabled = models.BooleanField(default=True)
    catch_up = models.CharField(
        max_length=10,
        choices=CatchUp,
        default=CatchUp.LATEST,
        help_text="What to do with ticks missed while no scheduler ran.",
    )
    catch_up_window = models.PositiveIntegerField(
        default=24 * 3600,
        help_text="Seconds: a missed tick older than this never runs.",
    )
    next_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The declaration in settings.JOBS_SCHEDULES last synced into this row
    # (NULL: created in the admin); see jobs.scheduler.declared.
    declared = models.JSONField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "jobs_schedule"
        ordering = ["name"]
        indexes = [
            # The claim and the schedulers' sleep read the enabled rows by next_run_at.
            models.Index(
                "next_run_at", name="jobs_schedule_due_idx", condition=models.Q(enabled=True)
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(cron="", interval__isnull=False)
                    | (~models.Q(cron="") & models.Q(interval__isnull=True))
                ),
                name="jobs_schedule_cron_or_interval",
                violation_error_message="Give a cron expression or an interval, not both.",
            ),
            models.CheckConstraint(
                condition=models.Q(priority__gte=-100, priority__lte=100),
                name="jobs_schedule_priority_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        """
        Save, moving next_run_at when the timing changed, and wake the schedulers.

        An enabled schedule is validated first, by the rules of the admin form
        (clean()): one that the scheduler could not run (a task path that does
        not import, an unknown queue, args that are not a list) is refused with
        a ValidationError naming the field, and nothing is saved. A disabled
        one is saved as it is, so that a broken schedule can always be turned
        off, and a declaration removed from code with its task disabled.

        A new, re-enabled or re-timed schedule starts from its first tick after
        now: the time it spent disabled or on another expression is not caught up.
        """
        if self.enabled:
            self.clean()
        rescheduled = getattr(self, "_loaded_timing", None) != self._timing_state()
        if rescheduled:
            self.next_run_at = self.timing().next_after(timezone.now()) if self.enabled else None
        update_fields = kwargs.get("update_fields")
        if update_fields is None and not self._state.adding:
            kept = {"last_run_at"} if rescheduled else set(self.SCHEDULER_FIELDS)
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name not in kept
            ]
        elif update_fields is not None and rescheduled:
            kwargs["update_fields"] = {*update_fields, "next_run_at"}
        super().save(*args, **kwargs)
        self._loaded_timing = self._timing_state()
        notify_schedulers(kwargs.get("using") or self._state.db)

    def delete(self, *args, **kwargs):
        result = super().delete(*args, **kwargs)
        notify_schedulers(kwargs.get("using") or self._state.db)
        return result

    @classmethod
    def from_db(cls, db, field_names, values, **kwargs):
        instance = super().from_db(db, field_names, values, **kwargs)
        instance._loaded_timing = instance._timing_state()
        return instance

    def timing(self) -> Timing:
        """The schedule's Timing; TimingError if it is invalid."""
        return Timing(cron=self.cron, interval=self.interval, time_zone=self.time_zone)

    def next_runs(self, count: int) -> list[datetime]:
        """
        The next `count` runs, from next_run_at on, as the admin and `manage.py
        schedules` list them: none while the schedule is disabled or never due
        again. TimingError if its timing is invalid.
        """
        first = self.next_run_at
        if not self.enabled or first is None or count < 1:
            return []
        return [first, *islice(self.timing().ticks_after(first, first), count - 1)]

    def clean(self) -> None:
        """Refuse what the scheduler could not run, each problem under its field."""
        errors = schedule_errors(self)
        if errors:
            raise ValidationError(errors)

    def _timing_state(self) -> tuple:
        return (self.cron, self.interval, self.time_zone, self.enabled)


def notify_schedulers(using: str | None) -> None:
    """Wake every runscheduler when this transaction commits (NOTIFY is transactional)."""
    with connections[using or DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(NOTIFY_SCHEDULERS)
