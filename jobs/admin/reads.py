"""
What the admin's pages read beyond a model's rows: the planner's estimate of
a list, recent filter choices, a worker's jobs, a workflow's counts.

Each read is bounded by an index (the primary key's end, a partial index of
RUNNING jobs, a workflow's jobs), so that a page costs the same on a table of
millions of rows; the statements are in jobs/queries/observe.py.
"""

import json

from django.db import connections
from django.db.models import Count, QuerySet
from django.db.models.expressions import RawSQL

from .. import queries
from ..models import Job, JobStatus, Worker


def planner_estimate(queryset: QuerySet) -> int:
    """The rows the planner expects the queryset to return: free, and never a count."""
    query, params = queryset.order_by().values("pk").query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(queries.observe.PLAN.format(query=query), params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def recent_values(statement: str, sample_size: int) -> set[str]:
    """The values a statement finds among the most recent `sample_size` jobs."""
    with connections[Job.objects.db].cursor() as cursor:
        cursor.execute(statement, [sample_size])
        return {value for (value,) in cursor.fetchall()}


def with_jobs_in_flight(workers: QuerySet) -> QuerySet:
    """The workers, each with `running`: its RUNNING jobs."""
    return workers.annotate(running=RawSQL(queries.observe.RUNNING_JOBS_OF_WORKER, ()))


def running_jobs_of(worker: Worker, limit: int) -> QuerySet:
    """The RUNNING jobs whose latest attempt is the worker's, longest running first."""
    return (
        Job.objects.filter(status=JobStatus.RUNNING)
        .annotate(current_worker=RawSQL("worker_ids[cardinality(worker_ids)]", ()))
        .filter(current_worker=worker.id)
        .order_by("last_attempted_at")
        .only("id", "task_path", "last_attempted_at", "attempts")[:limit]
    )


def workflow_counts(job: Job) -> dict[str, int]:
    """The jobs of the job's workflow, by status (read through jobs_job_workflow_idx)."""
    return dict(
        Job.objects.using(job._state.db)
        .filter(workflow_id=job.workflow_id)
        .values_list("status")
        .annotate(count=Count("id"))
        .values_list("status", "count")
    )
