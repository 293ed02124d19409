"""
The queues the benchmark compares this one with.

Each peer runs from a virtualenv of its own under bench/.peers/, so that its
dependencies never meet the project's: Celery and django-q2 pin things of their
own, and the two Django peers need a Django of their own. Each is set up the way
its documentation sets it up, with the defaults a user would keep, and the
driver in this folder (bench/peers/<name>.py, run as `python -m
bench.peers.<name>` by that virtualenv's Python) puts it through the phases.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Peer:
    """A queue to compare with: what to install, and how it is set up."""

    name: str
    # The name and version a reader recognises, shown in the table.
    title: str
    # What goes into its virtualenv, pinned: the peer and what the driver needs.
    requirements: tuple[str, ...]
    # How its workers run: the defaults its documentation suggests for 2 cores.
    setup: str
    # A server it needs besides Postgres ("redis"), or None.
    needs: str | None = None
    # Python the peer's virtualenv is made with.
    python: str = "3.12"


DJANGO = "Django==6.1.3"
PSYCOPG = "psycopg[binary]==3.3.9"

PEERS = {
    peer.name: peer
    for peer in (
        Peer(
            name="django_q2",
            title="django-q2 1.11.1",
            requirements=("django-q2==1.11.1", DJANGO, PSYCOPG),
            setup="ORM broker, defaults (2 workers)",
        ),
        Peer(
            name="django_tasks_db",
            title="django-tasks-db 0.13.0",
            requirements=("django-tasks-db==0.13.0", DJANGO, PSYCOPG),
            setup="2 db_worker processes",
        ),
        Peer(
            name="procrastinate",
            title="procrastinate 3.10.0",
            requirements=("procrastinate==3.10.0", PSYCOPG),
            setup="2 workers, concurrency 10 each",
        ),
        Peer(
            name="pgqueuer",
            title="PGQueuer 1.6.0",
            requirements=("pgqueuer==1.6.0", "asyncpg==0.32.0", PSYCOPG),
            setup="2 processes, batch 10",
        ),
        Peer(
            name="celery",
            title="Celery 5.7.0 + Redis",
            requirements=("celery[redis]==5.7.0", PSYCOPG),
            setup="prefork 2, Redis broker and results (not durable)",
            needs="redis",
        ),
    )
}
