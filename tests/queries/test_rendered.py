"""docs/statements.sql is every statement as it runs, kept equal to the code."""

from pathlib import Path

from jobs.queries.rendering import render

RENDERED = Path(__file__).resolve().parents[2] / "docs" / "statements.sql"


def test_the_rendered_statements_are_those_that_run():
    assert RENDERED.read_text() == render(), (
        "docs/statements.sql is out of date: python -m jobs.queries.rendering docs/statements.sql"
    )


def test_every_statement_is_rendered_once():
    names = [line for line in RENDERED.read_text().splitlines() if line.startswith("-- jobs.")]
    assert len(names) == len(set(names))
    for name in ("claim.CLAIM", "limits.LIMITED_CLAIM", "finish.COMPLETE", "finish.CANCEL"):
        assert f"-- jobs.queries.{name}" in names
