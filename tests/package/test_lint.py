"""
The code stays `ruff` clean, as the project's own settings (pyproject.toml)
define it: checked here so that the README's test command, and CI with it,
refuses what a reviewer would.
"""

import subprocess
import sys

from tests.conftest import BASE_DIR


def ruff(*args: str) -> subprocess.CompletedProcess:
    # --no-cache: a test leaves the checkout as it found it (no .ruff_cache).
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache", "."],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
    )


def test_ruff_finds_nothing_to_fix():
    checked = ruff("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_code_is_formatted_as_ruff_formats_it():
    formatted = ruff("format", "--check")
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
