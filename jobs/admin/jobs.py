"""
Jobs in the admin: the job list, a job's page, the operations on jobs, and
the dashboard's pages, which are views of the job admin.

JobAdmin holds the configuration and the URLs; what each part shows or does
is in its own module: job_list (paginator and columns), filters (filters and
search), job_page (a job's fields), actions (retry, cancel, run now, delete),
dashboard and statistics (their pages).
"""

from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from ..models import Job
from . import dashboard, statistics
from .actions import JobActions
from .filters import EnqueuedFilter, JobSearch, QueueFilter, TagFilter, TaskFilter
from .job_list import EstimatedCountPaginator, JobColumns
from .job_page import JobFields, WorkflowFields
from .workflows import WorkflowPages


@admin.register(Job)
class JobAdmin(
    JobActions, WorkflowPages, JobFields, WorkflowFields, JobColumns, JobSearch, admin.ModelAdmin
):
    """The job browser: read-only rows, changed only through the queue's operations."""

    list_display = (
        "short_id",
        "status_and_attempts",
        "task_short",
        "queue_label",
        "arguments",
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
    # A job's page opens on what an operator looks at first; job_page.JobFields
    # leaves out the lines and sections that say nothing for the job at hand.
    fieldsets = (
        (
            None,
            {
                "classes": ("jobs-overview",),
                "fields": (
                    ("status_label", "task_link", "queue", "priority", "attempts_label"),
                    "last_error",
                    ("enqueued_time", "started_time", "finished_time", "duration"),
                    "waiting_reason",
                    "progress_bar",
                ),
            },
        ),
        ("Errors", {"fields": ("errors_html",)}),
        ("Result", {"fields": ("return_value_json",)}),
        ("Timeline", {"fields": ("timeline",)}),
        ("Workflow", {"fields": ("workflow_progress", "waits_for", "waited_for_by")}),
        ("Arguments", {"fields": ("args_json", "kwargs_json")}),
        (
            "Keys, tags and meta",
            {
                "fields": (
                    ("unique_key", "limit_key", "shared_limit_key"),
                    "tags_list",
                    "meta_json",
                )
            },
        ),
        ("Workers", {"fields": (("worker_link", "worker_history"),)}),
        ("Details", {"fields": (("id", "timeout", "retention", "backend"),)}),
    )
    readonly_fields = tuple(flatten_fieldsets(fieldsets))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        """The job list, with a link to the dashboard."""
        extra_context = {
            **(extra_context or {}),
            "dashboard_url": self._dashboard_url(),
            "live_seconds": dashboard.LIVE_SECONDS,
        }
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(self.dashboard_view), name=f"{info}_dashboard"),
            path("dashboard/live/", wrap(self.dashboard_live_view), name=f"{info}_dashboard_live"),
            path(
                "dashboard/schedules/<int:schedule_id>/run-now/",
                wrap(require_POST(self.run_schedule_now_view)),
                name=f"{info}_run_schedule_now",
            ),
            path("dashboard/tasks/", wrap(self.statistics_view), name=f"{info}_statistics"),
            path(
                "workflows/<str:workflow_id>/",
                wrap(self.workflow_page_view),
                name=f"{info}_workflow",
            ),
            path(
                "workflows/<str:workflow_id>/<slug:name>/",
                wrap(require_POST(self.workflow_operation_view)),
                name=f"{info}_workflow_operation",
            ),
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

    def dashboard_live_view(self, request: HttpRequest) -> TemplateResponse:
        """The dashboard's live part, which its script fetches (never cached: admin_view)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return dashboard.render_live(self, request)

    def workflow_page_view(self, request: HttpRequest, workflow_id: str) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return self.workflow_view(request, workflow_id)

    def statistics_view(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return statistics.render(self, request)

    def run_schedule_now_view(self, request: HttpRequest, schedule_id: int) -> HttpResponse:
        return dashboard.run_schedule_now(self, request, schedule_id)

    def pause_queue_view(self, request: HttpRequest) -> HttpResponse:
        return dashboard.pause_or_resume_queue(self, request)
