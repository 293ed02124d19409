"""
A job's page: why it waits, its progress, its timeline, its workflow, what it
was called with and what came of it.

It opens on an overview (status, task, attempts, times, progress, the last
error) that fits a laptop's first screen; what only some jobs have is left
out of the others' pages, and sections with nothing in them are folded.

Each field reads the job's row, or a few rows an index finds (its workflow,
its limit keys, its worker), so the page costs the same on any size of table.
"""

from datetime import datetime

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.tasks import task_backends
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from .. import metrics
from ..backend import current_task_path
from ..models import Dependency, Job, JobStatus, PausedQueue, Worker
from ..progress import progress_of
from .actions import backend_alias
from .charts import duration_text
from .reads import workflow_counts
from .text import cut, moment, pretty_json, when

# Jobs a workflow's job lists as its parents or children; the rest are a link away.
LINKED_JOBS = 20

# Characters of the last error's message in the overview; all of it is under Errors.
OVERVIEW_ERROR_LENGTH = 300

# Sections of the page that would say nothing about some jobs: left out of theirs.
SECTION_SHOWN = {
    "Errors": lambda job: bool(job.errors),
    "Result": lambda job: job.status == JobStatus.SUCCESSFUL,
    "Workflow": lambda job: job.workflow_id is not None,
}

# Sections whose fields are all empty for some jobs: folded on theirs, named so.
SECTION_EMPTY = {
    "Arguments": lambda job: not job.args and not job.kwargs,
    "Keys, tags and meta": lambda job: (
        not (job.unique_key or job.limit_key or job.shared_limit_key or job.tags or job.meta)
    ),
    "Workers": lambda job: not job.worker_ids,
}

# Lines of the overview that only some jobs have.
OVERVIEW_LINES = {
    "progress_bar": lambda job: progress_of(job) is not None,
    "last_error": lambda job: bool(job.errors),
}


class JobFields:
    """The fields of a job's page, but for its workflow's."""

    def get_fieldsets(self, request: HttpRequest, obj: Job | None = None) -> tuple:
        """The page's sections for this job (SECTION_SHOWN, SECTION_EMPTY, OVERVIEW_LINES)."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        sections = []
        for name, options in fieldsets:
            if name in SECTION_SHOWN and not SECTION_SHOWN[name](obj):
                continue
            fields = tuple(
                line
                for line in options["fields"]
                if line not in OVERVIEW_LINES or OVERVIEW_LINES[line](obj)
            )
            classes = options.get("classes", ())
            if name in SECTION_EMPTY and SECTION_EMPTY[name](obj):
                name, classes = f"{name} (none)", (*classes, "collapse")
            sections.append((name, {**options, "fields": fields, "classes": classes}))
        return tuple(sections)

    @admin.display(description="enqueued")
    def enqueued_time(self, job: Job) -> str:
        return when(job.enqueued_at)

    @admin.display(description="started")
    def started_time(self, job: Job) -> str:
        """Its first attempt's start; the timeline has the others'."""
        return when(job.started_at) if job.started_at else self.get_empty_value_display()

    @admin.display(description="finished")
    def finished_time(self, job: Job) -> str:
        return when(job.finished_at) if job.finished_at else self.get_empty_value_display()

    @admin.display(description="last error")
    def last_error(self, job: Job) -> SafeString | str:
        """
        What the latest failed attempt raised: its message's first line (a
        database error's next ones quote the SQL); the rest and the traceback
        are under Errors.
        """
        if not job.errors:
            return self.get_empty_value_display()
        error = job.errors[-1]
        lines = str(error.get("message", "")).splitlines() or [""]
        headline = lines[0] + (" …" if len(lines) > 1 else "")
        return format_html(
            '<span class="jobs-last-error"><strong>{}</strong>: {}</span> '
            '<span class="jobs-quiet">(attempt {}; <a href="#jobs-errors">traceback</a>)</span>',
            error.get("exception_class_path", "").rsplit(".", 1)[-1] or "Error",
            cut(headline, OVERVIEW_ERROR_LENGTH),
            error.get("attempt", "?"),
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
        database = task_backends[backend_alias(job.backend)].database
        pause = PausedQueue.objects.using(database).filter(queue=job.queue).first()
        if pause is not None:
            since = when(pause.paused_at)
            by = f" by {pause.paused_by}" if pause.paused_by else ""
            return (
                f"Queue {job.queue!r} is paused (since {since}{by}): no job of it starts "
                "until it is resumed."
            )
        if job.run_at > timezone.now():
            return f"Not due until {when(job.run_at)}."
        if held := held_back_by(job, database):
            return held
        return "Due: the next worker of its queue with room takes it."

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

    @admin.display(description="args")
    def args_json(self, job: Job) -> SafeString:
        return pretty_json(job.args)

    @admin.display(description="kwargs")
    def kwargs_json(self, job: Job) -> SafeString:
        return pretty_json(job.kwargs)

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
        return pretty_json(job.meta) if job.meta else self.get_empty_value_display()

    @admin.display(description="return value")
    def return_value_json(self, job: Job) -> SafeString | str:
        if job.status != JobStatus.SUCCESSFUL:
            return self.get_empty_value_display()
        return pretty_json(job.return_value)

    @admin.display(description="errors")
    def errors_html(self, job: Job) -> SafeString | str:
        if not job.errors:
            return "—"
        return format_html('<div id="jobs-errors">{}</div>', _error_entries(job.errors))

    @admin.display(description="timeline")
    def timeline(self, job: Job) -> SafeString:
        return format_html(
            '<ol class="jobs-timeline">{}</ol>',
            format_html_join(
                "",
                "<li><time>{}</time> <span>+{}</span> {}</li>",
                (
                    (when(at), duration_text((at - job.enqueued_at).total_seconds()), label)
                    for at, label in _events(job)
                ),
            ),
        )


def _error_entries(errors: list[dict]) -> SafeString:
    """Each attempt's error: when, what, on which worker, what came of it, and its traceback."""
    return format_html_join(
        "",
        '<div class="jobs-error"><p><strong>Attempt {}</strong> · {} · {} · worker {}</p>'
        '<p class="jobs-error-message">{}</p><p>{}</p><pre>{}</pre></div>',
        (
            (
                error.get("attempt", "?"),
                when(moment(error.get("at"))) if error.get("at") else "—",
                error.get("exception_class_path", ""),
                error.get("worker_id") or "—",
                error.get("message", ""),
                # What the attempt led to, and by which retry policy.
                error.get("retry", ""),
                error.get("traceback") or "(no traceback)",
            )
            for error in errors
        ),
    )


def _events(job: Job) -> list[tuple[datetime, str]]:
    """What happened to a job, in order: enqueued, due, each attempt, the outcome or the next."""
    events: list[tuple[datetime, str]] = [(job.enqueued_at, "enqueued")]
    if job.run_at > job.enqueued_at and job.started_at is None:
        events.append((job.run_at, "due"))
    if job.started_at:
        events.append((job.started_at, "attempt 1 started"))
    for error in job.errors:
        at = moment(error.get("at"))
        if at:
            name = error.get("exception_class_path", "").rsplit(".", 1)[-1]
            retry = f"; {error['retry']}" if error.get("retry") else ""
            events.append((at, f"attempt {error.get('attempt', '?')} ended: {name}{retry}"))
    for snooze in job.snoozes or ():
        if at := moment(snooze.get("at")):
            seconds = snooze.get("seconds", 0)
            events.append((at, f"attempt {snooze.get('attempt', '?')} snoozed for {seconds:g} s"))
    if job.last_attempted_at and job.attempts > 1:
        events.append((job.last_attempted_at, f"attempt {job.attempts} started"))
    events.sort(key=lambda event: event[0])
    # The outcome comes last even when an error entry was stamped a moment later.
    if job.finished_at:
        events.append((job.finished_at, job.status.lower()))
    elif job.status == JobStatus.READY and job.attempts:
        events.append((job.run_at, f"attempt {job.attempts + 1} due"))
    return events


def held_back_by(job: Job, database: str) -> str | None:
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


class WorkflowFields:
    """A workflow's job's section of its page: the workflow's progress and the jobs it links."""

    @admin.display(description="workflow")
    def workflow_progress(self, job: Job) -> SafeString | str:
        """Its workflow's jobs by status: done, failed, total, with a bar and a link to them."""
        if job.workflow_id is None:
            return self.get_empty_value_display()
        counts = workflow_counts(job)
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
