"""
The queue's dashboard: backlog, throughput, latency and workers on one page.

The numbers come from jobs.metrics, the same queries as the Prometheus
endpoint, so the page and the alerts never disagree. It is an admin view of
the job admin (admin/jobs/job/dashboard/), linked from the admin index.
"""

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode

from .. import metrics
from ..models import JobStatus
from .charts import Segment, bar_chart, duration_text, throughput_chart

# Seconds between the page's reloads.
REFRESH_SECONDS = 10

# The admin's own index template comes before any app's (django.contrib.admin
# is listed first), so the link to the dashboard is added by a template of
# our own that extends it, unless the project chose an index template already.
if admin.site.index_template is None:
    admin.site.index_template = "admin/jobs/index.html"


def _changelist(**filters: str) -> str:
    url = reverse("admin:jobs_job_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def render(model_admin: admin.ModelAdmin, request: HttpRequest) -> TemplateResponse:
    """The dashboard page, read fresh on every request."""
    snapshot = metrics.snapshot()
    queues = snapshot.queues
    finished = sum(m.successful + m.failed + m.cancelled for m in snapshot.minutes)
    failed = sum(m.failed for m in snapshot.minutes)
    latency = snapshot.latency
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Jobs dashboard",
        "opts": model_admin.opts,
        "refresh_seconds": REFRESH_SECONDS,
        "snapshot": snapshot,
        "summary": [
            ("Due now", sum(q.ready for q in queues)),
            ("Running", sum(q.running for q in queues)),
            ("Finished, last hour", finished),
            ("Failed, last hour", failed),
            ("Per minute, last hour", f"{finished / 60:.1f}"),
            ("Latency p95", duration_text(latency.p95)),
        ],
        "queue_rows": [
            {
                "stats": q,
                "oldest": duration_text(q.oldest_ready_age),
                "ready_url": _changelist(queue=q.name, status__exact=JobStatus.READY),
                "running_url": _changelist(queue=q.name, status__exact=JobStatus.RUNNING),
                "failed_url": _changelist(queue=q.name, status__exact=JobStatus.FAILED),
            }
            for q in queues
        ],
        "throughput_chart": throughput_chart(snapshot.minutes),
        "backlog_chart": bar_chart(
            "Backlog per queue",
            [
                (
                    q.name,
                    [
                        Segment("ready", q.ready, f"{q.ready} due now"),
                        Segment("running", q.running, f"{q.running} running"),
                        Segment("scheduled", q.scheduled, f"{q.scheduled} scheduled later"),
                    ],
                )
                for q in queues
            ],
        ),
        "oldest_chart": bar_chart(
            "Wait of the oldest due job per queue",
            [
                (
                    q.name,
                    [Segment("age", q.oldest_ready_age or 0.0, duration_text(q.oldest_ready_age))],
                )
                for q in queues
            ],
            unit="s",
        ),
        "latency_chart": bar_chart(
            "Enqueue to start latency, last hour",
            [
                (name, [Segment("latency", value or 0.0, duration_text(value))])
                for name, value in (
                    ("p50", latency.p50),
                    ("p95", latency.p95),
                    ("p99", latency.p99),
                )
            ],
            unit="s",
        ),
        "workers": [
            {
                "stats": worker,
                "heartbeat": duration_text(worker.heartbeat_age),
                "url": reverse("admin:jobs_worker_change", args=[worker.id]),
            }
            for worker in snapshot.workers
        ],
        "changelist_url": _changelist(),
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/jobs/dashboard.html", context)
