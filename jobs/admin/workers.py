"""The registered workers in the admin, read-only: a worker's row is its own to write."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from ..models import Worker
from .charts import duration_text
from .read_only import ReadOnlyAdmin
from .reads import running_jobs_of, with_jobs_in_flight

# RUNNING jobs listed on a worker's page.
WORKER_PAGE_JOBS = 100


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    """The registered workers with their jobs in flight; a worker's page lists them."""

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
        return with_jobs_in_flight(super().get_queryset(request))

    @admin.display(description="jobs in flight")
    def in_flight(self, worker: Worker) -> int:
        return worker.running

    @admin.display(description="last heartbeat, ago")
    def heartbeat_age(self, worker: Worker) -> str:
        return duration_text((timezone.now() - worker.last_heartbeat).total_seconds())

    @admin.display(description="jobs it runs now")
    def running_jobs(self, worker: Worker) -> SafeString | str:
        """The RUNNING jobs whose latest attempt is this worker's, longest running first."""
        now = timezone.now()
        rows = [
            (
                reverse("admin:jobs_job_change", args=[job.pk]),
                job.pk,
                job.task_path,
                job.attempts,
                duration_text((now - job.last_attempted_at).total_seconds()),
            )
            for job in running_jobs_of(worker, WORKER_PAGE_JOBS)
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
