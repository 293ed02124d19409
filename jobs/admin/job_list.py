"""
The job list: its paginator and its columns.

The list must stay fast on a table of millions of rows: it is always sorted
by the primary key (UUIDv7, so newest first is an index scan), its count is
an estimate, and its columns read nothing but the job's own row.
"""

import json
from datetime import datetime

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.utils import dateformat, timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..backend import current_task_path
from ..models import Job, JobStatus
from .charts import duration_text
from .reads import planner_estimate
from .text import cut, when

# Above this many rows the list shows an estimate rather than counting.
EXACT_COUNT_LIMIT = 10_000

# Characters of a job's arguments shown in the list, and on hover (a page
# of jobs with large arguments stays small).
LIST_ARGUMENTS_LENGTH = 40
LIST_ARGUMENTS_HOVER = 1000


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
        estimate = planner_estimate(queryset)
        if estimate > EXACT_COUNT_LIMIT:
            return estimate
        return queryset.order_by()[: EXACT_COUNT_LIMIT + 1].count()


class JobColumns:
    """
    The job list's columns, narrow enough for a 1366 px screen with the
    admin's sidebars open: one line a job, the long values cut (styles.html
    caps their width) with the whole of them on hover, the rest on the job's
    page.
    """

    @admin.display(description="id")
    def short_id(self, job: Job) -> SafeString:
        """
        The id's first 8 characters (the search takes them) and its last 4: ids
        are time-ordered, so jobs enqueued within a minute share their start.
        """
        full = str(job.id)
        return format_html('<span title="{}">{}…{}</span>', full, full[:8], full[-4:])

    @admin.display(description="status")
    def status_label(self, job: Job) -> SafeString:
        return format_html(
            '<span class="jobs-status jobs-status-{}">{}</span>', job.status.lower(), job.status
        )

    @admin.display(description="status")
    def status_and_attempts(self, job: Job) -> SafeString:
        """Status and attempts together: "FAILED 5/5" has run out of them, "READY 2/5" not."""
        return format_html(
            '{} <span class="jobs-attempts" title="attempts: {} of at most {}">{}</span>',
            self.status_label(job),
            job.attempts,
            job.max_attempts,
            self.attempts_label(job),
        )

    @admin.display(description="task")
    def task_name(self, job: Job) -> SafeString | str:
        """The task's name now: a job queued under an alias shows the task that answers to it."""
        current = current_task_path(job.task_path)
        if current == job.task_path:
            return current
        return format_html("{} (queued as {})", current, job.task_path)

    @admin.display(description="task")
    def task_short(self, job: Job) -> SafeString:
        """The task's function name; its whole path (and any alias it was queued as) on hover."""
        current = current_task_path(job.task_path)
        title = current if current == job.task_path else f"{current} (queued as {job.task_path})"
        return format_html('<span title="{}">{}</span>', title, current.rsplit(".", 1)[-1])

    @admin.display(description="queue")
    def queue_label(self, job: Job) -> SafeString:
        """The queue, and an arrow for a priority other than the default (its number on hover)."""
        if not job.priority:
            return format_html('<span title="{}">{}</span>', job.queue, job.queue)
        return format_html(
            '<span title="{}, priority {}">{}</span> <small title="priority {}">{}</small>',
            job.queue,
            job.priority,
            job.queue,
            job.priority,
            "↑" if job.priority > 0 else "↓",
        )

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
            cut(text, LIST_ARGUMENTS_HOVER),
            cut(text, LIST_ARGUMENTS_LENGTH),
        )

    @admin.display(description="attempts")
    def attempts_label(self, job: Job) -> str:
        return f"{job.attempts}/{job.max_attempts}"

    @admin.display(description="enqueued", ordering="id")
    def enqueued(self, job: Job) -> SafeString:
        """When, as short as tells it apart (compact_time); to the millisecond on hover."""
        return format_html(
            '<time datetime="{}" title="{}">{}</time>',
            job.enqueued_at.isoformat(),
            when(job.enqueued_at),
            compact_time(job.enqueued_at),
        )

    @admin.display(description="duration")
    def duration(self, job: Job) -> str:
        if job.started_at is None:
            return "—"
        end = job.finished_at or (timezone.now() if job.status == JobStatus.RUNNING else None)
        return duration_text((end - job.started_at).total_seconds()) if end else "—"


def compact_time(moment: datetime) -> str:
    """
    A moment in as few characters as a list column needs: the time of day
    today, the day earlier this year, the date before that.
    """
    local = timezone.localtime(moment)
    today = timezone.localdate()
    if local.date() == today:
        return dateformat.format(local, "H:i:s")
    if local.year == today.year:
        return dateformat.format(local, "M j")
    return dateformat.format(local, "Y-m-d")
