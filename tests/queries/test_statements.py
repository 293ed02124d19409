"""
Every statement of every family is one Postgres accepts: each is prepared
(parsed and analysed, its parameters' types inferred) on the server the
suite runs on. CI runs this module on Postgres 18 and on 15, where a
function, a syntax or a cast of one version and not the other would fail.
"""

import re
from collections.abc import Iterator

import pytest
from django.db import connection

from jobs.queries.rendering import render

# Parts of other statements, not statements: RawSQL subqueries of the admin.
FRAGMENTS = {"observe.RUNNING_JOBS_OF_WORKER"}


def statements() -> Iterator[tuple[str, str]]:
    """(family.NAME, SQL) of each whole statement as it runs."""
    for block in render().split("\n-- jobs.queries.")[1:]:
        name, _, body = block.partition("\n")
        body = body.strip().removesuffix(";")
        template = re.search(r"\{[a-z_]+\}", body)
        whole = re.match(r"(WITH|SELECT|INSERT|UPDATE|DELETE)\b", body) and not template
        if whole and name not in FRAGMENTS:
            yield name, body


def numbered(statement: str) -> str:
    """psycopg's %(name)s and %s placeholders as $1, $2...: the same name, the same number."""
    names: dict[str, int] = {}
    statement = re.sub(
        r"%\((\w+)\)s", lambda m: f"${names.setdefault(m.group(1), len(names) + 1)}", statement
    )
    count = iter(range(len(names) + 1, 1000))
    return re.sub(r"%s", lambda _: f"${next(count)}", statement).replace("%%", "%")


def test_the_statements_are_found():
    names = [name for name, _ in statements()]
    assert len(names) > 50
    for name in ("claim.CLAIM", "limits.LIMITED_CLAIM", "finish.COMPLETE", "enqueue.ENQUEUE"):
        assert name in names


@pytest.mark.django_db
@pytest.mark.parametrize("name", [name for name, _ in statements()])
def test_postgres_prepares_the_statement(name):
    statement = dict(statements())[name]
    with connection.cursor() as cursor:
        cursor.execute(f"PREPARE checked AS {numbered(statement)}")
        cursor.execute("DEALLOCATE checked")
