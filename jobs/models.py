"""
The queue's tables.

The worker reads and writes them with the hand-written SQL of jobs/sql.py; the
models are for migrations, the admin and everything that is not the hot path.
"""

from django.contrib.postgres.fields import ArrayField
from django.db import models


class JobStatus(models.TextChoices):
    READY = "READY", "Ready"
    RUNNING = "RUNNING", "Running"
    SUCCESSFUL = "SUCCESSFUL", "Successful"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


FINISHED_STATUSES = (JobStatus.SUCCESSFUL, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(models.Model):
    """
    One enqueued call of a task; its primary key is the task id.

    Ids are UUIDv7 (time-ordered), so inserts stay at the right edge of the
    primary key index however large the table grows.
    """

    id = models.UUIDField(primary_key=True)
    backend = models.CharField(max_length=100, default="default")
    task_path = models.CharField(max_length=255)
    queue = models.CharField(max_length=100, default="default")
    priority = models.SmallIntegerField(default=0)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=JobStatus, default=JobStatus.READY)
    run_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    timeout = models.DurationField(null=True, blank=True)
    enqueued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_ids = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    return_value = models.JSONField(null=True, blank=True)
    errors = models.JSONField(default=list, blank=True)
    # NULL, not '', means no key: the partial unique index ignores NULLs.
    unique_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001

    class Meta:
        db_table = "jobs_job"
        ordering = ["-id"]
        # Each operation in the admin is granted on its own: an operator may
        # be allowed to retry failed jobs without being allowed to cancel.
        permissions = [
            ("retry_job", "Can retry a failed or cancelled job"),
            ("cancel_job", "Can cancel a ready or running job"),
            ("run_job_now", "Can run a scheduled job now"),
        ]
        indexes = [
            # The claim reads only READY rows: this index stays as small as the
            # backlog, however much history the table keeps.
            models.Index(
                "queue",
                models.F("priority").desc(),
                "run_at",
                "id",
                name="jobs_job_claim_idx",
                condition=models.Q(status="READY"),
            ),
            # When the next scheduled job of a queue is due.
            models.Index(
                "queue",
                "run_at",
                name="jobs_job_next_due_idx",
                condition=models.Q(status="READY"),
            ),
            # Rescue and shutdown look at the RUNNING jobs of one worker.
            models.Index(
                "id",
                name="jobs_job_running_idx",
                condition=models.Q(status="RUNNING"),
            ),
            # Retention and the admin's time filters on finished jobs.
            models.Index(
                "status",
                "finished_at",
                name="jobs_job_finished_idx",
                condition=models.Q(status__in=FINISHED_STATUSES),
            ),
        ]
        constraints = [
            # At most one live job per unique key: enqueue with a key that is
            # READY or RUNNING already returns the existing job.
            models.UniqueConstraint(
                "unique_key",
                name="jobs_job_unique_key_live",
                condition=models.Q(status__in=(JobStatus.READY, JobStatus.RUNNING)),
            ),
            models.CheckConstraint(
                condition=models.Q(priority__gte=-100, priority__lte=100),
                name="jobs_job_priority_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_path} [{self.id}]"

    @property
    def worker_id(self) -> str | None:
        """The worker of the latest attempt."""
        return self.worker_ids[-1] if self.worker_ids else None


class Worker(models.Model):
    """
    One running `runworker` coordinator.

    Its heartbeat keeps `last_heartbeat` fresh; a row whose heartbeat is older
    than a few intervals belongs to a dead worker, whose RUNNING jobs are rescued.
    """

    id = models.CharField(max_length=64, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = ArrayField(models.CharField(max_length=100))
    concurrency = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField()

    class Meta:
        db_table = "jobs_worker"
        ordering = ["started_at"]

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"
