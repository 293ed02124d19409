"""
The tasks the README names by path are this repository's: a reader who copies
a command or a setting from it gets a task that runs, not "does not import".
The `myapp` examples stand for the reader's own project.
"""

import re

from jobs.backend import find_task
from tests.conftest import BASE_DIR

TASK_PATH = re.compile(r"\b(accounts\.[a-z_]+\.[a-z_]+)\b")


def test_every_task_path_the_readme_names_is_a_task_of_this_repository():
    readme = (BASE_DIR / "README.md").read_text()
    paths = sorted(set(TASK_PATH.findall(readme)))
    assert len(paths) >= 3, paths
    for path in paths:
        assert find_task(path).module_path == path
