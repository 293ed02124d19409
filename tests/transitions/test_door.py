"""
One door: no module of the queue but jobs.transitions runs a statement that
changes a job's status, or deletes a job, so no path can forget a rule.
"""

import ast
import re
from pathlib import Path

from jobs import queries

JOBS = Path(queries.__file__).parent.parent
DOOR = JOBS / "transitions.py"
FAMILIES = [getattr(queries, name) for name in queries.__all__]

# A statement that writes jobs_job's status, or deletes jobs.
CHANGES_STATUS = re.compile(
    r"UPDATE\s+jobs_job\b(?:(?!\bUPDATE\b).)*?\bSET\b(?:(?!\bWHERE\b).)*?\bstatus\s*="
    r"|DELETE\s+FROM\s+jobs_job\b",
    re.DOTALL | re.IGNORECASE,
)


def status_statements() -> set[str]:
    return {
        name
        for family in FAMILIES
        for name, value in vars(family).items()
        if name.isupper() and isinstance(value, str) and CHANGES_STATUS.search(value)
    }


def test_the_statements_that_change_a_job_are_found():
    found = status_statements()
    for name in ("CLAIM", "LIMITED_CLAIM", "COMPLETE", "RELEASE", "RESCUE", "CANCEL", "RETRY"):
        assert name in found
    assert "DELETE_FINISHED" in found and "ADVANCE_WORKFLOWS" in found


def named(tree: ast.AST) -> list[tuple[int, str]]:
    """The names a module's code uses as attributes or imports (not in comments)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_only_the_door_runs_them():
    """No code outside the door names them (comments and docstrings may)."""
    # With the functions that choose among their variants.
    names = status_statements() | {"claim_statement", "complete_statement", "release_statement"}
    outside = [
        f"{path.relative_to(JOBS.parent)}:{line}: {name}"
        for path in sorted(JOBS.rglob("*.py"))
        if path != DOOR and not {"migrations", "queries"} & set(path.parts)
        for line, name in named(ast.parse(path.read_text()))
        if name in names
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
