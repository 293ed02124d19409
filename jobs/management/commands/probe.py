from django.core.management.base import CommandError

from jobs.health import probe
from jobs.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Check the health file of a runworker or runscheduler started with --health-file "
        "PATH: exit 0 when its loop rewrote the file within --max-age seconds (and, with "
        "--ready, holds its database connection), else 1 with the reason. For a Kubernetes "
        "livenessProbe (without --ready) or readinessProbe (with it)."
    )

    # A probe runs every few seconds: the checks are the worker's to run.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("path", help="The file given to --health-file.")
        parser.add_argument(
            "--max-age",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="How old the file may be (default: %(default).0f; it is rewritten every second).",
        )
        parser.add_argument(
            "--ready",
            action="store_true",
            help="Also require the process to hold its database connection.",
        )

    def handle(self, *args, **options):
        if options["max_age"] <= 0:
            raise CommandError("--max-age must be more than 0 seconds.")
        problem = probe(options["path"], max_age=options["max_age"], ready=options["ready"])
        if problem:
            raise CommandError(f"Unhealthy: {problem}.")
        if options["verbosity"] > 0:
            self.stdout.write("Healthy" + (" and ready." if options["ready"] else "."))
