"""
Sphinx configuration of the queue's documentation.

Built by `./scripts/docs.sh` (and by a test, with warnings as errors). The
pages are Markdown (MyST); the reference of the management commands is
rendered from their own parsers at build time, so it cannot drift from
`--help`.
"""

import sys
from pathlib import Path

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent / "_ext")]

# Enough of a project for the commands to build their parsers; nothing
# connects to a database while the docs build.
settings.configure(
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django.contrib.postgres",
        "jobs",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "docs"}},
    TASKS={"default": {"BACKEND": "jobs.backend.PostgresBackend"}},
    USE_TZ=True,
)
django.setup()

project = "django-pgjobs"
author = "The django-pgjobs authors"
copyright = "2026, the django-pgjobs authors"

extensions = ["myst_parser", "command_help", "metrics_table"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "screenshots", "statements.sql"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = "django-pgjobs"
