"""Paused queues: from Python, the command line and the admin, held by every worker."""

import ast
import io
import json
import re
import time
import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from jobs import metrics, operations
from jobs.models import Job, JobStatus, PausedQueue
from jobs.worker.database import QueueDatabase
from tests.conftest import fetch_value, wait_until
from tests.docs.pages import python_blocks, section
from tests.tasks import add, sleep_for

pytestmark = pytest.mark.django_db


def test_pause_and_resume_say_whether_they_changed_anything():
    assert operations.pause_queue("reports", by="ops") is True
    assert operations.pause_queue("reports", by="someone else") is False
    [paused] = operations.paused_queues()
    assert (paused.queue, paused.paused_by) == ("reports", "ops")
    assert operations.resume_queue("reports") is True
    assert operations.resume_queue("reports") is False
    assert operations.paused_queues() == []


def values_shown(block: str) -> list:
    """Run the block statement by statement, as a shell would; the value of each expression."""
    namespace, values = {}, []
    for statement in ast.parse(block).body:
        if isinstance(statement, ast.Expr):
            expression = compile(ast.Expression(statement.value), "<docs>", "eval")
            values.append(eval(expression, namespace))
        else:
            exec(compile(ast.Module([statement], type_ignores=[]), "<docs>", "exec"), namespace)
    return values


def test_the_docs_example_pauses_and_resumes_its_queue_and_lists_the_paused_ones():
    [block] = python_blocks(section("Pausing a queue"))
    operations.pause_queue("reports", by="night shift")
    paused, resumed, rows = values_shown(block)
    # It paused "communications", which was not paused, and resumed it.
    assert (paused, resumed) == (True, True)
    assert [(row.queue, row.paused_by) for row in rows] == [("reports", "night shift")]
    assert rows[0].paused_at <= timezone.now()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "non-empty string"),
        (None, "non-empty string"),
        ("emails", "Unknown queue 'emails'"),
    ],
)
def test_a_queue_that_cannot_be_is_refused_by_name(name, message):
    with pytest.raises(ValueError, match=message):
        operations.pause_queue(name)
    assert PausedQueue.objects.count() == 0


def test_a_queue_paused_then_taken_out_of_queues_can_still_be_resumed():
    PausedQueue.objects.create(queue="retired", paused_at=timezone.now())
    with pytest.raises(ValueError, match="Unknown queue 'retired'"):
        operations.pause_queue("retired")
    assert operations.resume_queue("retired") is True


def test_a_name_postgres_cannot_hold_is_refused_where_any_queue_goes(settings):
    settings.TASKS = {"default": {"BACKEND": "jobs.backend.PostgresBackend", "QUEUES": []}}
    with pytest.raises(ValueError, match="at most 100 characters"):
        operations.pause_queue("q" * 101)
    with pytest.raises(ValueError, match="cannot hold"):
        operations.pause_queue("nul\x00")
    assert operations.pause_queue("any-name") is True


@pytest.mark.django_db(transaction=True)
def test_the_claim_and_the_next_due_time_leave_a_paused_queue_alone():
    # Due jobs of a paused queue are neither claimed nor counted as due: the
    # worker sleeps instead of claiming in a loop.
    add.using(queue_name="reports").enqueue(1, 1)
    db = QueueDatabase("default", [])
    db.connect()
    try:
        operations.pause_queue("reports")
        assert db.claim("test-worker", 10) == []
        assert db.seconds_until_next_due() is None
        operations.resume_queue("reports")
        assert db.seconds_until_next_due() <= 0
        [claimed] = db.claim("test-worker", 10)
        assert claimed.queue == "reports"
    finally:
        db.close()


@pytest.mark.django_db(transaction=True)
def test_a_paused_queue_starts_nothing_through_a_restart_and_resumed_runs_its_backlog(
    start_worker,
):
    jobs = [r.id for r in sleep_for.using(queue_name="reports").enqueue_many([((0.05,), {})] * 80)]
    other = add.enqueue(2, 3)
    worker = start_worker("--concurrency", "2")
    done = Job.objects.filter(id__in=jobs, status=JobStatus.SUCCESSFUL)
    wait_until(lambda: done.count() >= 5)

    operations.pause_queue("reports")
    paused_at = fetch_value("SELECT now()")
    running = Job.objects.filter(queue="reports", status=JobStatus.RUNNING)
    wait_until(lambda: not running.exists())
    waiting = Job.objects.filter(id__in=jobs, status=JobStatus.READY).count()
    assert waiting > 0
    # Nothing to wait for here but time: a second in which nothing may start.
    time.sleep(1.0)
    assert Job.objects.filter(id__in=jobs, status=JobStatus.READY).count() == waiting
    late = Job.objects.filter(id__in=jobs, last_attempted_at__gt=paused_at).count()
    assert late == 0, f"{late} jobs claimed after the pause"
    # Other queues go on.
    wait_until(lambda: Job.objects.get(id=other.id).status == JobStatus.SUCCESSFUL)

    assert worker.stop() == 0
    start_worker("--concurrency", "2")
    time.sleep(0.5)
    assert Job.objects.filter(id__in=jobs, status=JobStatus.READY).count() == waiting

    operations.resume_queue("reports")
    wait_until(lambda: done.count() == len(jobs))
    # Jobs given back at the pause spent no attempt.
    assert set(Job.objects.filter(id__in=jobs).values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_the_command_pauses_lists_and_resumes(capsys):
    add.using(queue_name="reports").enqueue(1, 1)
    call_command("jobs", "queues", "pause", "reports", "--by", "night shift")
    out = capsys.readouterr().out
    assert "Queue 'reports' paused." in out
    call_command("jobs", "queues", "pause", "reports")
    assert "was paused already" in capsys.readouterr().out
    call_command("jobs", "queues")
    listing = capsys.readouterr().out
    [line] = [line for line in listing.splitlines() if line.startswith("reports")]
    assert "PAUSED since" in line and "by night shift" in line
    assert line.split()[1] == "1"
    [row] = [row for row in json.loads(call_json("queues", "list")) if row["queue"] == "reports"]
    assert (row["due"], row["paused_by"]) == (1, "night shift")
    call_command("jobs", "queues", "resume", "reports")
    assert "Queue 'reports' resumed." in capsys.readouterr().out
    call_command("jobs", "queues", "list")
    assert "active" in capsys.readouterr().out


def call_json(*args: str) -> str:
    out = io.StringIO()
    call_command("jobs", *args, "--json", stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pause"], "the following arguments are required: queue"),
        (["pause", "emails"], "Unknown queue 'emails'"),
        (["list", "reports"], "unrecognized arguments: reports"),
    ],
)
def test_the_command_refuses_bad_input_by_name(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("jobs", "queues", *args)


def test_the_command_refuses_a_backend_it_does_not_have():
    with pytest.raises(CommandError, match="No task backend 'nope'"):
        call_command("jobs", "--backend", "nope", "queues", "resume", "reports")


@pytest.mark.django_db(transaction=True)
def test_the_queues_command_says_it_is_deprecated_and_does_the_same(capsys):
    call_command("queues", "pause", "reports", "--by", "night shift")
    out, err = capsys.readouterr()
    assert "Queue 'reports' paused." in out
    assert err == (
        "`manage.py queues` is deprecated: use `manage.py jobs queues`, which does the same.\n"
    )
    assert PausedQueue.objects.get().paused_by == "night shift"
    call_command("queues")
    assert "PAUSED since" in capsys.readouterr().out
    call_command("queues", "resume", "reports")
    assert not PausedQueue.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pause"], r"Name the queue\(s\) to pause"),
        (["pause", "emails"], "Unknown queue 'emails'"),
        (["list", "reports"], "list takes no queue names"),
        (["resume", "reports", "--backend", "nope"], "No task backend 'nope'"),
    ],
)
def test_the_deprecated_queues_command_refuses_bad_input_as_it_did(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("queues", *args, stderr=io.StringIO())


def test_the_dashboard_pauses_and_resumes_for_those_allowed(client, admin_client):
    url = reverse("admin:jobs_job_pause_queue")
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_job"))
    client.force_login(viewer)
    assert client.post(url, {"queue": "reports", "action": "pause"}).status_code == 403
    dashboard = client.get(reverse("admin:jobs_job_dashboard")).content.decode()
    assert 'value="pause"' not in dashboard
    assert PausedQueue.objects.count() == 0

    response = admin_client.post(url, {"queue": "reports", "action": "pause"}, follow=True)
    assert "Queue &#x27;reports&#x27; paused" in response.content.decode()
    assert PausedQueue.objects.get().paused_by == "admin"
    page = admin_client.get(reverse("admin:jobs_job_dashboard")).content.decode()
    assert "<strong>Paused</strong> since" in page and 'value="resume"' in page
    admin_client.post(url, {"queue": "reports", "action": "resume"})
    assert PausedQueue.objects.count() == 0
    assert [entry.change_message for entry in LogEntry.objects.order_by("id")] == [
        "Paused the queue",
        "Resumed the queue",
    ]
    refused = admin_client.post(url, {"queue": "emails", "action": "pause"}, follow=True)
    assert "Nothing done: Unknown queue" in refused.content.decode()


# Committed: in the test's own transaction, now() is older than the jobs' run_at.
@pytest.mark.django_db(transaction=True)
def test_the_dashboard_counts_a_paused_queues_jobs_as_held_not_due(admin_client):
    for _ in range(3):
        add.using(queue_name="reports").enqueue(1, 1)
    add.enqueue(1, 1)
    operations.pause_queue("reports")
    page = admin_client.get(reverse("admin:jobs_job_dashboard")).content.decode()
    summary = dict(re.findall(r"<li><strong>([^<]*)</strong>([^<]*)</li>", page))
    assert summary["1"] == "Due now", summary
    assert summary["3"] == "Held by paused queues"
    # Said first, before the charts, not only in the queues' table below them.
    notice = page.index('id="jobs-paused-notice"')
    assert notice < page.index('id="jobs-charts"')
    assert "reports (3 jobs held)" in page[notice : page.index("</p>", notice)]
    assert '<rect class="bar paused"' in page and "3 held: the queue is paused" in page
    assert ">reports (paused)<" in page

    operations.resume_queue("reports")
    page = admin_client.get(reverse("admin:jobs_job_dashboard")).content.decode()
    summary = dict(re.findall(r"<li><strong>([^<]*)</strong>([^<]*)</li>", page))
    assert summary["4"] == "Due now" and "Held by paused queues" not in page
    assert 'id="jobs-paused-notice"' not in page


def test_metrics_say_which_queues_are_paused():
    operations.pause_queue("reports")
    queues = {queue.name: queue for queue in metrics.snapshot().queues}
    assert queues["reports"].paused and not queues["default"].paused
    body = metrics.render_prometheus(metrics.snapshot(), metrics.totals_by_status())
    assert 'jobs_queue_paused{queue="reports"} 1\n' in body
    assert 'jobs_queue_paused{queue="default"} 0\n' in body


def test_a_ready_jobs_page_says_why_it_waits(admin_client):
    job = add.using(queue_name="reports").enqueue(1, 1)
    later = add.using(countdown=3600).enqueue(1, 1)
    done = Job.objects.create(
        id=uuid.uuid4(), task_path="tests.tasks.add", status=JobStatus.SUCCESSFUL,
        run_at=timezone.now(), enqueued_at=timezone.now(),
    )  # fmt: skip

    def waiting(job_id) -> str:
        page = admin_client.get(reverse("admin:jobs_job_change", args=[job_id])).content.decode()
        return re.search(
            r"<label>Waiting:</label>\s*<div class=\"readonly\">(.*?)</div>", page
        ).group(1)

    assert waiting(job.id).startswith("Due: the next worker")
    assert waiting(later.id).startswith("Not due until")
    assert waiting(done.id) == "—"
    operations.pause_queue("reports", by="ops")
    assert waiting(job.id).startswith("Queue &#x27;reports&#x27; is paused (since ")
    assert "by ops): no job of it starts until it is resumed." in waiting(job.id)
