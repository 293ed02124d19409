"""
Waiting for a job to finish without polling.

The worker announces finished jobs on a NOTIFY channel as it writes their
outcomes; a waiter LISTENs first and reads the row second, so an outcome
written in between is never missed.
"""

import time

import psycopg
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, TaskResult, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist

from . import queries
from .models import FINISHED_STATUSES
from .worker.connection import connection_params


def _params(backend_alias: str) -> dict:
    return connection_params(task_backends[backend_alias].database)


def _status(conn: psycopg.Connection, job_id: str) -> str | None:
    row = conn.execute(queries.observe.JOB_STATUS, [job_id]).fetchone()
    return None if row is None else row[0]


def wait(
    job_id: str, timeout: float | None = None, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> TaskResult:
    """
    Block until the job finishes (or `timeout` seconds pass) and return its result.

    Raises TimeoutError when the job is still READY or RUNNING at the deadline,
    and TaskResultDoesNotExist for an unknown id or a job deleted meanwhile (a
    purge of its queue). Every path that ends a job announces it, a cancel
    or a rescue that gives up as well as an outcome: no wait outlives its job.
    """
    result = task_backends[backend].get_result(job_id)
    job_id = result.id
    deadline = None if timeout is None else time.monotonic() + timeout
    with psycopg.connect(**_params(backend), autocommit=True) as conn:
        conn.execute(f"LISTEN {queries.channels.FINISHED_CHANNEL}")
        while (status := _status(conn, job_id)) not in FINISHED_STATUSES:
            if status is None:
                raise TaskResultDoesNotExist(f"Job {job_id} was deleted while waited for.")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"Job {job_id} did not finish within {timeout} s.")
            for notify in conn.notifies(timeout=remaining, stop_after=1):
                if job_id in notify.payload.split(","):
                    break
    return task_backends[backend].get_result(job_id)


async def await_result(
    job_id: str, timeout: float | None = None, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> TaskResult:
    """The async twin of wait(), on an async connection: no thread is held."""
    result = await task_backends[backend].aget_result(job_id)
    job_id = result.id
    deadline = None if timeout is None else time.monotonic() + timeout
    conn = await psycopg.AsyncConnection.connect(**_params(backend), autocommit=True)
    async with conn:
        await conn.execute(f"LISTEN {queries.channels.FINISHED_CHANNEL}")
        while True:
            row = await (await conn.execute(queries.observe.JOB_STATUS, [job_id])).fetchone()
            if row is None:
                raise TaskResultDoesNotExist(f"Job {job_id} was deleted while waited for.")
            if row[0] in FINISHED_STATUSES:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"Job {job_id} did not finish within {timeout} s.")
            async for notify in conn.notifies(timeout=remaining, stop_after=1):
                if job_id in notify.payload.split(","):
                    break
    return await task_backends[backend].aget_result(job_id)
