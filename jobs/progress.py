"""
Progress a running job reports: a number and a short message, which the
admin's job page shows beside its status, and your own code reads with
get_progress() (a status page's poll, say).

    @task(takes_context=True)
    def import_rows(context, upload_id):
        rows = load(upload_id)
        for done, row in enumerate(rows, 1):
            store(row)
            if done % 100 == 0:
                report_progress(context, done / len(rows), f"{done} of {len(rows)} rows")

    progress = get_progress(result)  # the TaskResult enqueue() gave, or its id
    if progress is not None:
        print(f"{progress.value:.0%}", progress.message)

The value is any finite number (a fraction, a count); the message at most
200 characters. Each report is one UPDATE of the job's row, so report every
so often, not for every item.
"""

import math
import uuid
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import connections
from django.db.models import QuerySet
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, TaskResult, task_backends
from django.tasks.base import TaskContext
from django.tasks.exceptions import TaskResultDoesNotExist

from . import queries
from .calls import dumps
from .jsonb import unstorable
from .models import Job

MESSAGE_LENGTH = Job._meta.get_field("progress_message").max_length


@dataclass(frozen=True)
class Progress:
    """The last report of a job: its value (None: none yet) and its message."""

    value: float | None
    message: str


def report_progress(context: TaskContext, value: float, message: str = "") -> bool:
    """
    Record how far this attempt got. False when the attempt is no longer the
    job's (cancelled, or given up for lost and run again): its report is
    not written, as its outcome would not be.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"Progress is a finite number, not {value!r}.")
    if not isinstance(message, str):
        raise ValueError(f"A progress message is a string, not {type(message).__name__}.")
    if reason := unstorable(dumps(message)):
        raise ValueError(f"A progress message holds {reason}, which Postgres cannot store.")
    result = context.task_result
    database = task_backends[result.backend].database
    with connections[database].cursor() as cursor:
        cursor.execute(
            queries.workflows.REPORT_PROGRESS,
            {
                "id": result.id,
                "attempt": context.attempt,
                "value": float(value),
                "message": message[:MESSAGE_LENGTH],
            },
        )
        return cursor.fetchone() is not None


async def areport_progress(context: TaskContext, value: float, message: str = "") -> bool:
    """
    report_progress() for an async task: the write runs off the event loop, in
    the one thread (and database connection) that Django's sync_to_async
    gives the process's sync work.
    """
    return await sync_to_async(report_progress)(context, value, message)


def progress_of(job: Job) -> Progress | None:
    """A job's last report, or None when it made none."""
    if job.progress is None and not job.progress_message:
        return None
    return Progress(job.progress, job.progress_message)


def get_progress(
    task_result: TaskResult | str, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> Progress | None:
    """
    The last progress a job reported (None: none yet), read fresh from its
    row: a TaskResult of this queue, or a task id on `backend`. Raises
    TaskResultDoesNotExist, as get_result() does, for an id that names no job.
    """
    task_id, row = _progress_row(task_result, backend)
    return _progress(row.first(), task_id)


async def aget_progress(
    task_result: TaskResult | str, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> Progress | None:
    """get_progress() for async code, on Django's async ORM."""
    task_id, row = _progress_row(task_result, backend)
    return _progress(await row.afirst(), task_id)


def _progress_row(task_result: TaskResult | str, backend: str) -> tuple[str, QuerySet]:
    """The job's id, and the read of its progress on its backend's database."""
    if isinstance(task_result, TaskResult):
        task_id, backend = task_result.id, task_result.backend
    else:
        task_id = task_result
    try:
        job_id = uuid.UUID(str(task_id))
    except ValueError:
        raise TaskResultDoesNotExist(f"{task_id!r} is not a task id.") from None
    jobs = Job.objects.using(task_backends[backend].database)
    return str(task_id), jobs.filter(id=job_id).values_list("progress", "progress_message")


def _progress(row: tuple | None, task_id: str) -> Progress | None:
    if row is None:
        raise TaskResultDoesNotExist(f"No task with id {task_id}.")
    value, message = row
    return None if value is None and not message else Progress(value, message)
