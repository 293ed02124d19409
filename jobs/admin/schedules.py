"""
Schedules in the admin.

The form validates through Schedule.clean(), the same rules as the system
check of code-declared schedules: a bad cron expression, a task path that does
not import, an unknown time zone or queue is refused with a message that says
what would be right, and nothing is saved. Every save goes through
Schedule.save(), which refuses an enabled schedule that breaks those rules (the
enable action reports each schedule it could not enable), recomputes
next_run_at when the timing changed and wakes the schedulers, so a disabled
schedule stops at once and an edited one fires on its new expression.
"""

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html_join

from ..models import Schedule
from ..schedules import TimingError, zone

NEXT_RUNS = 5


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "task_path",
        "when",
        "queue",
        "enabled",
        "next_run",
        "last_run_at",
        "origin",
    ]
    list_filter = ["enabled", "queue", "catch_up"]
    search_fields = ["name", "task_path"]
    readonly_fields = ["when", "next_runs", "last_run_at", "origin"]
    actions = ["enable", "disable"]
    fieldsets = [
        (None, {"fields": ["name", "task_path", "args", "kwargs"]}),
        (
            "When",
            {
                "fields": ["cron", "interval", "time_zone", "when", "next_runs"],
                "description": "A cron expression or an interval in seconds, not both.",
            },
        ),
        (
            "How",
            {"fields": ["queue", "priority", "enabled", "catch_up", "catch_up_window"]},
        ),
        ("History", {"fields": ["last_run_at", "origin"]}),
    ]

    @admin.display(description="when")
    def when(self, schedule: Schedule) -> str:
        if not schedule.pk:
            return "-"
        try:
            return schedule.timing().describe()
        except TimingError as error:
            return f"Invalid: {error}"

    @admin.display(description="next run", ordering="next_run_at")
    def next_run(self, schedule: Schedule) -> str:
        if not schedule.enabled or schedule.next_run_at is None:
            return "-"
        return _local(schedule.next_run_at, schedule.time_zone)

    @admin.display(description=f"next {NEXT_RUNS} runs")
    def next_runs(self, schedule: Schedule):
        try:
            runs = schedule.next_runs(NEXT_RUNS)
        except TimingError:
            return "-"
        if not runs:
            return "-"
        return format_html_join(
            "", "<div>{}</div>", ((_local(run, schedule.time_zone),) for run in runs)
        )

    @admin.display(description="declared in")
    def origin(self, schedule: Schedule) -> str:
        if schedule.declared is not None:
            return "code (settings.JOBS_SCHEDULES)"
        return "admin"

    @admin.action(description="Enable the selected schedules", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable the selected schedules", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet, enabled: bool) -> None:
        # One save() each, not queryset.update(): next_run_at is recomputed and
        # the schedulers are woken.
        changed = 0
        for schedule in queryset.filter(enabled=not enabled):
            schedule.enabled = enabled
            try:
                schedule.save()
            except ValidationError as error:
                # Only enabling validates: a schedule that cannot run stays off.
                problems = "; ".join(
                    f"{field}: {' '.join(texts)}" for field, texts in error.message_dict.items()
                )
                self.message_user(
                    request, f"Schedule {schedule.name!r} not enabled: {problems}", messages.ERROR
                )
                continue
            self.log_change(request, schedule, "Enabled" if enabled else "Disabled")
            changed += 1
        state = "enabled" if enabled else "disabled"
        self.message_user(request, f"{changed} schedule(s) {state}.", messages.SUCCESS)


def _local(moment, time_zone: str) -> str:
    try:
        tz = zone(time_zone)
    except TimingError:
        tz = timezone.get_current_timezone()
    return f"{moment.astimezone(tz):%a %Y-%m-%d %H:%M:%S %Z}"
