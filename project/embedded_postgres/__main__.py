"""`python -m project.embedded_postgres start|stop|url`: manage the embedded server."""

import os
import sys

import django

from . import default_pgdata, stop, url


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    # The embedded server is the development database, and these commands read
    # nothing but its directory: they need no production secret key.
    os.environ.setdefault("DJANGO_DEBUG", "1")
    django.setup()
    command = argv[1] if len(argv) > 1 else ""
    data_dir = default_pgdata()
    if command == "start":
        print(f"Embedded Postgres running: {url(data_dir)}")
    elif command == "stop":
        print(
            "Embedded Postgres stopped." if stop(data_dir) else "Embedded Postgres was not running."
        )
    elif command == "url":
        print(url(data_dir))
    else:
        sys.exit("usage: python -m project.embedded_postgres start|stop|url")


main(sys.argv)
