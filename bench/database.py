"""
The benchmark's databases: one per queue, bench_<name>, made afresh for each
run and dropped after it, on the server of BENCH_DATABASE_URL.
"""

import os
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# The databases are named PREFIX<queue>; the tests use a prefix of their own.
PREFIX = os.environ.get("BENCH_DATABASE_PREFIX", "bench_")


def server_url() -> str:
    """The server the benchmark runs on: BENCH_DATABASE_URL, else the local one."""
    return os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)


def server_info(url: str) -> str:
    """The server's version line, which also checks that it answers."""
    with psycopg.connect(admin_dsn(url), autocommit=True) as connection:
        return connection.execute("SELECT version()").fetchone()[0]


def admin_dsn(url: str) -> str:
    return make_conninfo(url, dbname="postgres")


def dsn_for(url: str, name: str) -> str:
    """A libpq URL of the bench database of a queue (psycopg, Django and asyncpg all take it)."""
    parts = conninfo_to_dict(url)
    user = parts.get("user", "postgres")
    password = f":{quote(parts['password'], safe='')}" if parts.get("password") else ""
    # A socket directory is a path: quoted, it fits in a URL's host.
    host = quote(parts.get("host", "127.0.0.1"), safe="")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{password}@{host}{port}/{PREFIX}{name}"


def recreate(url: str, name: str) -> str:
    """Drop and create bench_<name>; its DSN."""
    drop(url, name)
    with psycopg.connect(admin_dsn(url), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"{PREFIX}{name}")))
    return dsn_for(url, name)


def drop(url: str, name: str) -> None:
    with psycopg.connect(admin_dsn(url), autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(f"{PREFIX}{name}")
            )
        )
