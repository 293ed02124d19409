"""
django-tasks-db: Django's own Tasks API on its database backend, two
`db_worker` processes with their default options. Django's Tasks API has no
batch enqueue.
"""

from bench import driver
from bench.peers.django_peer import DjangoPeer


class DjangoTasksDB(DjangoPeer):
    name = "django_tasks_db"
    peer = "django_tasks_db"
    remaining_sql = (
        "SELECT count(*) FROM django_tasks_database_dbtaskresult "
        "WHERE status IN ('READY', 'RUNNING')"
    )
    tables = ("django_tasks_database_dbtaskresult",)
    workers = 2

    def setup(self) -> None:
        from bench.peers import django_tasks

        self.tasks = django_tasks

    def enqueue_one(self) -> None:
        self.tasks.noop.enqueue()

    def enqueue_probe(self, n: int) -> None:
        self.tasks.record_start.enqueue(n)

    def worker_command(self) -> list[str]:
        return self.django_command("db_worker")


if __name__ == "__main__":
    driver.main(DjangoTasksDB)
