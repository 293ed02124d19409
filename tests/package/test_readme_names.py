"""
The tasks the README and the docs name by path are this repository's: a
reader who copies a command or a setting from them gets a task that runs, not
"does not import". The `myapp` examples stand for the reader's own project.
"""

import re

from jobs.backend import find_task
from tests.docs.pages import pages

TASK_PATH = re.compile(r"\b(accounts\.[a-z_]+\.[a-z_]+)\b")


def test_every_task_path_the_docs_name_is_a_task_of_this_repository():
    paths = sorted({path for page in pages() for path in TASK_PATH.findall(page.read_text())})
    assert len(paths) >= 3, paths
    for path in paths:
        assert find_task(path).module_path == path, path
