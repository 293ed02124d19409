"""
Celery with Redis as its broker and its result backend: one prefork worker of
concurrency 2. Redis is not durable as configured by default, so a crash can
lose jobs that the Postgres queues would keep. Celery has no batch enqueue.

The results backend is how the benchmark sees a job finish: each finished job
is one key in a Redis database of its own, so its size is the count of jobs
done. Nothing of Celery's is in Postgres, so its cost columns stay empty.
"""

import os
import sys

import psycopg
import redis
from celery import Celery

from bench import driver, probe

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
BROKER_URL = f"{REDIS_URL}/14"
RESULTS_URL = f"{REDIS_URL}/15"

app = Celery("bench", broker=BROKER_URL, backend=RESULTS_URL)


@app.task(name="noop")
def noop() -> None:
    probe.noop()


@app.task(name="record_start")
def record_start(n: int) -> None:
    probe.record_start(n)


class CeleryRedis(driver.Queue):
    name = "celery"
    workers = 1

    def prepare(self) -> None:
        self.broker = redis.Redis.from_url(BROKER_URL)
        self.results = redis.Redis.from_url(RESULTS_URL)
        self.enqueued = 0

    def enqueue_one(self) -> None:
        noop.delay()
        self.enqueued += 1

    def enqueue_probe(self, n: int) -> None:
        record_start.delay(n)
        self.enqueued += 1

    def remaining(self, connection: psycopg.Connection) -> int:
        return self.enqueued - self.results.dbsize()

    def reset(self) -> None:
        super().reset()
        self.broker.flushdb()
        self.results.flushdb()
        self.enqueued = 0

    def cost_snapshot(self) -> None:
        return None

    def worker_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "--app=bench.peers.celery",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "--loglevel=WARNING",
        ]


if __name__ == "__main__":
    driver.main(CeleryRedis)
