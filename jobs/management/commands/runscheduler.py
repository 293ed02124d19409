import sys
from datetime import timedelta

from django.core.management.base import CommandError

from jobs.management.backends import check_health_file, queue_backend
from jobs.management.base import BaseCommand
from jobs.management.command_logging import configure_command_logging
from jobs.scheduler.runner import DEFAULT_GRACE, DEFAULT_POLL_INTERVAL, Scheduler


class Command(BaseCommand):
    help = (
        "Run a scheduler: enqueue the job of every due tick of the schedules in jobs_schedule "
        "(created in the admin, or declared in settings.JOBS_SCHEDULES and synced at start). "
        "Run as many as you like, on any hosts: each tick is enqueued exactly once, with the "
        "unique key schedule:<id>:<tick>. Workers (runworker) run the jobs. Started before its "
        "database, or when the database goes away, it waits for it and carries on. SIGTERM or "
        "Ctrl-C stops it after the current pass. `manage.py schedules` lists the schedules."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--backend",
            default="default",
            help="Alias of the TASKS backend to enqueue into (default: 'default').",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=DEFAULT_GRACE.total_seconds(),
            metavar="SECONDS",
            help=(
                "A tick up to this late still runs; older ones were missed while no scheduler "
                "ran and follow the schedule's catch-up policy (default: %(default).0f)."
            ),
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=DEFAULT_POLL_INTERVAL,
            metavar="SECONDS",
            help=(
                "Longest sleep between passes, the safety net should a change not be announced "
                "by NOTIFY (default: %(default).0f)."
            ),
        )

        parser.add_argument(
            "--health-file",
            default=None,
            metavar="PATH",
            help=(
                "Keep PATH rewritten every second while the scheduler's loop runs, saying "
                "whether it holds its database connection: for `manage.py probe PATH` "
                "as a liveness or readiness check (default: none)."
            ),
        )

    def handle(self, *args, **options):
        configure_command_logging(options["verbosity"], sys.stderr)
        check_health_file(options["health_file"])
        backend = queue_backend(options["backend"], "runscheduler")
        if options["grace"] < 0:
            raise CommandError("--grace must be 0 or more seconds.")
        if options["poll_interval"] <= 0:
            raise CommandError("--poll-interval must be more than 0 seconds.")
        Scheduler(
            backend,
            poll_interval=options["poll_interval"],
            grace=timedelta(seconds=options["grace"]),
            health_file=options["health_file"],
        ).run()
