#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys

# Checked before anything imports Django, so an old Python fails with a clear message.
if sys.version_info < (3, 12):  # noqa: UP036
    sys.exit(
        f"This project needs Python 3.12 or newer; this is Python "
        f"{sys.version.split()[0]} ({sys.executable}). "
        "Run ./scripts/run.sh or ./scripts/test.sh, which find a suitable Python."
    )


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
