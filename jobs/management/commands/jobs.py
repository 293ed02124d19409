"""
`manage.py jobs`: the queue from the command line. The actions live by
concept in jobs.management.job_actions and jobs.management.queue_actions;
this is their parser and dispatch, and the output they share.
"""

import argparse
import json
import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS

from jobs.management.backends import queue_backend
from jobs.management.base import BaseCommand, deprecation_notice
from jobs.management.job_actions import JobActions
from jobs.management.job_tail import TailAction, add_tail
from jobs.management.limit_actions import LimitActions, add_limit_actions
from jobs.management.queue_actions import QueueActions, add_prune, add_queue_actions
from jobs.models import Job


class Command(JobActions, QueueActions, LimitActions, TailAction, BaseCommand):
    help = (
        "Look at jobs and act on them from the command line: enqueue a task by its path, "
        "show or list jobs, retry or cancel them by id or by filter, prune the finished "
        "ones past their retention, or follow them as they run (tail); list, pause, "
        "resume or purge queues; list limits and change them at runtime. Acting on a "
        "filter asks first (--yes for scripts); --json prints machine-readable output."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backend",
            default=DEFAULT_TASK_BACKEND_ALIAS,
            help="The TASKS backend (default: %(default)s).",
        )
        actions = parser.add_subparsers(dest="action", required=True, metavar="action")
        self.add_job_actions(actions)
        add_tail(actions)
        add_prune(actions)
        queue_actions = add_queue_actions(actions)
        limit_actions = add_limit_actions(actions)
        for subparser in actions.choices.values():
            _add_output_options(subparser)
        # After the queue or limit action too; `jobs queues` alone lists them.
        for subparser in [*queue_actions.choices.values(), *limit_actions.choices.values()]:
            _add_output_options(subparser, json_default=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        # The jobs of this backend, in its database.
        self.jobs = Job.objects.using(queue_backend(options["backend"], "jobs").database)
        self.options = options
        action = options["action"]
        if action == "purge":
            self.stderr.write(deprecation_notice("jobs purge"))
            action = "queues_purge"
        elif action == "queues":
            action = f"queues_{options['queue_action'] or 'list'}"
        elif action == "limits":
            action = f"limits_{options['limit_action'] or 'list'}"
        getattr(self, f"_{action}")(**options)

    def _confirm(self, question: str, yes: bool) -> None:
        if yes:
            return
        if not sys.stdin.isatty():
            raise CommandError(f"{question} Not confirmed: add --yes to run without asking.")
        if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
            raise CommandError("Nothing done.")

    def _print(self, data: Any, line: str) -> None:
        if self.options["json"]:
            self.stdout.write(json.dumps(data, cls=DjangoJSONEncoder, indent=2))
        elif line and self.options["verbosity"] > 0:
            self.stdout.write(line)


def _add_output_options(parser: CommandParser, json_default: Any = False) -> None:
    parser.add_argument("--json", action="store_true", default=json_default, help="Print JSON.")
    # Also after the action, where it is natural to type it.
    parser.add_argument(
        "-v",
        "--verbosity",
        type=int,
        choices=[0, 1, 2, 3],
        default=argparse.SUPPRESS,
        help="0 prints errors and JSON only, 2 each job acted on and tracebacks.",
    )
