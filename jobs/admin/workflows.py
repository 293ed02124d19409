"""
A workflow's page in the admin: its name, how far it got, each of its jobs
in graph order with its status, attempts, progress and error, and what an
operator does to a workflow that went wrong: cancel what has not run, retry
the steps that failed.

Both go through jobs.operations, as the job list's actions do, and need the
same permissions. The cancel takes the WAITING jobs first: a batch's
callback cancelled after its members would be made due by their cancels
(it runs "on finish") before its own cancel came. A retried step makes
the jobs that were cancelled because it failed wait for it again
(jobs.transitions.retry), so the failed steps alone are retried.
"""

import uuid

from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from .. import operations
from ..exceptions import JobStateError
from ..models import Dependency, Job, JobStatus
from ..progress import progress_of
from ..workflow_status import workflow_jobs, workflow_stats
from .actions import backend_alias, cancel
from .charts import duration_text
from .dashboard import LIVE_SECONDS
from .workflow_graph import MOST_JOBS_DRAWN, workflow_graph

# What an operator may do to a workflow: the permission, the jobs it acts
# on, in the order it acts, the operation and what the log says.
WORKFLOW_OPERATIONS = {
    "cancel": ("cancel", (JobStatus.WAITING, JobStatus.READY), cancel, "Cancelled"),
    "retry": ("retry", (JobStatus.FAILED,), operations.retry, "Retried"),
}


class WorkflowPages:
    """The workflow page and its two operations; mixed into JobAdmin."""

    def workflow_view(self, request: HttpRequest, workflow_id: str) -> TemplateResponse:
        jobs = list(workflow_jobs(_workflow_uuid(workflow_id)))
        stats = workflow_stats(jobs)
        if stats is None:
            raise Http404(f"No workflow with id {workflow_id}: its jobs may have been pruned.")
        rows = [
            {
                "job": job,
                "url": reverse("admin:jobs_job_change", args=[job.pk]),
                "progress": progress_of(job),
                "error": (job.errors[-1].get("message", "") if job.errors else "").split("\n")[0],
                "duration": duration_text(
                    (job.finished_at - job.started_at).total_seconds()
                    if job.finished_at and job.started_at
                    else None
                ),
            }
            for job in jobs
        ]
        statuses = {job.status for job in jobs}
        edges = Dependency.objects.using(jobs[0]._state.db).filter(
            child_id__in=[job.pk for job in jobs]
        )
        graph = workflow_graph(
            jobs, list(edges), lambda job: reverse("admin:jobs_job_change", args=[job.pk])
        )
        context = {
            **self.admin_site.each_context(request),
            "title": stats.label,
            "opts": self.opts,
            "stats": stats,
            "rows": rows,
            "graph": graph,
            "most_drawn": MOST_JOBS_DRAWN,
            "dashboard_url": reverse("admin:jobs_job_dashboard"),
            "live_seconds": LIVE_SECONDS,
            "jobs_url": reverse("admin:jobs_job_changelist") + f"?q=workflow:{stats.id}",
            "can_cancel": self.has_cancel_permission(request)
            and bool(statuses & {JobStatus.WAITING, JobStatus.READY}),
            "can_retry": self.has_retry_permission(request) and JobStatus.FAILED in statuses,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/jobs/workflow.html", context)

    def workflow_operation_view(
        self, request: HttpRequest, workflow_id: str, name: str
    ) -> HttpResponse:
        """Cancel what has not run, or retry the failed steps (POST only)."""
        permission, statuses, operation, done = WORKFLOW_OPERATIONS.get(name, (None,) * 4)
        if permission is None or not getattr(self, f"has_{permission}_permission")(request):
            raise PermissionDenied
        targets = (
            workflow_jobs(_workflow_uuid(workflow_id))
            .filter(status__in=statuses)
            .annotate(later=ExpressionWrapper(~Q(status=JobStatus.WAITING), BooleanField()))
            .order_by("later", "id")
        )
        changed = []
        for job in targets:
            try:
                operation(str(job.pk), backend=backend_alias(job.backend))
            except JobStateError:
                continue
            changed.append(job.pk)
        LogEntry.objects.log_actions(
            request.user.pk, Job.objects.filter(id__in=changed), CHANGE, f"{done} (workflow)"
        )
        self.message_user(
            request,
            f"{done}: {len(changed)} job{'s' if len(changed) != 1 else ''} of the workflow.",
            messages.SUCCESS if changed else messages.WARNING,
        )
        return HttpResponseRedirect(reverse("admin:jobs_job_workflow", args=[workflow_id]))


def _workflow_uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise Http404(f"{text!r} is not a workflow's id.") from None
