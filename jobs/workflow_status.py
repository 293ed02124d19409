"""
What the jobs of workflows have done: the most recent workflows, for the
dashboard, and one workflow's jobs, for its page in the admin.
"""

from dataclasses import dataclass
from datetime import datetime

from django.db import connections
from django.db.models import QuerySet
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends

from . import queries
from .models import Job

# Workflows the dashboard lists, the most recent first.
RECENT_WORKFLOWS = 10


@dataclass(frozen=True)
class WorkflowStats:
    """A workflow: its jobs, how many succeeded, failed or were cancelled, and run now."""

    id: str
    name: str | None
    total: int
    successful: int
    failed: int
    running: int
    enqueued_at: datetime

    @property
    def finished(self) -> int:
        return self.successful + self.failed

    @property
    def label(self) -> str:
        """Its name if its enqueue gave one, else the start of its id."""
        return self.name or f"workflow {self.id[:8]}"


def recent_workflows(
    using: str | None = None, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> list[WorkflowStats]:
    """The most recent workflows and their progress (see queries.observe.RECENT_WORKFLOWS)."""
    with connections[using or task_backends[backend].database].cursor() as cursor:
        cursor.execute(queries.observe.RECENT_WORKFLOWS, {"limit": RECENT_WORKFLOWS})
        return [WorkflowStats(*row) for row in cursor.fetchall()]


def workflow_jobs(
    workflow_id: str, using: str | None = None, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS
) -> QuerySet:
    """A workflow's jobs in the order they were enqueued, which is the graph's."""
    database = using or task_backends[backend].database
    return Job.objects.using(database).filter(workflow_id=workflow_id).order_by("id")


def workflow_stats(jobs: list[Job]) -> WorkflowStats | None:
    """The counts of a workflow's jobs, as recent_workflows() gives them; None: no job."""
    if not jobs:
        return None
    statuses = [job.status for job in jobs]
    return WorkflowStats(
        str(jobs[0].workflow_id),
        next((job.workflow_name for job in jobs if job.workflow_name), None),
        len(jobs),
        statuses.count("SUCCESSFUL"),
        statuses.count("FAILED") + statuses.count("CANCELLED"),
        statuses.count("RUNNING"),
        min(job.enqueued_at for job in jobs),
    )
