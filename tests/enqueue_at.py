"""
`python -m tests.enqueue_at DIRECTORY MODE`: once set up, leave a file in
DIRECTORY saying so, wait for DIRECTORY/go, then enqueue tests.tasks.add with
the unique key "at-once" and print the job's id: for tests that have several
processes enqueue one key at once. MODE: "for" (unique_for), "states"
(unique_states) or "replace".
"""

import os
import sys
import time
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from django.db import connection  # noqa: E402

from tests.tasks import add  # noqa: E402

OPTIONS = {
    "for": {"unique_for": 3600},
    "states": {"unique_states": ["READY", "RUNNING", "SUCCESSFUL"]},
    "replace": {"replace": True},
}

if __name__ == "__main__":
    directory, mode = Path(sys.argv[1]), sys.argv[2]
    task = add.using(unique_key="at-once", countdown=600, **OPTIONS[mode])
    # Connected before the start, so that the enqueues race each other, not
    # each other's connection set-up.
    connection.ensure_connection()
    (directory / f"ready-{os.getpid()}").touch()
    while not (directory / "go").exists():
        time.sleep(0.001)
    print(task.enqueue(os.getpid(), 0).id)
