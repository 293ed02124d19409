"""The running workers, and the queues that every worker leaves alone while paused."""

from django.contrib.postgres.fields import ArrayField
from django.db import models


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


class PausedQueue(models.Model):
    """
    A queue no worker claims from while its row exists (see queries.claim._CLAIM).

    Kept in the database, so that a pause holds for every worker, through
    their restarts, and for workers started later; jobs.operations pauses and
    resumes, and tells the workers at once.
    """

    queue = models.CharField(max_length=100, primary_key=True)
    paused_at = models.DateTimeField()
    paused_by = models.CharField(max_length=150, blank=True)

    class Meta:
        db_table = "jobs_paused_queue"
        ordering = ["queue"]
        default_permissions = ("view",)
        permissions = [("pause_queue", "Can pause and resume a queue")]

    def __str__(self) -> str:
        return self.queue
