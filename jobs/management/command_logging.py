"""
Where runworker and runscheduler print their lines: to stderr, like any
management command, whether or not the project has a LOGGING setting.
"""

import logging
import os
from typing import TextIO

from django.conf import settings

# -v 0 keeps warnings and errors, 1 (the default) adds a line per job and per
# tick, 2 and 3 add the queue's debug lines and Django's own per-task lines.
VERBOSITY_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_command_logging(verbosity: int, stream: TextIO) -> None:
    """
    Set the `jobs` logger's level from -v (or JOBS_LOG_LEVEL, setting or
    environment variable, which wins), and give it a handler on `stream`
    unless LOGGING already routes it somewhere (a handler of its own or of
    an ancestor, the root's included).

    Django's `django.tasks` logger says the same as the worker's per-job
    line, twice per job; below -v 2 it keeps to warnings and errors unless
    LOGGING set its level.
    """
    level = (
        os.environ.get("JOBS_LOG_LEVEL")
        or getattr(settings, "JOBS_LOG_LEVEL", None)
        or VERBOSITY_LEVELS.get(verbosity, logging.DEBUG)
    )
    logger = logging.getLogger("jobs")
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    if not logger.hasHandlers():
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(LINE_FORMAT))
        logger.addHandler(handler)
    django_tasks = logging.getLogger("django.tasks")
    if verbosity < 2 and django_tasks.level == logging.NOTSET:
        django_tasks.setLevel(logging.WARNING)
