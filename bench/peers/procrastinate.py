"""
procrastinate: two `procrastinate worker` processes, each with concurrency 10,
on the psycopg connector; `batch_defer` is its batch API.

The app is built at import, from BENCH_DSN, since the worker imports it by path
(bench.peers.procrastinate.app).
"""

import os
import sys

from procrastinate import App, PsycopgConnector

from bench import driver, probe

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_DSN", "")))


@app.task(name="noop")
def noop() -> None:
    probe.noop()


@app.task(name="record_start")
def record_start(n: int) -> None:
    probe.record_start(n)


class Procrastinate(driver.Queue):
    name = "procrastinate"
    remaining_sql = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    tables = ("procrastinate_jobs", "procrastinate_events")
    workers = 2
    has_batch = True

    def prepare(self) -> None:
        app.open()
        exists = self.connection.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0]
        if exists is None:
            app.schema_manager.apply_schema()

    def enqueue_one(self) -> None:
        noop.defer()

    def enqueue_batch(self, count: int) -> None:
        noop.batch_defer(*[{}] * count)

    def enqueue_probe(self, n: int) -> None:
        record_start.defer(n=n)

    def worker_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "procrastinate",
            "--app=bench.peers.procrastinate.app",
            "--log-level=warning",
            "worker",
            "--concurrency=10",
        ]


if __name__ == "__main__":
    driver.main(Procrastinate)
