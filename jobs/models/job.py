"""A job, one enqueued call of a task through every status, and the edges of workflows."""

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models.lookups import IsNull


class JobStatus(models.TextChoices):
    # Waiting for the jobs it depends on (jobs.workflows); READY through
    # Django's API, whose statuses have no other.
    WAITING = "WAITING", "Waiting"
    READY = "READY", "Ready"
    RUNNING = "RUNNING", "Running"
    SUCCESSFUL = "SUCCESSFUL", "Successful"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


FINISHED_STATUSES = (JobStatus.SUCCESSFUL, JobStatus.FAILED, JobStatus.CANCELLED)

# Always true, and what lets Postgres read finished jobs by status alone from
# both of their partial indexes (jobs_job_finished_idx for the jobs under no
# RETAIN rule, jobs_job_retained_idx for the others) combined, instead of the
# table: add it to a filter on a finished status that counts or pages them.
EITHER_FINISHED_INDEX = models.Q(retention__isnull=True) | models.Q(retention__isnull=False)


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
    # When the job is due: run_after, or the enqueue time, moved by retries.
    run_at = models.DateTimeField()
    # The run_after it was enqueued with (None: as soon as possible), for
    # the Task that get_result() gives back.
    run_after = models.DateTimeField(null=True, blank=True)
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
    # Each time the job snoozed (jobs.exceptions.Snooze), its attempt given
    # back: {"at": epoch seconds, "seconds": the delay, "attempt": n}. NULL
    # until it first snoozes: a job that never does (most) writes nothing
    # here, not even an empty array, in its row and in the WAL.
    snoozes = models.JSONField(null=True, blank=True)
    # The RETAIN rule that keeps the job once finished (jobs.retention), taken
    # at enqueue; NULL: the backend's RETAIN_SUCCESSFUL and RETAIN_FAILED.
    retention = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    # NULL, not '', means no key: the partial unique index ignores NULLs.
    unique_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    # Labels and data to find jobs by (`using(tags=..., meta=...)`), never
    # read by the queue itself. The database's defaults keep inserts that do
    # not name them working.
    tags = ArrayField(models.CharField(max_length=100), default=list, db_default=[], blank=True)
    meta = models.JSONField(default=dict, db_default={}, blank=True)
    # The enqueuer's OpenTelemetry context (W3C traceparent), when it had one
    # (see jobs.tracing).
    trace_context = models.JSONField(null=True, blank=True)
    # The jobs_limit_key rows this job counts against while it runs (see
    # jobs.limits): its own key, which also groups it for fair shares, and
    # one shared with other keys. NULL for a job under no limit.
    limit_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    shared_limit_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    # Workflows (jobs.workflows): the graph the job belongs to, how many of
    # the jobs it waits for have not finished and how many did not succeed,
    # when it runs ("success", "failure", "finish" of those), what it is
    # given of their results, and whether jobs wait for it.
    workflow_id = models.UUIDField(null=True, blank=True)
    # The name its enqueue gave the workflow (`enqueue(name=...)`), on each of its jobs.
    workflow_name = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    parents_left = models.IntegerField(default=0, db_default=0)
    parents_failed = models.IntegerField(default=0, db_default=0)
    run_when = models.CharField(max_length=8, null=True, blank=True)  # noqa: DJ001
    parent_results = models.CharField(max_length=8, null=True, blank=True)  # noqa: DJ001
    has_dependants = models.BooleanField(default=False, db_default=False)
    # How far the running attempt got, as its task reported (jobs.progress).
    progress = models.FloatField(null=True, blank=True)
    progress_message = models.CharField(max_length=200, blank=True, default="", db_default="")

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
            # backlog, however much history the table keeps. Jobs under a
            # limit are claimed through the next index, key by key.
            models.Index(
                "queue",
                models.F("priority").desc(),
                "run_at",
                "id",
                name="jobs_job_claim_plain_idx",
                condition=models.Q(status=JobStatus.READY, limit_key__isnull=True),
            ),
            models.Index(
                "queue",
                "limit_key",
                models.F("priority").desc(),
                "run_at",
                "id",
                name="jobs_job_claim_limited_idx",
                condition=models.Q(status=JobStatus.READY, limit_key__isnull=False),
            ),
            # Every READY job by queue, then whether it is under no limit, then
            # run_at: when the next job of a queue is due (under no limit, or
            # under one), which queues have READY jobs, and the live counts.
            models.Index(
                "queue",
                IsNull(models.F("limit_key"), True),
                "run_at",
                name="jobs_job_due_idx",
                condition=models.Q(status=JobStatus.READY),
            ),
            # Rescue and shutdown look at the RUNNING jobs of one worker.
            models.Index(
                "id",
                name="jobs_job_running_idx",
                condition=models.Q(status=JobStatus.RUNNING),
            ),
            # Retention, and the dashboard's reads of recent finished jobs
            # (queries.observe reads both): the jobs under no
            # RETAIN rule, then each rule's, so that the prune of one reads
            # none of the others' (jobs.retention).
            models.Index(
                "status",
                "finished_at",
                name="jobs_job_finished_idx",
                condition=models.Q(status__in=FINISHED_STATUSES, retention__isnull=True),
            ),
            models.Index(
                "retention",
                "status",
                "finished_at",
                name="jobs_job_retained_idx",
                condition=models.Q(status__in=FINISHED_STATUSES, retention__isnull=False),
            ),
            # The jobs of a workflow; the jobs that wait for others.
            models.Index(
                "workflow_id",
                name="jobs_job_workflow_idx",
                condition=models.Q(workflow_id__isnull=False),
            ),
            models.Index(
                "id", name="jobs_job_waiting_idx", condition=models.Q(status=JobStatus.WAITING)
            ),
            # The jobs of a unique key in any status, for a key held over time
            # or by states (jobs.uniqueness); jobs without a key stay out.
            models.Index(
                "unique_key",
                name="jobs_job_unique_key_idx",
                condition=models.Q(unique_key__isnull=False),
            ),
            # Finding jobs by tag, or by a key and value of their meta. Partial:
            # a job with neither (most) costs its enqueue nothing here; a query
            # names the condition to be answered from them (jobs.admin.filters).
            GinIndex(fields=["tags"], name="jobs_job_tags_idx", condition=~models.Q(tags=[])),
            GinIndex(
                fields=["meta"],
                opclasses=["jsonb_path_ops"],
                name="jobs_job_meta_idx",
                condition=~models.Q(meta={}),
            ),
        ]
        constraints = [
            # At most one live job per unique key: enqueue with a key that is
            # READY or RUNNING already returns the existing job. Jobs without
            # a key stay out of the index, so claiming them writes one index
            # entry less.
            models.UniqueConstraint(
                "unique_key",
                name="jobs_job_unique_key_live",
                condition=models.Q(
                    unique_key__isnull=False, status__in=(JobStatus.READY, JobStatus.RUNNING)
                ),
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


class Dependency(models.Model):
    """
    An edge of a workflow: the child waits for the parent to finish.

    Plain ids rather than foreign keys: the rows are written and read by the
    queue's own SQL (jobs.queries.workflows: ENQUEUE_WORKFLOW,
    ADVANCE_WORKFLOWS, the parent results), and a finished parent may be deleted first, its outcome
    kept here. An edge is deleted with its child (jobs.transitions).
    """

    # The child and the parent's place among its parents name an edge: no
    # sequence to draw from and one index less per edge, for graphs of
    # thousands of edges inserted in one statement.
    pk = models.CompositePrimaryKey("child_id", "position")
    parent_id = models.UUIDField()
    child_id = models.UUIDField()
    # The parent's place among the child's: the order of the results it is given.
    position = models.PositiveIntegerField()
    # What the child reads of the parent once the parent's row is deleted
    # (pruned, purged): {"status", "return_value", "error"}. See queries.finish.DELETE_FINISHED.
    parent_outcome = models.JSONField(null=True, blank=True)

    class Meta:
        db_table = "jobs_dependency"
        default_permissions = ("view",)
        indexes = [
            models.Index("parent_id", name="jobs_dependency_parent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.child_id} after {self.parent_id}"
