"""
What every command of the jobs app shares: its --help ends with the app's
other commands, and a command kept under an old name says which one replaced it.
"""

from pathlib import Path
from typing import Any

from django.core.management import base, find_commands

# Old names kept so that scripts go on working, and the command that does
# their work now.
DEPRECATED = {
    "queues": "jobs queues",
    "prunejobs": "jobs prune",
    "jobs purge": "jobs queues purge",
}


def app_commands() -> list[str]:
    """The app's commands, the deprecated names left out."""
    found = find_commands(str(Path(__file__).parent))
    return sorted(name for name in found if name not in DEPRECATED)


class BaseCommand(base.BaseCommand):
    """
    A command of the jobs app: Django's, whose --help ends with a line naming
    the app's other commands, since `manage.py help` lists them among every
    app's.
    """

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> base.CommandParser:
        others = ", ".join(name for name in app_commands() if name != subcommand)
        kwargs.setdefault("epilog", f"Other commands of this app: {others}.")
        return super().create_parser(prog_name, subcommand, **kwargs)


def deprecation_notice(name: str) -> str:
    """The line a command kept under an old name writes to stderr before it does its work."""
    return (
        f"`manage.py {name}` is deprecated: use "
        f"`manage.py {DEPRECATED[name]}`, which does the same."
    )
