"""
Jobs and workers in the admin.

The job list must stay fast on a table of millions of rows: it is always
sorted by the primary key (UUIDv7, so newest first is an index scan), its
count is an estimate, its time filter is a primary key range, and its filters
offer choices without scanning the table.
"""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Count, QuerySet
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from .. import metrics, operations, sql
from ..backend import current_task_path
from ..exceptions import JobStateError
from ..jsonb import unstorable
from ..models import Dependency, Job, JobStatus, PausedQueue, Worker
from ..progress import progress_of
from . import dashboard, statistics
from .charts import duration_text
from .ids import task_id_range, uuid7_floor

# Above this many rows the list shows an estimate rather than counting.
EXACT_COUNT_LIMIT = 10_000


# Jobs a workflow's job lists as its parents or children; the rest are a link away.
LINKED_JOBS = 20


class Operation(Protocol):
    """One of jobs.operations on one job, through the backend (a TASKS alias) of its row."""

    def __call__(self, job_id: str, *, backend: str) -> object: ...


def _backend_alias(job_backend: str) -> str:
    """
    The TASKS alias to operate on a job through: the one its row was enqueued
    with, or the default when the settings no longer have that alias (a row
    outlives a renamed backend).
    """
    return job_backend if job_backend in task_backends.settings else DEFAULT_TASK_BACKEND_ALIAS


class EstimatedCountPaginator(Paginator):
    """
    A paginator that never counts a large table.

    The planner's row estimate (free) decides: below EXACT_COUNT_LIMIT the
    rows are counted, at most EXACT_COUNT_LIMIT + 1 of them; above it the
    estimate is the count. An unfiltered list of a million jobs is paged from
    the planner's statistics instead of a sequential scan.
    """

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        estimate = _planner_estimate(queryset)
        if estimate > EXACT_COUNT_LIMIT:
            return estimate
        return queryset.order_by()[: EXACT_COUNT_LIMIT + 1].count()


def _planner_estimate(queryset: QuerySet) -> int:
    query, params = queryset.order_by().values("pk").query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(sql.PLAN.format(query=query), params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class EnqueuedFilter(admin.SimpleListFilter):
    """Jobs enqueued recently, as a range of the time-ordered primary key."""

    title = "enqueued"
    parameter_name = "enqueued"
    periods = {
        "15m": ("Last 15 minutes", timedelta(minutes=15)),
        "1h": ("Last hour", timedelta(hours=1)),
        "24h": ("Last 24 hours", timedelta(days=1)),
        "7d": ("Last 7 days", timedelta(days=7)),
    }

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [(key, label) for key, (label, _) in self.periods.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        period = self.periods.get(self.value())
        if period is None:
            return queryset
        return queryset.filter(id__gte=uuid7_floor(timezone.now() - period[1]))


class QueueFilter(admin.SimpleListFilter):
    """The queues the backend declares: no scan of the table to find them."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        queues = set(task_backends[DEFAULT_TASK_BACKEND_ALIAS].queues or ())
        if self.value():
            queues.add(self.value())
        return [(queue, queue) for queue in sorted(queues)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(queue=self.value()) if self.value() else queryset


class RecentValuesFilter(admin.SimpleListFilter):
    """
    A filter whose choices are read from the most recent jobs (the end of the
    primary key index), not from the whole table; any value works by its URL.
    """

    sample_size = 10_000
    # Returns one column of values, given the sample size.
    sample_sql = ""

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        with connections[Job.objects.db].cursor() as cursor:
            cursor.execute(self.sample_sql, [self.sample_size])
            values = {value for (value,) in cursor.fetchall()}
        if self.value():
            values.add(self.value())
        return [(value, value) for value in sorted(values)]


class TaskFilter(RecentValuesFilter):
    title = "task"
    parameter_name = "task"
    sample_sql = sql.RECENT_TASK_PATHS

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(task_path=self.value()) if self.value() else queryset


class TagFilter(RecentValuesFilter):
    title = "tag"
    parameter_name = "tag"
    sample_sql = sql.RECENT_TAGS

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return tagged(queryset, self.value()) if self.value() else queryset


def tagged(queryset: QuerySet, tag: str) -> QuerySet:
    """
    The jobs with this tag. Jobs without tags are excluded by name: that is
    the condition of jobs_job_tags_idx, which the planner must see to use it.
    """
    return queryset.exclude(tags=[]).filter(tags__contains=[tag])


def with_meta(queryset: QuerySet, key: str, value: object) -> QuerySet:
    """The jobs whose meta holds key: value (jobs_job_meta_idx, as tagged() does)."""
    return queryset.exclude(meta={}).filter(meta__contains={key: value})


def _cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _pretty_json(value: object) -> SafeString:
    return format_html(
        '<pre class="jobs-json">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False)
    )


def _when(moment: datetime) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S.%f}"[:-3]


def _moment(value: object) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    return value if isinstance(value, datetime) else None


# Characters of a job's arguments shown in the list, and on hover (a page
# of jobs with large arguments stays small).
LIST_ARGUMENTS_LENGTH = 40
LIST_ARGUMENTS_HOVER = 1000


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """The job browser: read-only rows, changed only through the queue's operations."""

    # Narrow enough for a 1366 px screen with the admin's sidebars open: the
    # times are relative (the exact one on hover), the rest is on the job's page.
    list_display = (
        "short_id",
        "status_label",
        "task_short",
        "queue",
        "priority",
        "arguments",
        "attempts_label",
        "enqueued",
        "duration",
    )
    list_display_links = ("short_id",)
    empty_value_display = "—"
    list_filter = ("status", QueueFilter, TaskFilter, TagFilter, EnqueuedFilter)
    search_fields = ("task_path",)
    search_help_text = (
        "A task id, its first 8 or more characters, part of a task name, "
        "tag:<tag>, meta:<key>=<value> (the value as JSON, else text), or "
        "workflow:<id> for a workflow's jobs."
    )
    # Only the primary key is sorted on: every other column would sort the table.
    sortable_by = ("enqueued",)
    ordering = ("-id",)
    show_full_result_count = False
    # Facet counts would count every filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    list_per_page = 50
    actions = ("retry_jobs", "cancel_jobs", "run_jobs_now", "delete_selected")
    change_form_template = "admin/jobs/job/change_form.html"
    change_list_template = "admin/jobs/job/change_list.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "status_label",
                    "progress_bar",
                    "waiting_reason",
                    "task_link",
                    "queue",
                    "priority",
                    "attempts_label",
                    "timeout",
                    "unique_key",
                    "limit_key",
                    "shared_limit_key",
                    "tags_list",
                    "meta_json",
                    "backend",
                )
            },
        ),
        ("Timeline", {"fields": ("timeline", "duration")}),
        ("Workflow", {"fields": ("workflow_progress", "waits_for", "waited_for_by")}),
        ("Workers", {"fields": ("worker_link", "worker_history")}),
        ("Arguments", {"fields": ("args_json", "kwargs_json")}),
        ("Result", {"fields": ("return_value_json", "errors_html")}),
    )
    readonly_fields = tuple(name for _, options in fieldsets for name in options["fields"])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.retry_job")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.cancel_job")

    def has_run_now_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.run_job_now")

    # The list's columns.

    @admin.display(description="status")
    def status_label(self, job: Job) -> SafeString:
        return format_html(
            '<span class="jobs-status jobs-status-{}">{}</span>', job.status.lower(), job.status
        )

    @admin.display(description="progress")
    def progress_bar(self, job: Job) -> SafeString | str:
        """The last progress its task reported (jobs.progress): a bar for a fraction."""
        progress = progress_of(job)
        if progress is None:
            return self.get_empty_value_display()
        value = progress.value
        if value is not None and 0 <= value <= 1:
            return format_html(
                '<progress max="1" value="{}"></progress> {}% {}',
                value,
                round(value * 100),
                progress.message,
            )
        return format_html("{} {}", "" if value is None else f"{value:g}", progress.message)

    @admin.display(description="waiting")
    def waiting_reason(self, job: Job) -> str:
        """Why a READY job has not started: paused, not due yet, or waiting for a worker."""
        if job.status != JobStatus.READY:
            return self.get_empty_value_display()
        database = task_backends[_backend_alias(job.backend)].database
        pause = PausedQueue.objects.using(database).filter(queue=job.queue).first()
        if pause is not None:
            since = localize(timezone.localtime(pause.paused_at))
            by = f" by {pause.paused_by}" if pause.paused_by else ""
            return (
                f"Queue {job.queue!r} is paused (since {since}{by}): no job of it starts "
                "until it is resumed."
            )
        if job.run_at > timezone.now():
            return f"Not due until {localize(timezone.localtime(job.run_at))}."
        if held := _held_back_by(job, database):
            return held
        return "Due: the next worker of its queue with room takes it."

    @admin.display(description="attempts")
    def attempts_label(self, job: Job) -> str:
        return f"{job.attempts}/{job.max_attempts}"

    @admin.display(description="task")
    def task_name(self, job: Job) -> SafeString | str:
        """The task's name now: a job queued under an alias shows the task that answers to it."""
        current = current_task_path(job.task_path)
        if current == job.task_path:
            return current
        return format_html("{} (queued as {})", current, job.task_path)

    @admin.display(description="id")
    def short_id(self, job: Job) -> SafeString:
        """
        The id's first 8 characters (the search takes them) and its last 4: ids
        are time-ordered, so jobs enqueued within a minute share their start.
        """
        full = str(job.id)
        return format_html('<span title="{}">{}…{}</span>', full, full[:8], full[-4:])

    @admin.display(description="task")
    def task_short(self, job: Job) -> SafeString:
        """The task's function name; its whole path (and any alias it was queued as) on hover."""
        current = current_task_path(job.task_path)
        title = current if current == job.task_path else f"{current} (queued as {job.task_path})"
        return format_html('<span title="{}">{}</span>', title, current.rsplit(".", 1)[-1])

    @admin.display(description="arguments")
    def arguments(self, job: Job) -> SafeString | str:
        """args and kwargs as one call, cut to LIST_ARGUMENTS_LENGTH (more on hover)."""
        parts = [json.dumps(value, ensure_ascii=False) for value in job.args]
        parts += [
            f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in job.kwargs.items()
        ]
        text = ", ".join(parts)
        if not text:
            return self.get_empty_value_display()
        return format_html(
            '<span title="{}">{}</span>',
            _cut(text, LIST_ARGUMENTS_HOVER),
            _cut(text, LIST_ARGUMENTS_LENGTH),
        )

    @admin.display(description="enqueued", ordering="id")
    def enqueued(self, job: Job) -> SafeString:
        """How long ago, to the second; the exact time on hover."""
        ago = duration_text((timezone.now() - job.enqueued_at).total_seconds())
        return format_html('<span title="{}">{} ago</span>', _when(job.enqueued_at), ago)

    @admin.display(description="duration")
    def duration(self, job: Job) -> str:
        if job.started_at is None:
            return "—"
        end = job.finished_at or (timezone.now() if job.status == JobStatus.RUNNING else None)
        return duration_text((end - job.started_at).total_seconds()) if end else "—"

    # The detail's fields.

    @admin.display(description="task")
    def task_link(self, job: Job) -> SafeString:
        url = reverse("admin:jobs_job_changelist") + "?" + urlencode({"task": job.task_path})
        return format_html('{} (<a href="{}">jobs of this task</a>)', self.task_name(job), url)

    @admin.display(description="worker")
    def worker_link(self, job: Job) -> SafeString | str:
        worker_id = job.worker_id
        if worker_id is None:
            return "—"
        if Worker.objects.filter(id=worker_id).exists():
            url = reverse("admin:jobs_worker_change", args=[worker_id])
            return format_html('<a href="{}">{}</a>', url, worker_id)
        return format_html("{} (stopped)", worker_id)

    @admin.display(description="all attempts' workers")
    def worker_history(self, job: Job) -> str:
        return ", ".join(job.worker_ids) or "—"

    def get_fieldsets(self, request: HttpRequest, obj: Job | None = None) -> tuple:
        """The Workflow section only for a job of a workflow."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or obj.workflow_id is None:
            return tuple(entry for entry in fieldsets if entry[0] != "Workflow")
        return fieldsets

    @admin.display(description="workflow")
    def workflow_progress(self, job: Job) -> SafeString | str:
        """Its workflow's jobs by status: done, failed, total, with a bar and a link to them."""
        if job.workflow_id is None:
            return self.get_empty_value_display()
        counts = dict(
            Job.objects.using(job._state.db)
            .filter(workflow_id=job.workflow_id)
            .values_list("status")
            .annotate(count=Count("id"))
            .values_list("status", "count")
        )
        total = sum(counts.values())
        done = counts.get(JobStatus.SUCCESSFUL, 0)
        failed = counts.get(JobStatus.FAILED, 0) + counts.get(JobStatus.CANCELLED, 0)
        url = reverse("admin:jobs_job_changelist")
        return format_html(
            '<a href="{}?{}">{}</a>: {} of {} done, {} failed or cancelled '
            '<progress max="{}" value="{}"></progress>',
            url,
            urlencode({"q": f"workflow:{job.workflow_id}"}),
            job.workflow_id,
            done,
            total,
            failed,
            total,
            done + failed,
        )

    @admin.display(description="waits for")
    def waits_for(self, job: Job) -> SafeString | str:
        """The jobs it waits for, in the order it is given their results."""
        edges = Dependency.objects.using(job._state.db).filter(child_id=job.id)
        return self._linked_jobs(
            job, edges.order_by("position").values_list("parent_id", flat=True)
        )

    @admin.display(description="waited for by")
    def waited_for_by(self, job: Job) -> SafeString | str:
        edges = Dependency.objects.using(job._state.db).filter(parent_id=job.id)
        return self._linked_jobs(job, edges.order_by("child_id").values_list("child_id", flat=True))

    def _linked_jobs(self, job: Job, ids: QuerySet) -> SafeString | str:
        ids = list(ids[: LINKED_JOBS + 1])
        if not ids:
            return self.get_empty_value_display()
        found = Job.objects.using(job._state.db).in_bulk(ids[:LINKED_JOBS])
        items = format_html_join(
            "",
            '<li><a href="{}">{}</a> {} <span class="jobs-status jobs-status-{}">{}</span></li>',
            (
                (
                    reverse("admin:jobs_job_change", args=[linked.id]),
                    self.short_id(linked),
                    current_task_path(linked.task_path),
                    linked.status.lower(),
                    linked.status,
                )
                for linked in (found[job_id] for job_id in ids[:LINKED_JOBS] if job_id in found)
            ),
        )
        more = format_html("<li>and more: see the workflow</li>") if len(ids) > LINKED_JOBS else ""
        return format_html('<ul class="jobs-linked">{}{}</ul>', items, more)

    @admin.display(description="args")
    def args_json(self, job: Job) -> SafeString:
        return _pretty_json(job.args)

    @admin.display(description="kwargs")
    def kwargs_json(self, job: Job) -> SafeString:
        return _pretty_json(job.kwargs)

    @admin.display(description="tags")
    def tags_list(self, job: Job) -> SafeString | str:
        if not job.tags:
            return self.get_empty_value_display()
        url = reverse("admin:jobs_job_changelist")
        return format_html_join(
            ", ",
            '<a href="{}?{}">{}</a>',
            ((url, urlencode({"tag": tag}), tag) for tag in job.tags),
        )

    @admin.display(description="meta")
    def meta_json(self, job: Job) -> SafeString | str:
        return _pretty_json(job.meta) if job.meta else self.get_empty_value_display()

    @admin.display(description="return value")
    def return_value_json(self, job: Job) -> SafeString | str:
        if job.status != JobStatus.SUCCESSFUL:
            return self.get_empty_value_display()
        return _pretty_json(job.return_value)

    @admin.display(description="errors")
    def errors_html(self, job: Job) -> SafeString | str:
        if not job.errors:
            return "—"
        return format_html_join(
            "",
            '<div class="jobs-error"><p><strong>Attempt {}</strong> · {} · {} · worker {}</p>'
            "<p>{}</p><pre>{}</pre></div>",
            (
                (
                    error.get("attempt", "?"),
                    _when(_moment(error.get("at"))) if error.get("at") else "—",
                    error.get("exception_class_path", ""),
                    error.get("worker_id") or "—",
                    error.get("message", ""),
                    error.get("traceback") or "(no traceback)",
                )
                for error in job.errors
            ),
        )

    @admin.display(description="timeline")
    def timeline(self, job: Job) -> SafeString:
        events: list[tuple[datetime, str]] = [(job.enqueued_at, "enqueued")]
        if job.run_at > job.enqueued_at and job.started_at is None:
            events.append((job.run_at, "due"))
        if job.started_at:
            events.append((job.started_at, "attempt 1 started"))
        for error in job.errors:
            moment = _moment(error.get("at"))
            if moment:
                name = error.get("exception_class_path", "").rsplit(".", 1)[-1]
                events.append((moment, f"attempt {error.get('attempt', '?')} ended: {name}"))
        if job.last_attempted_at and job.attempts > 1:
            events.append((job.last_attempted_at, f"attempt {job.attempts} started"))
        events.sort(key=lambda event: event[0])
        # The outcome comes last even when an error entry was stamped a moment later.
        if job.finished_at:
            events.append((job.finished_at, job.status.lower()))
        elif job.status == JobStatus.READY and job.attempts:
            events.append((job.run_at, f"attempt {job.attempts + 1} due"))
        return format_html(
            '<ol class="jobs-timeline">{}</ol>',
            format_html_join(
                "",
                "<li><time>{}</time> <span>+{}</span> {}</li>",
                (
                    (
                        _when(moment),
                        duration_text((moment - job.enqueued_at).total_seconds()),
                        label,
                    )
                    for moment, label in events
                ),
            ),
        )

    # Operations, on a selection, on everything the filter matches, or on one job.

    def _apply(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        operation: Operation,
        done: str,
    ) -> None:
        """Run the operation job by job, log each change, and tell the operator."""
        changed: list[uuid.UUID] = []
        skipped = 0
        rows = queryset.order_by().values_list("id", "backend").iterator(chunk_size=2000)
        for job_id, job_backend in rows:
            try:
                operation(str(job_id), backend=_backend_alias(job_backend))
            except (JobStateError, Job.DoesNotExist):
                skipped += 1
            else:
                changed.append(job_id)
        for start in range(0, len(changed), 2000):
            LogEntry.objects.log_actions(
                request.user.pk,
                Job.objects.filter(id__in=changed[start : start + 2000]),
                CHANGE,
                done,
            )
        message = f"{done}: {len(changed)} job{'s' if len(changed) != 1 else ''}."
        if skipped:
            message += f" {skipped} skipped: their status does not allow it."
        self.message_user(request, message, messages.SUCCESS if changed else messages.WARNING)

    @admin.action(description="Retry selected jobs", permissions=["retry"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        finished = queryset.filter(status__in=(JobStatus.FAILED, JobStatus.CANCELLED))
        self._apply(request, finished, operations.retry, "Retried")

    @admin.action(description="Cancel selected jobs", permissions=["cancel"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        live = queryset.filter(status__in=(JobStatus.WAITING, JobStatus.READY, JobStatus.RUNNING))
        self._apply(request, live, self._cancel, "Cancelled")

    @admin.action(description="Run selected jobs now", permissions=["run_now"])
    def run_jobs_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset.filter(status=JobStatus.READY), operations.run_now, "Run now")

    @staticmethod
    def _cancel(job_id: str, *, backend: str) -> None:
        operations.cancel(job_id, reason="Cancelled from the admin", backend=backend)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        """
        Delete through the queue (jobs.transitions.delete), never by a plain
        DELETE: a live job is cancelled first, so its slots are freed and the
        jobs of a workflow that wait for it move on.
        """
        ids = list(queryset.order_by().values_list("id", flat=True))
        for start in range(0, len(ids), 2000):
            operations.delete(ids[start : start + 2000], using=queryset.db)

    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        operations.delete([obj.id], using=obj._state.db)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        """Refuse with 403, not a quiet redirect, an action this user may not run."""
        name = request.POST.get("action") if request.method == "POST" else None
        if name and name not in self.get_actions(request):
            known = hasattr(self, name) or name in dict(self.admin_site.actions)
            if known:
                raise PermissionDenied
        extra_context = {**(extra_context or {}), "dashboard_url": self._dashboard_url()}
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        job = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if job is not None:
            context["job_operations"] = [
                (name, label)
                for name, label, allowed, permitted in (
                    (
                        "retry",
                        "Retry",
                        job.status in (JobStatus.FAILED, JobStatus.CANCELLED),
                        self.has_retry_permission(request),
                    ),
                    (
                        "cancel",
                        "Cancel",
                        job.status in (JobStatus.WAITING, JobStatus.READY, JobStatus.RUNNING),
                        self.has_cancel_permission(request),
                    ),
                    (
                        "run-now",
                        "Run now",
                        job.status == JobStatus.READY and job.run_at > timezone.now(),
                        self.has_run_now_permission(request),
                    ),
                )
                if allowed and permitted
            ]
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self) -> list:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(self.dashboard_view), name=f"{info}_dashboard"),
            path(
                "dashboard/schedules/<int:schedule_id>/run-now/",
                wrap(require_POST(self.run_schedule_now_view)),
                name=f"{info}_run_schedule_now",
            ),
            path("dashboard/tasks/", wrap(self.statistics_view), name=f"{info}_statistics"),
            path(
                "dashboard/queues/pause/",
                wrap(require_POST(self.pause_queue_view)),
                name=f"{info}_pause_queue",
            ),
            path(
                "<path:object_id>/operation/<slug:name>/",
                wrap(require_POST(self.operation_view)),
                name=f"{info}_operation",
            ),
            *super().get_urls(),
        ]

    def _dashboard_url(self) -> str:
        return reverse("admin:jobs_job_dashboard", current_app=self.admin_site.name)

    def dashboard_view(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return dashboard.render(self, request)

    def statistics_view(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return statistics.render(self, request)

    def run_schedule_now_view(self, request: HttpRequest, schedule_id: int) -> HttpResponse:
        return dashboard.run_schedule_now(self, request, schedule_id)

    def pause_queue_view(self, request: HttpRequest) -> HttpResponse:
        return dashboard.pause_or_resume_queue(self, request)

    @staticmethod
    def _operations() -> dict[str, tuple[str, Operation, str]]:
        return {
            "retry": ("retry", operations.retry, "Retried"),
            "cancel": ("cancel", JobAdmin._cancel, "Cancelled"),
            "run-now": ("run_now", operations.run_now, "Run now"),
        }

    def operation_view(self, request: HttpRequest, object_id: str, name: str) -> HttpResponse:
        """Retry, cancel or run now one job from its page (POST only)."""
        permission, operation, done = self._operations().get(name, (None, None, None))
        if permission is None:
            raise PermissionDenied
        if not getattr(self, f"has_{permission}_permission")(request):
            raise PermissionDenied
        job = get_object_or_404(Job, pk=object_id)
        if name == "cancel" and job.status == JobStatus.RUNNING and "confirmed" not in request.POST:
            # Its code is running now: stopping it kills its executor process.
            return TemplateResponse(
                request,
                "admin/jobs/job/cancel_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Cancel a running job?",
                    "opts": self.opts,
                    "original": job,
                    "task": self.task_name(job),
                    "job_url": reverse("admin:jobs_job_change", args=[job.pk]),
                },
            )
        try:
            operation(str(job.pk), backend=_backend_alias(job.backend))
        except JobStateError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            self.log_change(request, job, done)
            self.message_user(request, f"{done}: {job}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """A task id, a prefix of one (a primary key range), a tag, meta, or part of a task name."""
        term = search_term.strip()
        if term.startswith(("tag:", "meta:")) and unstorable(json.dumps(term)):
            # Nothing stored can hold it (a NUL, a lone surrogate).
            return queryset.none(), False
        if term.startswith("tag:") and term[4:]:
            return tagged(queryset, term[4:]), False
        if term.startswith("workflow:"):
            try:
                return queryset.filter(workflow_id=uuid.UUID(term[9:])), False
            except ValueError:
                return queryset.none(), False
        if term.startswith("meta:") and "=" in term:
            key, _, text = term[5:].partition("=")
            try:
                value = json.loads(text)
                # NaN and Infinity (1e999) read as floats; jsonb holds neither.
                json.dumps(value, allow_nan=False)
            except ValueError:
                value = text
            return with_meta(queryset, key, value), False
        id_range = task_id_range(term) if term else None
        if id_range is None:
            return super().get_search_results(request, queryset, term)
        low, high = id_range
        queryset = queryset.filter(id__gte=low)
        return (queryset.filter(id__lt=high) if high else queryset), False


# RUNNING jobs listed on a worker's page.
WORKER_PAGE_JOBS = 100


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    """The registered workers, read-only: a worker's row is its own to write."""

    list_display = (
        "id",
        "hostname",
        "pid",
        "queues",
        "concurrency",
        "in_flight",
        "started_at",
        "last_heartbeat",
    )
    ordering = ("started_at",)
    fields = (
        "id",
        "hostname",
        "pid",
        "queues",
        "concurrency",
        "started_at",
        "last_heartbeat",
        "heartbeat_age",
        "running_jobs",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        running = RawSQL(sql.RUNNING_JOBS_OF_WORKER, ())
        return super().get_queryset(request).annotate(running=running)

    @admin.display(description="jobs in flight")
    def in_flight(self, worker: Worker) -> int:
        return worker.running

    @admin.display(description="last heartbeat, ago")
    def heartbeat_age(self, worker: Worker) -> str:
        return duration_text((timezone.now() - worker.last_heartbeat).total_seconds())

    @admin.display(description="jobs it runs now")
    def running_jobs(self, worker: Worker) -> SafeString | str:
        """The RUNNING jobs whose latest attempt is this worker's, longest running first."""
        jobs = (
            Job.objects.filter(status=JobStatus.RUNNING)
            .annotate(current_worker=RawSQL("worker_ids[cardinality(worker_ids)]", ()))
            .filter(current_worker=worker.id)
            .order_by("last_attempted_at")
            .only("id", "task_path", "last_attempted_at", "attempts")[:WORKER_PAGE_JOBS]
        )
        now = timezone.now()
        rows = [
            (
                reverse("admin:jobs_job_change", args=[job.pk]),
                job.pk,
                job.task_path,
                job.attempts,
                duration_text((now - job.last_attempted_at).total_seconds()),
            )
            for job in jobs
        ]
        if not rows:
            return "None"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                '<li><a href="{}">{}</a> {} (attempt {}), running for {}</li>',
                rows,
            ),
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Worker | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Worker | None = None) -> bool:
        return False


def _held_back_by(job: Job, database: str) -> str | None:
    """
    What of a due job's limits lets it not start now, in words (None: it is
    under no limit). The verdict on each key is the claim's own
    (metrics.key_verdicts): this page only puts it in words.
    """
    keys = [key for key in (job.limit_key, job.shared_limit_key) if key]
    if not keys:
        return None
    verdicts = metrics.key_verdicts(keys, using=database)
    reasons = []
    for verdict in (verdicts[key] for key in keys if key in verdicts):
        limit = f"limit {verdict.name!r} (key {verdict.key})"
        if verdict.full:
            reasons.append(
                f"{limit} has all its {verdict.concurrency} slot(s) taken; "
                "it starts when one of them frees"
            )
        elif verdict.out_of_tokens:
            reasons.append(
                f"{limit} reached its rate of {verdict.rate} per {verdict.period:g} s; "
                f"its next start is allowed in {verdict.next_token_in:.2f} s"
            )
    if not reasons:
        return (
            f"Due, under limit key(s) {', '.join(keys)}, which have room: the next worker "
            "of its queue takes it (keys take turns)."
        )
    return "Held back: " + "; ".join(reasons) + "."
