"""
A workflow's name and its page in the admin: its jobs in graph order with
their statuses, and the operator's two operations on it (cancel what has not
run, retry the failed steps), each under its permission.
"""

import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.tasks.exceptions import InvalidTask
from django.urls import reverse

from jobs.admin.workflow_graph import MOST_JOBS_DRAWN
from jobs.models import Job, JobStatus
from jobs.workflows import batch, chain, dag, step
from tests.docs.pages import python_blocks, section
from tests.tasks import add, batch_callback
from tests.transitions.driver import claim_one, finish

pytestmark = pytest.mark.django_db


def page_of(client, workflow_id: str) -> str:
    response = client.get(reverse("admin:jobs_job_workflow", args=[workflow_id]))
    assert response.status_code == 200
    return response.content.decode()


def status(result) -> str:
    return Job.objects.get(id=result.id).status


def test_a_workflow_is_named_on_its_page_and_on_the_dashboard(admin_client):
    named = chain(step(add, 1, 1), step(add, 2)).enqueue(name="sums of user 7")
    unnamed = chain(step(add, 3, 3), step(add, 4)).enqueue()
    assert named.name == "sums of user 7"
    page = page_of(admin_client, named.id)
    assert "<title>sums of user 7" in page
    assert page.count('<tr data-status="') == 2
    first, second = (f'title="{result.id}"' for result in named.results)
    assert page.index(first) < page.index(second)
    assert f"workflow {unnamed.id[:8]}" in page_of(admin_client, unnamed.id)
    dashboard = admin_client.get(reverse("admin:jobs_job_dashboard")).content.decode()
    assert "sums of user 7" in dashboard
    assert reverse("admin:jobs_job_workflow", args=[named.id]) in dashboard


def boxes(page: str) -> dict[str, tuple[int, str]]:
    """Each drawn job's x and status class, by the job's id (its link)."""
    found = re.findall(
        r'<a href="/admin/jobs/job/([0-9a-f-]+)/change/"><title>[^<]*</title>'
        r'<rect class="jobs-graph-node jobs-graph-(\w+)" x="(\d+)"',
        page,
    )
    return {job_id: (int(x), status) for job_id, status, x in found}


def test_the_page_draws_the_graph_with_each_jobs_status(admin_client):
    enqueued = dag(
        a=step(add, 1, 1),
        b=step(add, 2, 2),
        c=step(add, 5).after("a", "b"),
        d=step(add, 6).after("c"),
    ).enqueue()
    a, b, c, d = (result.id for result in enqueued.results)
    finish(claim_one(a))
    drawn = boxes(page_of(admin_client, enqueued.id))
    assert {job_id: status for job_id, (_, status) in drawn.items()} == {
        a: "successful",
        b: "ready",
        c: "waiting",
        d: "waiting",
    }
    # Each job stands right of what it waits for; a and b side by side.
    assert drawn[a][0] == drawn[b][0] < drawn[c][0] < drawn[d][0]
    assert page_of(admin_client, enqueued.id).count('class="jobs-graph-edge"') == 3


def test_a_workflow_too_large_to_draw_is_listed(admin_client):
    enqueued = batch(
        [step(add, n, n) for n in range(MOST_JOBS_DRAWN)], on_success=step(add, 0)
    ).enqueue()
    page = page_of(admin_client, enqueued.id)
    assert '<svg class="jobs-graph"' not in page
    assert f"drawn for workflows of up to {MOST_JOBS_DRAWN} jobs" in page
    assert page.count('<tr data-status="') == MOST_JOBS_DRAWN + 1


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, 7, "nul\x00"])
def test_a_name_that_cannot_be_is_refused_and_enqueues_nothing(name):
    with pytest.raises(InvalidTask, match="workflow's name"):
        chain(step(add, 1, 1), step(add, 2)).enqueue(name=name)
    assert Job.objects.count() == 0


def test_retry_the_failed_steps_and_cancel_what_has_not_run(admin_client):
    flow = batch([step(add, n, 0) for n in range(3)], on_finish=step(batch_callback)).enqueue(
        name="three and a callback"
    )
    first, second, third, callback = flow.results
    finish(claim_one(first.id), "FAILED")
    page = page_of(admin_client, flow.id)
    assert "Retry the failed steps" in page and "Cancel what has not run" in page

    retry = reverse("admin:jobs_job_workflow_operation", args=[flow.id, "retry"])
    assert admin_client.post(retry).status_code == 302
    assert status(first) == JobStatus.READY
    # The callback is cancelled first: cancelled after the members, it would
    # have been made due by their cancels.
    cancel = reverse("admin:jobs_job_workflow_operation", args=[flow.id, "cancel"])
    admin_client.post(cancel)
    assert [status(r) for r in (first, second, third, callback)] == [JobStatus.CANCELLED] * 4
    assert Job.objects.get(id=callback.id).attempts == 0
    assert [entry.change_message for entry in LogEntry.objects.order_by("id")] == [
        "Retried (workflow)",
        *["Cancelled (workflow)"] * 4,
    ]


def test_each_operation_needs_its_permission(client):
    flow = chain(step(add, 1, 1), step(add, 2)).enqueue()
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_job"))
    client.force_login(viewer)
    page = page_of(client, flow.id)
    assert "Cancel what has not run" not in page
    cancel = reverse("admin:jobs_job_workflow_operation", args=[flow.id, "cancel"])
    assert client.post(cancel).status_code == 403
    assert {status(r) for r in flow.results} == {JobStatus.READY, JobStatus.WAITING}


@pytest.mark.parametrize("workflow_id", ["not-an-id", "0190a0c4-1d3e-7000-8000-000000000000"])
def test_a_workflow_that_does_not_exist_is_a_404(admin_client, workflow_id):
    response = admin_client.get(reverse("admin:jobs_job_workflow", args=[workflow_id]))
    assert response.status_code == 404


def test_the_readme_example_names_its_workflow():
    from accounts import tasks

    [block] = python_blocks(section("Naming a workflow"))
    names = {name: getattr(tasks, name) for name in dir(tasks) if not name.startswith("_")}
    exec(block, names)
    jobs = Job.objects.filter(workflow_name="welcome messages of user 7")
    assert sorted(jobs.values_list("task_path", flat=True)) == [
        "accounts.tasks.record_welcome_outcome",
        "accounts.tasks.send_welcome_email",
        "accounts.tasks.send_welcome_sms",
    ]
