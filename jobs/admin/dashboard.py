"""
The queue's dashboard: backlog, throughput, latency and workers on one page.

The numbers come from jobs.metrics, the same queries as the Prometheus
endpoint, so the page and the alerts never disagree. It is an admin view of
the job admin (admin/jobs/job/dashboard/), linked from the Jobs app's admin
page and the job list on any admin site, and from the admin index of a site
whose index_template is "admin/jobs/index.html" (an opt-in: the app leaves a
project's admin templates as they are).

The page's live part (dashboard_live.html) is also served alone, as the
fragment its script fetches every LIVE_SECONDS and folds into the page: one
rendering of the numbers, whether reloaded or polled.
"""

import logging
import threading
import time
from datetime import datetime, timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends
from django.tasks.exceptions import InvalidTask
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from .. import metrics, operations, workflow_status
from ..ids import uuid7_floor
from ..models import Job, JobStatus, PausedQueue, Schedule
from ..scheduler.runner import unique_key
from ..schedules import TimingError
from .charts import Segment, bar_chart, duration_text, throughput_chart

logger = logging.getLogger("jobs.admin")

# Seconds between the page's reloads, when the browser runs no script.
REFRESH_SECONDS = 10

# Seconds between two fetches of a live page's live part by its script
# (live.js): the dashboard, and the job list and a workflow's page while
# their "Live" box is ticked.
LIVE_SECONDS = 2

# The live part's reads, shared by the dashboards of a process (_SharedReads):
# one a second at most, and no more than this share of the time.
SHARED_SECONDS = 1.0
READ_SHARE = 0.05

# Upcoming ticks shown per schedule.
NEXT_RUNS = 3

# A tick's job is enqueued as soon as a scheduler sees the tick due: its id
# (UUIDv7, the enqueue time) falls shortly after the tick, which bounds the
# search for it to a primary key range.
TICK_JOB_WINDOW = timedelta(hours=1)


def _changelist(**filters: str) -> str:
    url = reverse("admin:jobs_job_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def render(model_admin: admin.ModelAdmin, request: HttpRequest) -> TemplateResponse:
    """The dashboard page, read fresh on every request."""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Jobs dashboard",
        "opts": model_admin.opts,
        "refresh_seconds": REFRESH_SECONDS,
        "changelist_url": _changelist(),
        **_live_context(request, _shared.get(fresh=True)),
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/jobs/dashboard.html", context)


def render_live(model_admin: admin.ModelAdmin, request: HttpRequest) -> TemplateResponse:
    """
    The page's live part alone, for its script, from the shared reads.
    Without the admin's own context (the app list, the site's titles),
    which the fragment does not show.
    """
    request.current_app = model_admin.admin_site.name
    context = _live_context(request, _shared.get())
    return TemplateResponse(request, "admin/jobs/dashboard_live.html", context)


def _live_context(request: HttpRequest, reads: dict) -> dict:
    """The numbers, and what this user may see and do with them."""
    return {
        **reads,
        "live_seconds": LIVE_SECONDS,
        "schedules": reads["schedules"] if request.user.has_perm("jobs.view_schedule") else [],
        "can_run_schedules": request.user.has_perm("jobs.run_job_now"),
        "can_pause_queues": request.user.has_perm("jobs.pause_queue"),
    }


def _read() -> dict:
    """What the live part shows, the same for every user."""
    snapshot = metrics.snapshot()
    return {
        "read_at": timezone.now(),
        "snapshot": snapshot,
        "summary": _summary(snapshot),
        "queue_rows": _queue_rows(snapshot.queues),
        "paused_queues": [q for q in snapshot.queues if q.paused],
        **_charts(snapshot),
        "workers": [
            {
                "stats": worker,
                "heartbeat": duration_text(worker.heartbeat_age),
                "url": reverse("admin:jobs_worker_change", args=[worker.id]),
            }
            for worker in snapshot.workers
        ],
        "schedules": _schedules(),
        "workflows": [
            {
                "stats": workflow,
                "url": _changelist(q=f"workflow:{workflow.id}"),
                "page_url": reverse("admin:jobs_job_workflow", args=[workflow.id]),
            }
            for workflow in workflow_status.recent_workflows()
        ],
    }


class _SharedReads:
    """
    The live part's numbers, shared by every dashboard this process serves.

    A read counts every job that finished in the last hour (its charts),
    which a busy queue makes many: however many dashboards are open, this
    process reads at most once a SHARED_SECONDS, and after a slow read waits
    until the read's time is at most READ_SHARE of the time since it began.
    A page (a reload, the answer to a pause) reads afresh, and the
    dashboards that follow show that read.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict = {}
        self._until = 0.0

    def get(self, *, fresh: bool = False) -> dict:
        with self._lock:
            if fresh or time.monotonic() >= self._until:
                began = time.monotonic()
                self._reads = _read()
                took = time.monotonic() - began
                self._until = began + max(SHARED_SECONDS, took / READ_SHARE)
            return self._reads


_shared = _SharedReads()


def _summary(snapshot: metrics.Snapshot) -> list[tuple[str, object]]:
    """
    The numbers at the top of the page: the backlog now and the last hour.
    A paused queue's READY jobs are not due (no worker starts them): they
    are counted apart.
    """
    queues = snapshot.queues
    finished = sum(m.successful + m.failed + m.cancelled for m in snapshot.minutes)
    failed = sum(m.failed for m in snapshot.minutes)
    held = sum(q.ready for q in queues if q.paused)
    return [
        ("Due now", sum(q.ready for q in queues if not q.paused)),
        *([("Held by paused queues", held)] if any(q.paused for q in queues) else []),
        ("Running", sum(q.running for q in queues)),
        ("Finished, last hour", finished),
        ("Failed, last hour", failed),
        ("Per minute, last hour", f"{finished / 60:.1f}"),
        ("Latency p95", duration_text(snapshot.latency.p95)),
    ]


def _queue_rows(queues: list[metrics.QueueStats]) -> list[dict]:
    """Each queue with links to its jobs by status, and its pause if it is paused."""
    database = task_backends[DEFAULT_TASK_BACKEND_ALIAS].database
    pauses = {row.queue: row for row in PausedQueue.objects.using(database)}
    return [
        {
            "stats": q,
            "oldest": duration_text(q.oldest_ready_age),
            "ready_url": _changelist(queue=q.name, status__exact=JobStatus.READY),
            "running_url": _changelist(queue=q.name, status__exact=JobStatus.RUNNING),
            "failed_url": _changelist(queue=q.name, status__exact=JobStatus.FAILED),
            "pause": pauses.get(q.name),
        }
        for q in queues
    ]


def _queue_label(queue: metrics.QueueStats) -> str:
    return f"{queue.name} (paused)" if queue.paused else queue.name


def _charts(snapshot: metrics.Snapshot) -> dict[str, SafeString]:
    """The page's four charts: throughput, backlog, oldest wait and latency."""
    queues = snapshot.queues
    latency = snapshot.latency
    return {
        "throughput_chart": throughput_chart(snapshot.minutes),
        "backlog_chart": bar_chart(
            "Backlog per queue",
            [
                (
                    _queue_label(q),
                    [
                        Segment("paused", q.ready, f"{q.ready} held: the queue is paused")
                        if q.paused
                        else Segment("ready", q.ready, f"{q.ready} due now"),
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
                    _queue_label(q),
                    [
                        Segment(
                            "paused" if q.paused else "age",
                            q.oldest_ready_age or 0.0,
                            duration_text(q.oldest_ready_age),
                        )
                    ],
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
    }


def _tick_job(schedule: Schedule) -> Job | None:
    """The job of the schedule's latest tick, found by its unique key near the tick."""
    tick = schedule.last_run_at
    if tick is None:
        return None
    return (
        Job.objects.filter(
            id__gte=uuid7_floor(tick - timedelta(minutes=1)),
            id__lt=uuid7_floor(tick + TICK_JOB_WINDOW),
            unique_key=unique_key(schedule.id, tick),
        )
        .only("id", "status")
        .first()
    )


def _schedules() -> list[dict]:
    """Each schedule in words, with its next ticks and its latest tick's outcome."""
    rows = []
    for schedule in Schedule.objects.order_by("name"):
        next_runs: list[datetime] = []
        try:
            when = schedule.timing().describe()
        except TimingError as error:
            when = f"Invalid: {error}"
        else:
            next_runs = schedule.next_runs(NEXT_RUNS)
        job = _tick_job(schedule)
        rows.append(
            {
                "schedule": schedule,
                "when": when,
                "next_runs": next_runs,
                "last_job": job,
                "last_job_url": job and reverse("admin:jobs_job_change", args=[job.pk]),
                "url": reverse("admin:jobs_schedule_change", args=[schedule.pk]),
            }
        )
    return rows


def run_schedule_now(
    model_admin: admin.ModelAdmin, request: HttpRequest, schedule_id: int
) -> HttpResponseRedirect:
    """
    Enqueue one extra run of a schedule's task, due now (POST only).

    The schedule's own ticks are untouched: this job has no tick and no
    unique key, so the next tick still runs as planned.
    """
    if not request.user.has_perm("jobs.run_job_now"):
        raise PermissionDenied
    schedule = get_object_or_404(Schedule, pk=schedule_id)
    backend = task_backends[DEFAULT_TASK_BACKEND_ALIAS]
    try:
        task = backend.load_task(schedule.task_path).using(
            queue_name=schedule.queue, priority=schedule.priority
        )
        result = task.enqueue(*schedule.args, **schedule.kwargs)
    except (InvalidTask, TypeError) as error:
        model_admin.message_user(request, f"{schedule}: not enqueued: {error}", messages.ERROR)
    else:
        model_admin.log_change(request, schedule, f"Ran now: job {result.id}")
        model_admin.message_user(
            request, f"{schedule}: enqueued job {result.id}, due now.", messages.SUCCESS
        )
    return HttpResponseRedirect(reverse("admin:jobs_job_dashboard") + "#jobs-schedules")


def pause_or_resume_queue(
    model_admin: admin.ModelAdmin, request: HttpRequest
) -> HttpResponseRedirect:
    """
    Pause or resume the queue named in the POST, for every worker; logged in
    the admin's history as a change of the queue's pause row, and to the
    jobs.admin logger.
    """
    if not request.user.has_perm("jobs.pause_queue"):
        raise PermissionDenied
    queue, action = request.POST.get("queue", ""), request.POST.get("action")
    back = HttpResponseRedirect(
        reverse("admin:jobs_job_dashboard", current_app=model_admin.admin_site.name)
    )
    if action not in ("pause", "resume"):
        model_admin.message_user(request, "Nothing done: pause or resume?", messages.ERROR)
        return back
    who = request.user.get_username()
    pauses = PausedQueue.objects.using(task_backends[DEFAULT_TASK_BACKEND_ALIAS].database)
    # The row goes with the resume: kept here for the history's entry.
    row = pauses.filter(queue=queue).first()
    try:
        if action == "pause":
            changed = operations.pause_queue(queue, by=who)
            row = pauses.filter(queue=queue).first()
        else:
            changed = operations.resume_queue(queue)
    except ValueError as error:
        model_admin.message_user(request, f"Nothing done: {error}", messages.ERROR)
        return back
    if not changed:
        was = "paused" if action == "pause" else "not paused"
        model_admin.message_user(request, f"Queue {queue!r} was {was} already.", messages.INFO)
        return back
    if row is not None:
        model_admin.log_change(request, row, f"{action.capitalize()}d the queue")
    logger.info("Queue %r %sd from the admin by %s", queue, action, who)
    done = "paused: none of its jobs starts until it is resumed" if action == "pause" else "resumed"
    model_admin.message_user(request, f"Queue {queue!r} {done}.", messages.SUCCESS)
    return back
