"""
PGQueuer: two worker processes with the default batch of 10, on the asyncpg
driver its documentation starts with; the driver enqueues with its
synchronous API, whose list form is the batch API.

The workers are started with `pgqueuer.run()`, what `pgq run` calls: the CLI
of 1.6.0 fails at start with the typer release pip installs beside it (its
--log-level option hands a str where an enum is expected).

A job is a row of pgqueuer until it is done, then a line of pgqueuer_log.
"""

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import psycopg
from pgqueuer import AsyncpgDriver, Job, PgQueuer, run
from pgqueuer.adapters.drivers.psycopg import SyncPsycopgDriver
from pgqueuer.queries import SyncQueries

from bench import driver, probe


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    """The worker's factory, as `pgq run bench.peers.pgqueuer:create` would take it."""
    connection = await asyncpg.connect(os.environ["BENCH_DSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        probe.noop()

    @pgq.entrypoint("record_start")
    async def record_start(job: Job) -> None:
        probe.record_start(int(job.payload))

    try:
        yield pgq
    finally:
        await connection.close()


class PGQueuer(driver.Queue):
    name = "pgqueuer"
    remaining_sql = "SELECT count(*) FROM pgqueuer"
    tables = ("pgqueuer", "pgqueuer_log", "pgqueuer_statistics")
    workers = 2
    has_batch = True

    def prepare(self) -> None:
        exists = self.connection.execute("SELECT to_regclass('pgqueuer')").fetchone()[0]
        if exists is None:
            driver.run_checked(
                [sys.executable, "-m", "pgqueuer", "install"], env={"PGDSN": self.options.dsn}
            )
        self.queries = SyncQueries(
            SyncPsycopgDriver(psycopg.connect(self.options.dsn, autocommit=True))
        )

    def enqueue_one(self) -> None:
        self.queries.enqueue("noop", None)

    def enqueue_batch(self, count: int) -> None:
        self.queries.enqueue(["noop"] * count, [None] * count, [0] * count)

    def enqueue_probe(self, n: int) -> None:
        self.queries.enqueue("record_start", str(n).encode())

    def worker_command(self) -> list[str]:
        return [sys.executable, "-m", "bench.peers.pgqueuer", "worker"]


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        asyncio.run(run(create, batch_size=10))
    else:
        driver.main(PGQueuer)
