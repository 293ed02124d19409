"""
What an operator may do to jobs: retry, cancel, run now and delete, on the
ticked jobs, on every job the filter matches, or on one job from its page.

Every change goes through jobs.operations (and so jobs.transitions), never a
write of jobs_job here: a cancel frees the job's slots, a delete cancels a
live job first, a retry recounts the jobs that wait for it. Each needs its
own permission, is written to the admin log, and an action the user lacks
is answered 403 even when the form is forged.
"""

import uuid
from typing import Protocol

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from .. import operations
from ..exceptions import JobStateError
from ..models import Job, JobStatus


class Operation(Protocol):
    """One of jobs.operations on one job, through the backend (a TASKS alias) of its row."""

    def __call__(self, job_id: str, *, backend: str) -> object: ...


def backend_alias(job_backend: str) -> str:
    """
    The TASKS alias to operate on a job through: the one its row was enqueued
    with, or the default when the settings no longer have that alias (a row
    outlives a renamed backend).
    """
    return job_backend if job_backend in task_backends.settings else DEFAULT_TASK_BACKEND_ALIAS


def cancel(job_id: str, *, backend: str) -> None:
    operations.cancel(job_id, reason="Cancelled from the admin", backend=backend)


def page_operations() -> dict[str, tuple[str, Operation, str]]:
    """
    The operations of a job's page by name: the permission each needs, the
    operation, and what the log says. Looked up in jobs.operations at each
    request, as the actions do.
    """
    return {
        "retry": ("retry", operations.retry, "Retried"),
        "cancel": ("cancel", cancel, "Cancelled"),
        "run-now": ("run_now", operations.run_now, "Run now"),
    }


class JobActions:
    """The job list's actions and the buttons of a job's page."""

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.retry_job")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.cancel_job")

    def has_run_now_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.run_job_now")

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
                operation(str(job_id), backend=backend_alias(job_backend))
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
        self._apply(request, live, cancel, "Cancelled")

    @admin.action(description="Run selected jobs now", permissions=["run_now"])
    def run_jobs_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset.filter(status=JobStatus.READY), operations.run_now, "Run now")

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
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        """A job's page, with a button for each operation its status allows and the user may run."""
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

    def operation_view(self, request: HttpRequest, object_id: str, name: str) -> HttpResponse:
        """Retry, cancel or run now one job from its page (POST only)."""
        permission, operation, done = page_operations().get(name, (None, None, None))
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
            operation(str(job.pk), backend=backend_alias(job.backend))
        except JobStateError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            self.log_change(request, job, done)
            self.message_user(request, f"{done}: {job}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))
