"""
The queue's tables.

The worker reads and writes them with the hand-written SQL of jobs/queries/; the
models are for migrations, the admin and everything that is not the hot path.
"""

from datetime import datetime
from itertools import islice

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models.lookups import IsNull
from django.utils import timezone

from .queries.schedules import NOTIFY_SCHEDULERS
from .schedules import Timing, schedule_errors


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
            # Retention and the admin's time filters on finished jobs.
            models.Index(
                "status",
                "finished_at",
                name="jobs_job_finished_idx",
                condition=models.Q(status__in=FINISHED_STATUSES),
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


def default_time_zone() -> str:
    """New schedules tick in the project's time zone unless they name another."""
    return settings.TIME_ZONE


class CatchUp(models.TextChoices):
    SKIP = "skip", "Skip missed ticks"
    LATEST = "latest", "Run the latest missed tick once"


class Schedule(models.Model):
    """
    A task enqueued on a cron expression, or every so many seconds.

    `runscheduler` claims the rows whose next_run_at has come, enqueues the
    tick's job and moves next_run_at on, all in one transaction, so any number
    of schedulers enqueue exactly one job per tick. Saving a schedule
    recomputes next_run_at when its timing changed and wakes the schedulers.
    """

    # Written by the schedulers only: a save from the admin or the shell never
    # writes them back, so it cannot undo a tick that fired while it was open.
    SCHEDULER_FIELDS = ("next_run_at", "last_run_at")

    name = models.CharField(max_length=200, unique=True)
    task_path = models.CharField(
        "task",
        max_length=255,
        help_text="Dotted path of a @task function, e.g. accounts.reports.send_signup_report.",
    )
    args = models.JSONField(default=list, blank=True, help_text="A JSON list.")
    kwargs = models.JSONField(default=dict, blank=True, help_text="A JSON object.")
    cron = models.CharField(
        max_length=100,
        blank=True,
        help_text=(
            "minute hour day-of-month month day-of-week, e.g. '0 18 * * 1-5' "
            "(six fields: seconds first). Leave empty to use an interval."
        ),
    )
    interval = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds between runs, instead of a cron expression."
    )
    time_zone = models.CharField(
        max_length=64,
        default=default_time_zone,
        help_text="IANA name, e.g. Europe/Berlin: the cron expression is read in this zone.",
    )
    queue = models.CharField(max_length=100, default="default")
    priority = models.SmallIntegerField(default=0, help_text="-100..100, higher first.")
    enabled = models.BooleanField(default=True)
    catch_up = models.CharField(
        max_length=10,
        choices=CatchUp,
        default=CatchUp.LATEST,
        help_text="What to do with ticks missed while no scheduler ran.",
    )
    catch_up_window = models.PositiveIntegerField(
        default=24 * 3600,
        help_text="Seconds: a missed tick older than this never runs.",
    )
    next_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The declaration in settings.JOBS_SCHEDULES last synced into this row
    # (NULL: created in the admin); see jobs.scheduler.declared.
    declared = models.JSONField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "jobs_schedule"
        ordering = ["name"]
        indexes = [
            # The claim and the schedulers' sleep read the enabled rows by next_run_at.
            models.Index(
                "next_run_at", name="jobs_schedule_due_idx", condition=models.Q(enabled=True)
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(cron="", interval__isnull=False)
                    | (~models.Q(cron="") & models.Q(interval__isnull=True))
                ),
                name="jobs_schedule_cron_or_interval",
                violation_error_message="Give a cron expression or an interval, not both.",
            ),
            models.CheckConstraint(
                condition=models.Q(priority__gte=-100, priority__lte=100),
                name="jobs_schedule_priority_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        """
        Save, moving next_run_at when the timing changed, and wake the schedulers.

        An enabled schedule is validated first, by the rules of the admin form
        (clean()): one that the scheduler could not run (a task path that does
        not import, an unknown queue, args that are not a list) is refused with
        a ValidationError naming the field, and nothing is saved. A disabled
        one is saved as it is, so that a broken schedule can always be turned
        off, and a declaration removed from code with its task disabled.

        A new, re-enabled or re-timed schedule starts from its first tick after
        now: the time it spent disabled or on another expression is not caught up.
        """
        if self.enabled:
            self.clean()
        rescheduled = getattr(self, "_loaded_timing", None) != self._timing_state()
        if rescheduled:
            self.next_run_at = self.timing().next_after(timezone.now()) if self.enabled else None
        update_fields = kwargs.get("update_fields")
        if update_fields is None and not self._state.adding:
            kept = {"last_run_at"} if rescheduled else set(self.SCHEDULER_FIELDS)
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name not in kept
            ]
        elif update_fields is not None and rescheduled:
            kwargs["update_fields"] = {*update_fields, "next_run_at"}
        super().save(*args, **kwargs)
        self._loaded_timing = self._timing_state()
        notify_schedulers(kwargs.get("using") or self._state.db)

    def delete(self, *args, **kwargs):
        result = super().delete(*args, **kwargs)
        notify_schedulers(kwargs.get("using") or self._state.db)
        return result

    @classmethod
    def from_db(cls, db, field_names, values, **kwargs):
        instance = super().from_db(db, field_names, values, **kwargs)
        instance._loaded_timing = instance._timing_state()
        return instance

    def timing(self) -> Timing:
        """The schedule's Timing; TimingError if it is invalid."""
        return Timing(cron=self.cron, interval=self.interval, time_zone=self.time_zone)

    def next_runs(self, count: int) -> list[datetime]:
        """
        The next `count` runs, from next_run_at on, as the admin and `manage.py
        schedules` list them: none while the schedule is disabled or never due
        again. TimingError if its timing is invalid.
        """
        first = self.next_run_at
        if not self.enabled or first is None or count < 1:
            return []
        return [first, *islice(self.timing().ticks_after(first, first), count - 1)]

    def clean(self) -> None:
        """Refuse what the scheduler could not run, each problem under its field."""
        errors = schedule_errors(self)
        if errors:
            raise ValidationError(errors)

    def _timing_state(self) -> tuple:
        return (self.cron, self.interval, self.time_zone, self.enabled)


def notify_schedulers(using: str | None) -> None:
    """Wake every runscheduler when this transaction commits (NOTIFY is transactional)."""
    with connections[using or DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(NOTIFY_SCHEDULERS)


class LimitKey(models.Model):
    """
    The state of one key of a limit (jobs.limits): how many of its jobs run
    now, and its rate's token bucket.

    The claim locks the row of every key it starts jobs of and counts them in
    (queries.limits.LIMITED_CLAIM); every statement that ends a run counts them out. The
    limits are copied from settings when the row is made, and again when a
    worker starts.
    """

    key = models.CharField(max_length=255, primary_key=True)
    name = models.CharField(max_length=100)
    concurrency = models.PositiveIntegerField(null=True, blank=True)
    rate = models.PositiveIntegerField(null=True, blank=True)
    # Seconds over which `rate` tokens refill.
    period = models.FloatField(null=True, blank=True)
    burst = models.PositiveIntegerField(null=True, blank=True)
    running = models.IntegerField(default=0)
    tokens = models.FloatField(default=0)
    refilled_at = models.DateTimeField()
    # When a claim last started jobs of this key as their own (NULL: never):
    # within a turn of the claim, the key served longest ago goes first.
    served_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "jobs_limit_key"
        ordering = ["key"]
        default_permissions = ("view",)
        indexes = [
            # The reconciliation recounts the keys that say jobs run.
            models.Index(
                "key", name="jobs_limit_key_running_idx", condition=models.Q(running__gt=0)
            ),
            models.Index("name", "key", name="jobs_limit_key_name_idx"),
        ]

    def __str__(self) -> str:
        return self.key


class Dependency(models.Model):
    """
    An edge of a workflow: the child waits for the parent to finish.

    Plain ids rather than foreign keys: the rows are written and read by the
    queue's own SQL (jobs.queries.workflows: ENQUEUE_DEPENDENCIES,
    ADVANCE_WORKFLOWS, the parent results), and a finished parent may be deleted first, its outcome
    kept here. An edge is deleted with its child (jobs.transitions).
    """

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
            models.Index("child_id", "position", name="jobs_dependency_child_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.child_id} after {self.parent_id}"
