"""What the queue's management commands share: the backend they serve, their health file."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError
from django.tasks import task_backends
from django.tasks.exceptions import InvalidTaskBackend

from ..backend import PostgresBackend


def queue_backend(alias: str, command: str) -> PostgresBackend:
    """The TASKS backend named alias, or a CommandError saying why it can't serve command."""
    if alias not in settings.TASKS:
        raise CommandError(
            f"No task backend {alias!r} in the TASKS setting; it has "
            f"{', '.join(repr(name) for name in settings.TASKS) or 'none'}."
        )
    try:
        backend = task_backends[alias]
    except InvalidTaskBackend as error:
        raise CommandError(str(error)) from error
    if not isinstance(backend, PostgresBackend):
        raise CommandError(
            f"Backend {alias!r} is {type(backend).__name__}; "
            f"{command} works with jobs.backend.PostgresBackend."
        )
    return backend


def check_health_file(path: str | None) -> None:
    """A CommandError when --health-file names a file in a folder that is not there."""
    if path is not None and not Path(path).parent.is_dir():
        raise CommandError(f"--health-file {path}: the folder {Path(path).parent} does not exist.")
