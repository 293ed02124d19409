"""
One door: no module of the queue but jobs.transitions runs a statement that
changes a job's status, or deletes a job, so no path can forget a rule.
"""

import ast
import re
from pathlib import Path

from jobs import sql

JOBS = Path(sql.__file__).parent
DOOR = JOBS / "transitions.py"

# A statement that writes jobs_job's status, or deletes jobs.
CHANGES_STATUS = re.compile(
    r"UPDATE\s+jobs_job\b(?:(?!\bUPDATE\b).)*?\bSET\b(?:(?!\bWHERE\b).)*?\bstatus\s*="
    r"|DELETE\s+FROM\s+jobs_job\b",
    re.DOTALL | re.IGNORECASE,
)


def status_statements() -> set[str]:
    return {
        name
        for name, value in vars(sql).items()
        if name.isupper() and isinstance(value, str) and CHANGES_STATUS.search(value)
    }


def test_the_statements_that_change_a_job_are_found():
    found = status_statements()
    for name in ("CLAIM", "LIMITED_CLAIM", "COMPLETE", "RELEASE", "RESCUE", "CANCEL", "RETRY"):
        assert name in found
    assert "DELETE_FINISHED" in found and "ADVANCE_WORKFLOWS" in found


def test_only_the_door_runs_them():
    """No code outside the door names them (comments and docstrings may)."""
    names = status_statements()
    outside = [
        f"{path.relative_to(JOBS.parent)}:{node.lineno}: sql.{node.attr}"
        for path in sorted(JOBS.rglob("*.py"))
        if path not in (DOOR, JOBS / "sql.py") and "migrations" not in path.parts
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "sql"
        and node.attr in names
    ]
    assert outside == []


def test_no_module_writes_a_status_or_deletes_jobs_through_the_orm():
    writes = re.compile(r"\.update\([^)]*\bstatus\s*=|\bJob\b[^\n]*\.delete\(")
    outside = [
        str(path.relative_to(JOBS.parent))
        for path in sorted(JOBS.rglob("*.py"))
        if "migrations" not in path.parts and writes.search(path.read_text())
    ]
    assert outside == []
