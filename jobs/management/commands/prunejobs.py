from typing import Any

from django.core.management.base import CommandParser
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS

from jobs import operations
from jobs.management.base import deprecation_notice
from jobs.management.commands import jobs


class Command(jobs.Command):
    help = (
        "Deprecated: use `manage.py jobs prune`, which does the same. Delete finished jobs "
        "past their retention, and the rows of limit keys that hold nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )
        parser.add_argument(
            "--backend",
            default=DEFAULT_TASK_BACKEND_ALIAS,
            help="TASKS alias (default: %(default)s).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=operations.PRUNE_BATCH,
            help="Jobs per DELETE (default: %(default)s).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stderr.write(deprecation_notice("prunejobs"))
        super().handle(**{**options, "action": "prune", "json": False})
