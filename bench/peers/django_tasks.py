"""The benchmark's tasks for django-tasks-db, imported by db_worker by path."""

from django.tasks import task

from bench import probe


@task
def noop() -> None:
    probe.noop()


@task
def record_start(n: int) -> None:
    probe.record_start(n)
