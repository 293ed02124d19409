from datetime import UTC

from django.core.management.base import CommandError
from django.utils import timezone

from jobs.management.base import BaseCommand
from jobs.models import CatchUp, Schedule
from jobs.scheduler.declared import sync_declared
from jobs.schedules import TimingError, zone


class Command(BaseCommand):
    help = (
        "List the periodic schedules: each one's timing in words and its next runs. "
        "--sync first brings the schedules declared in settings.JOBS_SCHEDULES into the "
        "table, as runscheduler does at start."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--runs", type=int, default=5, help="How many next runs to show (default: 5)."
        )
        parser.add_argument(
            "--sync",
            action="store_true",
            help="Sync the schedules declared in settings.JOBS_SCHEDULES first.",
        )

    def handle(self, *args, **options):
        if options["runs"] < 0:
            raise CommandError("--runs must be 0 or more.")
        if options["sync"]:
            report = sync_declared()
            self.stdout.write(
                f"Synced JOBS_SCHEDULES: {len(report.created)} created, "
                f"{len(report.updated)} updated, {len(report.disabled)} disabled.\n"
            )
            for name, problems in report.refused.items():
                self.stderr.write(f"Not synced, {name!r} stays as it was: {problems}\n")
        schedules = list(Schedule.objects.all())
        if not schedules:
            self.stdout.write(
                "No schedules. Declare them in settings.JOBS_SCHEDULES (runscheduler or "
                "`schedules --sync` brings them in) or add them in the admin."
            )
            return
        now = timezone.now()
        for schedule in schedules:
            self._show(schedule, now, options["runs"])

    def _show(self, schedule: Schedule, now, runs: int) -> None:
        origin = "code" if schedule.declared is not None else "admin"
        state = "enabled" if schedule.enabled else "DISABLED"
        self.stdout.write(self.style.MIGRATE_HEADING(f"{schedule.name}"))
        self.stdout.write(
            f"  task      {schedule.task_path}  (queue {schedule.queue}, {state}, from {origin})"
        )
        try:
            timing = schedule.timing()
        except TimingError as error:
            self.stdout.write(self.style.ERROR(f"  invalid   {error}"))
            return
        expression = schedule.cron or f"every {schedule.interval} s"
        self.stdout.write(f"  when      {expression}: {timing.describe()}")
        if schedule.catch_up == CatchUp.SKIP:
            catch_up = "skip (ticks missed while no scheduler ran never run)"
        else:
            catch_up = (
                "latest (after an outage, the latest missed tick runs once if under "
                f"{schedule.catch_up_window} s old)"
            )
        self.stdout.write(f"  catch-up  {catch_up}")
        if schedule.last_run_at:
            self.stdout.write(f"  last run  {self._at(schedule.last_run_at, schedule.time_zone)}")
        if not schedule.enabled or runs == 0:
            return
        first = schedule.next_run_at
        if first is None:
            self.stdout.write("  next      never")
            return
        label = "next" if first > now else "next (due)"
        for tick in schedule.next_runs(runs):
            self.stdout.write(f"  {label:<9} {self._at(tick, schedule.time_zone)}")
            label = ""

    def _at(self, moment, time_zone: str) -> str:
        local = moment.astimezone(zone(time_zone))
        return f"{local:%a %Y-%m-%d %H:%M:%S %Z}  ({moment.astimezone(UTC):%H:%M:%S} UTC)"
