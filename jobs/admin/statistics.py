"""
Statistics per task: what each task did in the last hour and the last day.

Read from the finished jobs of the last day (jobs.metrics.task_statistics), so
the page costs what a day of jobs costs, whatever history the table keeps.
"""

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode

from .. import metrics
from ..models import JobStatus
from .charts import duration_text


def _rate(window: metrics.Window) -> str:
    rate = window.failure_rate
    return "—" if rate is None else f"{rate:.1%}"


def _row(stats: metrics.TaskStats) -> dict:
    jobs_url = reverse("admin:jobs_job_changelist")
    failed = {"task": stats.task_path, "status__exact": JobStatus.FAILED}
    return {
        "stats": stats,
        "jobs_url": f"{jobs_url}?{urlencode({'task': stats.task_path})}",
        "failed_url": f"{jobs_url}?{urlencode(failed)}",
        "windows": [
            {
                "window": window,
                "rate": _rate(window),
                "runtime": [duration_text(value) for value in window.runtime],
                "wait": duration_text(window.mean_wait),
            }
            for window in (stats.hour, stats.day)
        ],
        "last_failure_url": stats.last_failure_id
        and reverse("admin:jobs_job_change", args=[stats.last_failure_id]),
    }


def render(model_admin: admin.ModelAdmin, request: HttpRequest) -> TemplateResponse:
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Statistics per task",
        "opts": model_admin.opts,
        "rows": [_row(stats) for stats in metrics.task_statistics()],
        "dashboard_url": reverse("admin:jobs_job_dashboard"),
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/jobs/statistics.html", context)
