"""
django-q2 with its ORM broker and default settings: one `qcluster`, whose
worker count defaults to the CPU count (2 here).

A job is a row of django_q_ormq until its result is saved and the row
acknowledged (deleted); there is no batch API.
"""

from bench import driver
from bench.peers.django_peer import DjangoPeer


class DjangoQ2(DjangoPeer):
    name = "django_q2"
    peer = "django_q2"
    remaining_sql = "SELECT count(*) FROM django_q_ormq"
    tables = ("django_q_ormq", "django_q_task")
    workers = 1

    def setup(self) -> None:
        from django_q.tasks import async_task

        self.async_task = async_task

    def enqueue_one(self) -> None:
        self.async_task("bench.probe.noop")

    def enqueue_probe(self, n: int) -> None:
        self.async_task("bench.probe.record_start", n)

    def worker_command(self) -> list[str]:
        return self.django_command("qcluster")


if __name__ == "__main__":
    driver.main(DjangoQ2)
