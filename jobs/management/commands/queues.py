from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS

from jobs.management.base import deprecation_notice
from jobs.management.commands import jobs


class Command(jobs.Command):
    help = (
        "Deprecated: use `manage.py jobs queues`, which does the same. List the queues "
        "(the default), or pause or resume queues for every worker at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "action",
            nargs="?",
            choices=["list", "pause", "resume"],
            default="list",
            help="list (the default), pause or resume.",
        )
        parser.add_argument("queues", nargs="*", metavar="queue", help="The queues to act on.")
        parser.add_argument(
            "--backend",
            default=DEFAULT_TASK_BACKEND_ALIAS,
            help="The TASKS backend whose queues these are (default: %(default)s).",
        )
        parser.add_argument(
            "--by",
            default=None,
            help="Who pauses, shown beside the pause (default: this system user).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stderr.write(deprecation_notice("queues"))
        action, names = options["action"], options["queues"]
        if action == "list" and names:
            raise CommandError("list takes no queue names; it lists every queue.")
        if action != "list" and not names:
            raise CommandError(f"Name the queue(s) to {action}.")
        super().handle(**{**options, "action": "queues", "queue_action": action, "json": False})
