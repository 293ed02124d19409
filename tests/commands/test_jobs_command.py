"""The operator's command line: `manage.py jobs enqueue|show|list|retry|cancel|queues purge`."""

import io
import json
import time
import uuid

import pytest
from django.core.management import CommandError, call_command

from jobs.models import Job, JobStatus
from tests.tasks import add, fail

pytestmark = pytest.mark.django_db


def jobs(*args: str) -> str:
    out = io.StringIO()
    call_command("jobs", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def failed(task=fail, **fields) -> Job:
    result = task.enqueue()
    Job.objects.filter(id=result.id).update(
        status=JobStatus.FAILED, attempts=1, errors=[{"message": "boom"}], **fields
    )
    return Job.objects.get(id=result.id)


def test_enqueue_by_path_with_json_arguments():
    out = jobs("enqueue", "tests.tasks.add", "--args", "[1, 2]", "--queue", "reports")
    job_id = out.split()[-1]
    job = Job.objects.get(id=job_id)
    assert (job.task_path, job.args, job.queue) == ("tests.tasks.add", [1, 2], "reports")
    answer = json.loads(
        jobs("enqueue", "tests.tasks.add", "--kwargs", '{"a": 1, "b": 2}', "--json")
    )
    assert answer["status"] == "READY"
    assert Job.objects.get(id=answer["id"]).kwargs == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enqueue", "tests.tasks.nope"], "Not enqueued: Task 'tests.tasks.nope' does not import"),
        (["enqueue", "tests.tasks.add", "--args", "[1,"], "--args is not JSON"),
        (["enqueue", "tests.tasks.add", "--args", '{"a": 1}'], "--args must be a JSON list"),
        (["enqueue", "tests.tasks.add", "--kwargs", "[]"], "--kwargs must be a JSON object"),
        (["enqueue", "tests.tasks.add", "--queue", "emails"], "Not enqueued: Queue 'emails'"),
        # The project's sms-per-user limit: no user, no key (not one shared `null` key).
        (
            ["enqueue", "accounts.tasks.send_welcome_sms", "--args", "[1]"],
            "Not enqueued: accounts.tasks.send_welcome_sms is limited per 'user_id'",
        ),
        (["show", "not-an-id"], "'not-an-id' is not a job id"),
        (["show", "01a23600-9e7a-71b8-9410-7cf5f4f717de"], "No job with id"),
        (["retry", "01a23600-9e7a-71b8-9410-7cf5f4f717de"], "No job with id"),
        (["retry"], "Name the jobs to retry"),
        (
            ["cancel", "--status", "FAILED"],
            "Only WAITING, READY or RUNNING jobs can be cancelled",
        ),
        (["list", "--limit", "0"], "--limit must be 1 or more"),
        (["--backend", "nope", "list"], "No task backend 'nope'"),
    ],
)
def test_bad_input_is_refused_by_name(args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        jobs(*args)
    assert Job.objects.count() == 0


def test_show_and_list_in_words_and_in_json():
    broken = failed()
    ready = add.enqueue(1, 2)
    shown = jobs("show", str(broken.id))
    assert "status        FAILED" in shown and "boom" in shown
    assert json.loads(jobs("show", str(broken.id), "--json"))["errors"] == [{"message": "boom"}]
    listed = jobs("list")
    assert listed.index(ready.id) < listed.index(str(broken.id))
    header, first, _ = listed.splitlines()
    assert header.split() == ["id", "status", "attempts", "queue", "task", "(enqueued)"]
    # The columns line up under their names.
    assert first.index("READY") == header.index("status")
    assert first.index("0/") == header.index("attempts")
    only_failed = json.loads(jobs("list", "--status", "FAILED", "--json"))
    assert [row["id"] for row in only_failed] == [str(broken.id)]
    assert jobs("list", "--task", "tests.tasks.noop") == "No jobs match.\n"


def test_a_job_is_found_by_the_short_id_the_admin_shows():
    broken = failed()
    short = str(broken.id)[:8]
    assert f"id            {broken.id}" in jobs("show", short)
    assert jobs("retry", short) == "1 job(s) retried.\n"
    with pytest.raises(CommandError, match="nor the first 8 digits"):
        jobs("show", "0123")
    other = add.enqueue(1, 2)
    # Jobs enqueued within the same 65 s share their first 8 digits; made
    # certain here, not left to the clock.
    Job.objects.filter(id=other.id).update(id=uuid.UUID(short + str(other.id)[8:]))
    with pytest.raises(CommandError, match="More than one job's id begins with"):
        jobs("show", short)
    # The admin's form, the first 8 and the last 4 digits, tells them apart.
    admin_form = f"{short}…{str(broken.id)[-4:]}"
    assert f"id            {broken.id}" in jobs("show", admin_form)


def test_retry_and_cancel_by_id():
    broken = failed()
    assert jobs("retry", str(broken.id)) == "1 job(s) retried.\n"
    assert Job.objects.get(id=broken.id).status == JobStatus.READY
    assert jobs("cancel", str(broken.id)) == "1 job(s) cancelled.\n"
    assert Job.objects.get(id=broken.id).status == JobStatus.CANCELLED
    with pytest.raises(CommandError, match="No job cancelled"):
        jobs("cancel", str(broken.id))
    # -v 0 keeps quiet on success; -v 2 names each job it acted on.
    assert jobs("retry", str(broken.id), "-v", "0") == ""
    Job.objects.filter(id=broken.id).update(status=JobStatus.FAILED)
    assert jobs("retry", str(broken.id), "-v", "2").startswith(f"retry {broken.id}\n")


def test_a_filter_is_counted_and_confirmed_and_yes_skips_the_question(monkeypatch):
    first, second = failed(), failed(queue="reports")
    other = add.enqueue(1, 1)
    # Not a terminal and no --yes: nothing done.
    with pytest.raises(CommandError, match=r"Retry 2 job\(s\)\? Not confirmed: add --yes"):
        jobs("retry", "--status", "FAILED")
    assert Job.objects.filter(status=JobStatus.FAILED).count() == 2

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda question: "n")
    with pytest.raises(CommandError, match="Nothing done"):
        jobs("retry", "--queue", "reports")
    monkeypatch.setattr("builtins.input", lambda question: "y")
    assert jobs("retry", "--queue", "reports") == "1 job(s) retried.\n"
    assert json.loads(jobs("retry", "--status", "FAILED", "--yes", "--json")) == {
        "done": 1,
        "skipped": 0,
    }
    statuses = dict(Job.objects.values_list("id", "status"))
    assert statuses[first.id] == statuses[second.id] == JobStatus.READY
    assert statuses[uuid.UUID(other.id)] == JobStatus.READY
    with pytest.raises(CommandError, match="ids or filters to cancel, not both"):
        jobs("cancel", str(first.id), "--queue", "reports")


def test_purge_deletes_a_queues_ready_jobs_only():
    waiting = add.using(queue_name="reports").enqueue(1, 1)
    broken = failed(queue="reports")
    elsewhere = add.enqueue(1, 1)
    with pytest.raises(CommandError, match=r"Delete the 1 READY job\(s\) of queue 'reports'\?"):
        jobs("queues", "purge", "reports")
    purged = jobs("queues", "purge", "reports", "--yes")
    assert purged == "Deleted 1 READY job(s) of queue 'reports'.\n"
    assert not Job.objects.filter(id=waiting.id).exists()
    assert Job.objects.filter(id__in=[broken.id, elsewhere.id]).count() == 2
    assert jobs("queues", "purge", "reports") == "Queue 'reports' has no READY job.\n"


def test_purge_under_its_old_name_says_so_and_purges():
    add.using(queue_name="reports").enqueue(1, 1)
    out, err = io.StringIO(), io.StringIO()
    call_command("jobs", "purge", "reports", "--yes", stdout=out, stderr=err)
    assert out.getvalue() == "Deleted 1 READY job(s) of queue 'reports'.\n"
    assert err.getvalue() == (
        "`manage.py jobs purge` is deprecated: use `manage.py jobs queues purge`, which does "
        "the same.\n"
    )
    assert not Job.objects.exists()


def test_list_and_act_by_tag_meta_and_age():
    tagged = add.using(tags=["billing", "eu"], meta={"customer": 42}).enqueue(1, 2)
    other_tag = add.using(tags=["billing"], meta={"customer": "42"}).enqueue(1, 3)
    old_id = uuid.UUID(int=old_id_int(days=3))
    Job.objects.filter(id=add.enqueue(1, 4).id).update(id=old_id)

    def listed(*args: str) -> list[str]:
        return [row["id"] for row in json.loads(jobs("list", "--json", *args))]

    assert set(listed("--tag", "billing")) == {tagged.id, other_tag.id}
    assert listed("--tag", "billing", "--tag", "eu") == [tagged.id]
    # A value that is JSON is compared as JSON: 42 is not "42".
    assert listed("--meta", "customer=42") == [tagged.id]
    assert listed("--meta", 'customer="42"') == [other_tag.id]
    assert listed("--older-than", "2d") == [str(old_id)]
    assert listed("--older-than", "4d") == []
    assert jobs("cancel", "--tag", "eu", "--yes") == "1 job(s) cancelled.\n"
    assert Job.objects.get(id=tagged.id).status == JobStatus.CANCELLED


def old_id_int(days: float) -> int:
    """A UUIDv7 of `days` ago, as an int: ids are the enqueue time first."""
    moment = int((time.time() - days * 86400) * 1000)
    return (moment << 80) | (0x7 << 76) | (0b10 << 62) | 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--meta", "customer"], "'customer' is not KEY=VALUE"),
        (["list", "--older-than", "soon"], "'soon' is not an age"),
        (["list", "--older-than=-1h"], "'-1h' is not an age of 0 or more"),
    ],
)
def test_a_filter_that_cannot_be_read_is_refused_by_name(args, message):
    with pytest.raises(CommandError, match=message):
        jobs(*args)
