"""
The job list's filters and search.

Each one is answered by an index: the time filter and an id search are
ranges of the time-ordered primary key, tags and meta use their partial GIN
indexes, and the filters' choices come from the backend's settings or the
most recent jobs, never from a scan of the table.
"""

import json
import uuid
from datetime import timedelta

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from .. import queries
from ..ids import task_id_range, uuid7_floor
from ..jsonb import unstorable
from .reads import recent_values

# A dot that a line may break after.
DOT_BREAK = mark_safe(".<wbr>")


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
        values = recent_values(self.sample_sql, self.sample_size)
        if self.value():
            values.add(self.value())
        return [(value, value) for value in sorted(values)]


class TaskFilter(RecentValuesFilter):
    title = "task"
    parameter_name = "task"
    sample_sql = queries.observe.RECENT_TASK_PATHS

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        """Task paths that wrap in the narrow filter column after a dot, not inside a name."""
        return [
            (value, format_html_join(DOT_BREAK, "{}", ((part,) for part in value.split("."))))
            for value, _ in super().lookups(request, model_admin)
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(task_path=self.value()) if self.value() else queryset


class TagFilter(RecentValuesFilter):
    title = "tag"
    parameter_name = "tag"
    sample_sql = queries.observe.RECENT_TAGS

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


class JobSearch:
    """The job list's search, for a ModelAdmin whose search_fields is the task path."""

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
            return with_meta(queryset, *_meta_term(term[5:])), False
        id_range = task_id_range(term) if term else None
        if id_range is None:
            return super().get_search_results(request, queryset, term)
        low, high = id_range
        queryset = queryset.filter(id__gte=low)
        return (queryset.filter(id__lt=high) if high else queryset), False


def _meta_term(term: str) -> tuple[str, object]:
    """The key and value of a meta: search, the value read as JSON where it is JSON jsonb holds."""
    key, _, text = term.partition("=")
    try:
        value = json.loads(text)
        # NaN and Infinity (1e999) read as floats; jsonb holds neither.
        json.dumps(value, allow_nan=False)
    except ValueError:
        value = text
    return key, value
