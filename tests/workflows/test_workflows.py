"""
Workflows (jobs.workflows): chains, groups and batches with callbacks, each
dependant moved once, in the transaction of its last parent's fenced outcome.
"""

import importlib
import signal
import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.tasks import TaskResultStatus
from django.tasks.exceptions import InvalidTask
from django.utils import timezone

from jobs import operations, tracing
from jobs.models import Dependency, Job, JobStatus
from jobs.progress import Progress, get_progress
from jobs.testing import run_due_jobs
from jobs.workflows import batch, chain, group, step
from tests.conftest import fetch, wait_until
from tests.docs.pages import python_blocks, section
from tests.tasks import add, batch_callback, batch_member, chain_link, fail

pytestmark = pytest.mark.django_db


def job(result) -> Job:
    return Job.objects.get(id=result.id)


# The graph, run in this process (jobs.testing, the worker's statements).


def test_a_chain_runs_in_order_and_passes_each_return_value_on(ledger):
    enqueued = chain(step(add, 1, 2), step(add, 10), step(add, 100)).enqueue()
    first, second, third = enqueued.results
    assert [job(r).status for r in enqueued.results] == ["READY", "WAITING", "WAITING"]
    # Waiting reads as READY through Django's API.
    assert add.get_result(second.id).status == TaskResultStatus.READY
    run_due_jobs()
    assert [add.get_result(r.id).return_value for r in enqueued.results] == [3, 13, 113]
    assert add.get_result(third.id).args == [13, 100]
    assert job(first).finished_at <= job(second).started_at
    assert job(second).finished_at <= job(third).started_at


def test_a_step_alone_is_not_given_the_previous_value():
    enqueued = chain(step(add, 1, 2), step(add, 5, 6).alone()).enqueue()
    run_due_jobs()
    assert add.get_result(enqueued.results[1].id).return_value == 11


def test_a_batch_gives_its_success_callback_the_results_in_order(ledger):
    enqueued = batch(
        [step(add, n, 0) for n in range(5)],
        on_success=step(batch_callback, label="success"),
        on_failure=step(batch_callback, label="failure"),
        on_finish=step(batch_callback, label="finish"),
    ).enqueue()
    run_due_jobs()
    success, failure, finish = enqueued.results[5:]
    assert batch_callback.get_result(success.id).args == [[0, 1, 2, 3, 4]]
    assert job(success).status == JobStatus.SUCCESSFUL
    assert job(failure).status == JobStatus.CANCELLED
    assert "every job it waited for succeeded" in job(failure).errors[0]["message"]
    outcomes = batch_callback.get_result(finish.id).args[0]
    assert [o["status"] for o in outcomes] == ["SUCCESSFUL"] * 5
    assert [o["return_value"] for o in outcomes] == [0, 1, 2, 3, 4]


def test_a_group_runs_side_by_side():
    enqueued = group(step(add, 1, 1), step(add, 2, 2)).enqueue()
    assert {job(r).status for r in enqueued.results} == {"READY"}
    assert Dependency.objects.count() == 0
    run_due_jobs()
    assert [add.get_result(r.id).return_value for r in enqueued.results] == [2, 4]


def test_a_parent_failing_for_good_cancels_what_waits_for_it_with_the_reason(ledger):
    enqueued = chain(step(fail, "no"), step(chain_link, label="b"), step(chain_link, label="c"))
    first, second, third = enqueued.enqueue().results
    run_due_jobs()
    assert job(first).status == JobStatus.FAILED
    for waiting in (second, third):
        row = job(waiting)
        assert row.status == JobStatus.CANCELLED and row.attempts == 0
        assert "did not succeed" in row.errors[0]["message"]
    assert f"job {first.id}" in job(second).errors[0]["message"]
    assert f"job {second.id}" in job(third).errors[0]["message"]
    # None of them ran.
    assert fetch("SELECT count(*) FROM test_ledger") == [(0,)]


def test_a_failed_member_runs_the_failure_callback_with_every_outcome(ledger):
    members = [step(batch_member, n, fail=n in (2, 4)) for n in range(6)]
    enqueued = batch(
        members,
        on_success=step(batch_callback, label="success"),
        on_failure=step(batch_callback, label="failure"),
    ).enqueue()
    run_due_jobs()
    success, failure = enqueued.results[6:]
    assert job(success).status == JobStatus.CANCELLED
    assert job(failure).status == JobStatus.SUCCESSFUL
    outcomes = batch_callback.get_result(failure.id).args[0]
    assert [o["status"] for o in outcomes] == ["SUCCESSFUL"] * 2 + ["FAILED"] + [
        "SUCCESSFUL",
        "FAILED",
        "SUCCESSFUL",
    ]
    assert outcomes[2]["error"] == "member 2 failed"


def test_a_graph_enqueued_in_a_transaction_that_rolls_back_leaves_no_row():
    with pytest.raises(RuntimeError), transaction.atomic():
        chain(step(add, 1, 2), step(add, 3)).enqueue()
        batch([step(add, 1, 1)], on_finish=step(batch_callback)).enqueue()
        raise RuntimeError("the request failed")
    assert Job.objects.count() == 0
    assert Dependency.objects.count() == 0


def test_cancelling_a_workflow_cancels_what_has_not_run():
    enqueued = batch([step(add, n, 0) for n in range(3)], on_finish=step(batch_callback))
    result = enqueued.enqueue()
    assert operations.cancel_workflow(result.id) == 4
    assert {job(r).status for r in result.results} == {JobStatus.CANCELLED}
    assert run_due_jobs().attempts == 0


# The tasks and values that the docs' example names: fetch and parse return
# what shows each step given the previous one's return value.
DOCS_EXAMPLE_TASKS = """\
from django.tasks import task

url = "https://example.com/feed"
accounts = [1, 2, 3]

@task
def fetch(url):
    return f"<items of {url}>"

@task
def parse(page):
    return page.strip("<>")

@task
def store(items, overwrite): ...

@task
def export(): ...

@task
def notify_team(message): ...

@task
def count(channel): ...

@task
def send_invoice(account_id): ...

@task
def report(values): ...

@task
def alert(outcomes): ...

@task
def cleanup(outcomes): ...

"""


def test_the_docs_example_enqueues_each_workflow_it_shows(tmp_path, monkeypatch):
    block = python_blocks(section("Workflows: chains, groups and batches"))[0]
    (tmp_path / "docs_workflows.py").write_text(DOCS_EXAMPLE_TASKS + block)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = importlib.import_module("docs_workflows").result
    rows = Job.objects.order_by("id").values_list("task_path", "status")
    # The batch's jobs, cancelled by the example's last line, ran none of them.
    assert [(path.removeprefix("docs_workflows."), status) for path, status in rows] == [
        ("fetch", "READY"),
        ("parse", "WAITING"),
        ("store", "WAITING"),
        ("export", "READY"),
        ("notify_team", "WAITING"),
        ("count", "READY"),
        ("count", "READY"),
        *[("send_invoice", "CANCELLED")] * 3,
        ("report", "CANCELLED"),
        ("alert", "CANCELLED"),
        ("cleanup", "CANCELLED"),
    ]
    batch_ids = Job.objects.filter(workflow_id=result.id).values_list("id", flat=True)
    assert sorted(r.id for r in result.results) == sorted(map(str, batch_ids))
    assert run_due_jobs().counts == {"SUCCESSFUL": 7}
    stored = Job.objects.get(task_path="docs_workflows.store")
    assert (stored.args, stored.kwargs) == (
        ["items of https://example.com/feed"],
        {"overwrite": True},
    )
    assert Job.objects.get(task_path="docs_workflows.notify_team").args == ["done"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: chain(), "at least one step"),
        (lambda: batch([]), "at least one step"),
        (lambda: chain((add, 1, 2)), "not tuple"),
        (lambda: step(len, 1), "not builtin_function_or_method"),
        (lambda: chain(step(add, object(), 1)).enqueue(), "not JSON serializable"),
    ],
)
def test_a_graph_that_cannot_be_is_refused_and_enqueues_nothing(make, message):
    with pytest.raises((InvalidTask, TypeError), match=message):
        make()
    assert Job.objects.count() == 0


def test_a_step_keeps_every_option_an_enqueue_keeps(monkeypatch):
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    monkeypatch.setattr(tracing, "current_context", lambda: carrier)
    later = timezone.now() + timedelta(hours=1)
    configured = add.using(
        run_after=later,
        unique_key="nightly",
        tags=["night"],
        meta={"run": 1},
        priority=7,
        max_attempts=9,
        timeout=5,
    )
    first, second = (
        chain(step(configured, 1, 2), step(add.using(tags=["then"]), 3)).enqueue().results
    )
    for result in (first, second):
        assert add.get_result(result.id) == result
    row = job(first)
    assert (row.run_at, row.run_after, row.unique_key) == (later, later, "nightly")
    assert (row.tags, row.meta, row.trace_context) == (["night"], {"run": 1}, carrier)
    assert job(second).tags == ["then"]
    assert run_due_jobs().attempts == 0


def test_a_delayed_step_waits_for_its_parents_and_for_its_time():
    later = timezone.now() + timedelta(hours=1)
    earlier = timezone.now() - timedelta(minutes=1)
    _, waits = chain(step(add, 1, 2), step(add.using(run_after=later), 3)).enqueue().results
    _, due = chain(step(add, 1, 2), step(add.using(run_after=earlier), 3)).enqueue().results
    run_due_jobs()
    assert (job(waits).status, job(waits).run_at) == (JobStatus.READY, later)
    assert add.get_result(waits.id).task == waits.task
    assert job(due).status == JobStatus.SUCCESSFUL


def test_a_step_that_waits_cannot_have_a_unique_key_and_a_first_one_is_not_a_live_job():
    keyed = step(add.using(unique_key="k"), 3)
    for workflow in (chain(step(add, 1, 2), keyed), batch([step(add, 1, 2)], on_finish=keyed)):
        with pytest.raises(InvalidTask, match="unique key"):
            workflow.enqueue()
    assert Job.objects.count() == 0
    live = add.using(unique_key="k").enqueue(1, 2)
    with pytest.raises(IntegrityError, match="jobs_job_unique_key_live"), transaction.atomic():
        chain(keyed, step(add, 4)).enqueue()
    assert list(Job.objects.values_list("id", flat=True)) == [uuid.UUID(live.id)]


# Real workers.


@pytest.mark.django_db(transaction=True)
def test_a_chain_whose_worker_is_killed_in_its_second_step_completes_each_step_once(
    start_worker, worker_env, ledger, started
):
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.worker_settings"}
    enqueued = chain(
        step(chain_link, label="a"),
        step(chain_link, label="b", seconds=3),
        step(chain_link, label="c"),
    ).enqueue()
    first, second, third = enqueued.results
    worker = start_worker("--concurrency", "1", env=env)
    wait_until(started(second.id))
    worker.signal(signal.SIGKILL)
    worker.wait()
    # The second step's work is cut short before its side effect; another
    # worker rescues it, runs it again and goes on.
    start_worker("--concurrency", "1", env=env)
    wait_until(lambda: job(third).status == JobStatus.SUCCESSFUL, timeout=60)
    assert chain_link.get_result(third.id).return_value == "a>b>c"
    runs = dict(fetch("SELECT job_id::text, runs FROM test_ledger"))
    assert runs == {first.id: 1, second.id: 1, third.id: 1}
    assert job(second).attempts == 2


@pytest.mark.django_db(transaction=True)
def test_batches_finishing_on_four_workers_run_each_callback_once(start_worker, ledger):
    # 20 batches at once, their last members finishing on different workers
    # at the same instant; then 10,000 members, 3 of them failing.
    small = [
        batch(
            [step(batch_member, n) for n in range(200)],
            on_finish=step(batch_callback, label="finish"),
        ).enqueue()
        for _ in range(20)
    ]
    large = batch(
        [step(batch_member, n, fail=n in (17, 5_000, 9_999)) for n in range(10_000)],
        on_success=step(batch_callback, label="success"),
        on_failure=step(batch_callback, label="failure"),
        on_finish=step(batch_callback, label="finish"),
    ).enqueue()
    for _ in range(4):
        start_worker("--concurrency", "4", wait=False)
    callbacks = [result.results[-1] for result in small] + large.results[-3:]
    wait_until(
        lambda: all(job(r).status in ("SUCCESSFUL", "CANCELLED") for r in callbacks), timeout=180
    )
    for result in small:
        finish = job(result.results[-1])
        assert finish.status == JobStatus.SUCCESSFUL and finish.attempts == 1
        assert len(finish.args[0]) == 200
    success, failure, finish = (job(r) for r in large.results[-3:])
    assert success.status == JobStatus.CANCELLED and success.attempts == 0
    assert failure.status == JobStatus.SUCCESSFUL and failure.attempts == 1
    assert [o["status"] for o in failure.args[0]].count("FAILED") == 3
    assert finish.status == JobStatus.SUCCESSFUL and len(finish.args[0]) == 10_000
    # Each callback that ran, ran once.
    callback_ids = [str(r.id) for r in callbacks]
    runs = fetch("SELECT runs FROM test_ledger WHERE job_id::text = ANY(%s)", [callback_ids])
    assert sorted(runs) == [(1,)] * 22
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM jobs_job WHERE status IN ('WAITING', 'READY')")
        assert cursor.fetchone() == (0,)


def test_a_jobs_page_shows_its_workflow_and_the_list_finds_the_workflows_jobs(admin_client, ledger):
    from django.urls import reverse

    enqueued = batch(
        [step(add, n, 0) for n in range(3)], on_finish=step(batch_callback, label="finish")
    ).enqueue()
    run_due_jobs()
    member, finish = enqueued.results[0], enqueued.results[-1]
    page = admin_client.get(reverse("admin:jobs_job_change", args=[finish.id])).content.decode()
    assert "4 of 4 done, 0 failed or cancelled" in page
    assert page.count('<span class="jobs-status jobs-status-successful">') >= 3
    assert reverse("admin:jobs_job_change", args=[member.id]) in page
    member_page = admin_client.get(reverse("admin:jobs_job_change", args=[member.id]))
    assert reverse("admin:jobs_job_change", args=[finish.id]) in member_page.content.decode()
    listing = admin_client.get(
        reverse("admin:jobs_job_changelist"), {"q": f"workflow:{enqueued.id}"}
    ).content.decode()
    assert listing.count('class="action-select"') == 4
    assert (
        "Workflow"
        not in admin_client.get(reverse("admin:jobs_job_change", args=[add.enqueue(1, 1).id]))
        .content.decode()
        .split("Timeline")[1]
    )


# Progress.


@pytest.mark.django_db(transaction=True)
def test_a_running_job_reports_its_progress_to_the_admin_and_the_status_api(
    start_worker, started, admin_client
):
    from django.urls import reverse

    from tests.tasks import reports_progress

    result = reports_progress.enqueue(4, seconds=1.0)
    start_worker("--concurrency", "1")
    wait_until(started(result.id))
    wait_until(lambda: (job(result).progress or 0) >= 0.5)

    def bar() -> str:
        """the bar of the last report (one a second: the page shows this one or the next)"""
        row = job(result)
        return (
            f'<progress max="1" value="{row.progress}"></progress> '
            f"{round(row.progress * 100)}% {row.progress_message}"
        )

    before = bar()
    page = admin_client.get(reverse("admin:jobs_job_change", args=[result.id])).content.decode()
    api = admin_client.get(f"/api/v1/tasks/{result.id}").json()
    around = {before, bar()}
    assert any(bar in page for bar in around), around
    assert api["status"] == "RUNNING"
    assert any(api["progress"]["message"] in bar for bar in around)
    wait_until(lambda: job(result).status == JobStatus.SUCCESSFUL, timeout=30)
    done = job(result)
    assert (done.progress, done.progress_message) == (1.0, "4 of 4")
    assert get_progress(result) == get_progress(result.id) == Progress(1.0, "4 of 4")


def test_a_report_of_an_attempt_that_is_no_longer_the_jobs_writes_nothing():
    from django.tasks.base import TaskContext

    from jobs.progress import report_progress

    result = add.enqueue(1, 2)
    context = TaskContext(task_result=result)
    assert report_progress(context, 0.5, "READY: not running") is False
    with pytest.raises(ValueError, match="finite number"):
        report_progress(context, float("nan"))
    with pytest.raises(ValueError, match="cannot store"):
        report_progress(context, 0.1, "nul\x00")
    assert job(result).progress is None


def test_steps_under_limits_keep_them(ledger):
    from django.test import override_settings

    from tests.limits_settings import TASKS
    from tests.tasks import limited_run

    with override_settings(TASKS=TASKS):
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE test_limit_ledger (job_id uuid, attempt int, key text, "
                "started_at timestamptz, ended_at timestamptz)"
            )
        enqueued = batch(
            [step(limited_run, "a", seconds=0) for _ in range(3)],
            on_finish=step(batch_callback, label="finish"),
        ).enqueue()
        assert {job(r).limit_key for r in enqueued.results[:3]} == {"per-key:a"}
        run = run_due_jobs()
        assert run.counts == {"SUCCESSFUL": 4}
        # Two at once at most: the third was claimed by a later claim (jobs
        # of one claim share its time).
        claims = fetch(
            "SELECT count(DISTINCT started_at) FROM jobs_job WHERE limit_key = 'per-key:a'"
        )
        assert claims == [(2,)]


def test_retrying_a_failed_step_resumes_the_workflow(ledger):
    flaky = step(batch_member, 1, fail=True)
    enqueued = chain(flaky, step(chain_link, label="b"), step(chain_link, label="c")).enqueue()
    first, _, third = enqueued.results
    run_due_jobs()
    assert [job(r).status for r in enqueued.results] == ["FAILED", "CANCELLED", "CANCELLED"]
    # The cause is fixed: the step runs again, and what waited for it resumes.
    Job.objects.filter(id=first.id).update(kwargs={"fail": False})
    operations.retry(first.id)
    assert [job(r).status for r in enqueued.results] == ["READY", "WAITING", "WAITING"]
    run_due_jobs()
    assert [job(r).status for r in enqueued.results] == ["SUCCESSFUL"] * 3
    assert chain_link.get_result(third.id).return_value == "1>b>c"


def test_the_dashboard_lists_recent_workflows_with_their_progress(admin_client, ledger):
    from django.urls import reverse

    first = batch([step(add, n, 0) for n in range(3)], on_finish=step(batch_callback)).enqueue()
    run_due_jobs()
    second = chain(step(fail, "no"), step(add, 1)).enqueue()
    page = admin_client.get(reverse("admin:jobs_job_dashboard")).content.decode()
    assert page.index(second.id) < page.index(first.id)  # the most recent first
    assert '<progress max="4" value="4"></progress> 4/4' in page
    assert '<progress max="2" value="0"></progress> 0/2' in page
