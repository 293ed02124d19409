"""
RETAIN (jobs.retention): a rule is taken at enqueue, by task before queue,
and each prune deletes the jobs of one retention by their own age; a rule
taken out of RETAIN leaves its jobs to the backend's retention.
"""

import io
import json
import re

import pytest
from django.core.management import call_command
from django.db import connection
from django.tasks import task_backends
from django.test import override_settings

from jobs import operations, queries
from jobs.checks import check_retention
from jobs.models import Job
from jobs.options import QueueOptions
from jobs.retention import PrunePass
from jobs.workflows import chain, step
from tests.conftest import fetch_value, wait_for_status, wait_until
from tests.docs.pages import python_blocks, section
from tests.retention_settings import RETAIN, TASKS
from tests.tasks import add, multiply, noop
from tests.transitions.driver import age

DAY = 24 * 3600


@pytest.fixture
def retaining_backend():
    """The default backend with the RETAIN of tests/retention_settings.py, as a web process."""
    with override_settings(TASKS=TASKS):
        yield task_backends["default"]


def retention_of(job_id: str) -> str | None:
    return fetch_value("SELECT retention FROM jobs_job WHERE id = %s", [str(job_id)])


def finish(job_id: str, status: str = "SUCCESSFUL", days_ago: float = 0) -> None:
    Job.objects.filter(id=job_id).update(
        status=status, finished_at=Job.objects.get(id=job_id).enqueued_at
    )
    age(job_id, days_ago * DAY)


def exists(job_id: str) -> bool:
    return Job.objects.filter(id=job_id).exists()


@pytest.mark.django_db
def test_a_job_takes_its_tasks_rule_else_its_queues_else_none(retaining_backend):
    assert retention_of(noop.enqueue().id) == "pings"
    assert retention_of(add.using(queue_name="reports").enqueue(1, 2).id) == "reports"
    # The task's own rule wins over its queue's.
    assert retention_of(multiply.using(queue_name="reports").enqueue(2, 3).id) == "ledger"
    assert retention_of(add.enqueue(1, 2).id) is None
    # In a batch, with tags, and as the step of a workflow, alike.
    assert {retention_of(r.id) for r in noop.enqueue_many([((), {})] * 3)} == {"pings"}
    assert retention_of(add.using(tags=["x"]).enqueue(1, 2).id) is None
    first, second = chain(step(noop), step(multiply, 2)).enqueue().results
    assert (retention_of(first.id), retention_of(second.id)) == ("pings", "ledger")


@pytest.mark.django_db
def test_each_prune_deletes_by_its_own_retention(retaining_backend):
    default_old = add.enqueue(1, 1).id  # the backend's 7 days
    default_new = add.enqueue(1, 2).id
    ping = noop.enqueue().id  # a second
    kept = multiply.enqueue(2, 2).id  # for ever
    report_ok = add.using(queue_name="reports").enqueue(1, 3).id  # an hour
    report_failed = add.using(queue_name="reports").enqueue(1, 4).id  # an hour
    finish(default_old, days_ago=8)
    finish(default_new, days_ago=6)
    finish(ping)
    age(ping, 2)
    finish(kept, days_ago=400)
    finish(report_ok, days_ago=0.5)
    finish(report_failed, status="FAILED", days_ago=0.01)

    pruned = operations.prune(dry_run=True)
    counts = {(p.rule, p.statuses, p.orphaned): count for p, count in pruned.jobs}
    assert counts[(None, ("SUCCESSFUL",), False)] == 1
    assert counts[("pings", ("SUCCESSFUL",), False)] == 1
    assert counts[("ledger", ("SUCCESSFUL",), False)] == 0
    assert counts[("reports", ("SUCCESSFUL",), False)] == 1
    assert counts[("reports", ("FAILED", "CANCELLED"), False)] == 0
    assert Job.objects.count() == 6

    operations.prune()
    assert not exists(default_old) and not exists(ping) and not exists(report_ok)
    assert exists(default_new) and exists(kept) and exists(report_failed)


@pytest.mark.django_db
def test_the_jobs_of_a_rule_taken_out_of_retain_are_kept_as_the_backend_says(retaining_backend):
    ping, recent_ping = noop.enqueue().id, noop.enqueue().id
    finish(ping, days_ago=8)
    finish(recent_ping, days_ago=1)
    without_pings = {name: rule for name, rule in RETAIN.items() if name != "pings"}
    options = TASKS["default"]["OPTIONS"]
    backend = {**TASKS["default"], "OPTIONS": {**options, "RETAIN": without_pings}}
    with override_settings(TASKS={**TASKS, "default": backend}):
        out = io.StringIO()
        call_command("jobs", "prune", stdout=out)
    assert "SUCCESSFUL of rules no longer in RETAIN: deleted 1 job(s) older than 604800 s" in (
        out.getvalue()
    )
    assert not exists(ping) and exists(recent_ping)


@pytest.mark.django_db
def test_a_backends_prune_leaves_the_rules_of_another_backend_alone(retaining_backend):
    """Two backends on one database: a rule's name is its own backend's."""
    theirs_kept, theirs_gone_rule = noop.enqueue().id, noop.enqueue().id
    Job.objects.filter(id=theirs_kept).update(backend="other")  # their "pings" keeps a year
    Job.objects.filter(id=theirs_gone_rule).update(backend="other", retention="unknown-here")
    ours = noop.enqueue().id
    for job_id in (theirs_kept, theirs_gone_rule, ours):
        finish(job_id, days_ago=40)
    operations.prune()
    assert exists(theirs_kept) and exists(theirs_gone_rule)
    assert not exists(ours)


@pytest.mark.django_db
def test_jobs_prune_reports_each_rule(retaining_backend):
    ping = noop.enqueue().id
    finish(ping, days_ago=1)
    out = io.StringIO()
    call_command("jobs", "prune", "--dry-run", stdout=out)
    lines = out.getvalue().splitlines()
    assert "SUCCESSFUL of pings: 1 job(s) older than 1 s would be deleted" in lines
    assert "SUCCESSFUL of ledger: kept for ever (retention is None)" in lines
    assert "FAILED/CANCELLED of reports: 0 job(s) older than 3600 s would be deleted" in lines
    # Nothing of rules taken out of RETAIN: no line for it.
    assert not any("no longer in RETAIN" in line for line in lines)
    out = io.StringIO()
    call_command("jobs", "prune", "--json", stdout=out)
    [pings] = [
        entry
        for entry in json.loads(out.getvalue())["jobs"]
        if entry["rule"] == "pings" and entry["statuses"] == ["SUCCESSFUL"]
    ]
    assert pings == {
        "statuses": ["SUCCESSFUL"],
        "rule": "pings",
        "orphaned": False,
        "retain": 1.0,
        "count": 1,
    }


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ([], "RETAIN is a dict of rule names to their settings."),
        ({"": {"tasks": ["a.b"], "successful": 1}}, "rule name '' must be a non-empty string"),
        ({"x" * 65: {"tasks": ["a.b"], "successful": 1}}, "at most 64 characters"),
        ({"r": ["a.b"]}, "rule 'r' is a dict, not list."),
        ({"r": {"tasks": ["a.b"], "succesful": 1}}, "unknown settings succesful"),
        ({"r": {"tasks": "a.b", "successful": 1}}, "rule 'r': tasks is a list of names."),
        ({"r": {"tasks": None, "successful": 1}}, "rule 'r': tasks is a list of names."),
        ({"r": {"queues": {"q": 1}, "failed": 1}}, "rule 'r': queues is a list of names."),
        ({"r": {"successful": 1}}, "rule 'r' names no task and no queue."),
        ({"r": {"queues": ["q"]}}, "rule 'r' sets neither successful nor failed"),
        (
            {"r": {"queues": ["q"], "failed": -1}},
            "rule 'r': failed is -1; it must be a number of seconds, 0 or more, or None",
        ),
        (
            {"r": {"tasks": ["a.b"], "failed": 1}, "s": {"tasks": ["a.b"], "failed": 2}},
            "task 'a.b' is in rules 'r' and 's'; a task is kept by one rule.",
        ),
    ],
)
def test_a_retain_that_cannot_be_used_is_a_check_error(setting, message):
    options, errors = QueueOptions.parse("default", {"RETAIN": setting})
    [error] = errors
    assert error.id == "jobs.E010"
    assert message in error.msg
    assert "new jobs are kept as RETAIN_SUCCESSFUL and RETAIN_FAILED say" in error.hint
    assert not options.retain
    # Its rules are unknown, not gone: no job is pruned as one of a rule taken out.
    assert not any(p.orphaned for p in options.prune_passes("default", orphaned=True))


def test_a_rule_naming_a_task_or_queue_that_holds_no_job_is_a_warning():
    rules = {
        "typo": {"tasks": ["tests.tasks.nop"], "successful": 60},
        "alias": {"tasks": ["tests.tasks.old_name_of_multiply"], "successful": 60},
        "queue": {"queues": ["reprots"], "failed": 60},
        "fine": {"tasks": ["tests.tasks.noop"], "queues": ["reports"], "successful": 60},
    }
    backend = {**TASKS["default"], "OPTIONS": {"RETAIN": rules}}
    with override_settings(TASKS={"default": backend}):
        problems = check_retention()
    assert [problem.id for problem in problems] == ["jobs.W010", "jobs.W010", "jobs.W011"]
    typo, alias, queue = (problem.msg for problem in problems)
    assert "RETAIN rule 'typo' keeps nothing of 'tests.tasks.nop'" in typo
    assert "an alias of 'tests.tasks.multiply'; jobs are enqueued under" in alias
    assert "RETAIN rule 'queue' names queue 'reprots', which QUEUES does not allow" in queue


def test_the_passes_read_every_retention_once():
    options, _ = QueueOptions.parse("default", {"RETAIN": RETAIN, "RETAIN_FAILED": None})
    assert options.prune_passes("default", orphaned=True) == [
        PrunePass(("SUCCESSFUL",), 7 * DAY),
        PrunePass(("FAILED", "CANCELLED"), None),
        PrunePass(("SUCCESSFUL",), 1.0, "pings"),
        PrunePass(("FAILED", "CANCELLED"), None, "pings"),
        PrunePass(("SUCCESSFUL",), None, "ledger"),
        PrunePass(("FAILED", "CANCELLED"), None, "ledger"),
        PrunePass(("SUCCESSFUL",), 3600.0, "reports"),
        PrunePass(("FAILED", "CANCELLED"), 3600.0, "reports"),
        PrunePass(("SUCCESSFUL",), 7 * DAY, orphaned=True),
        PrunePass(("FAILED", "CANCELLED"), None, orphaned=True),
    ]


def test_a_worker_prunes_each_rules_jobs_by_their_own_age(
    retaining_backend, start_worker, worker_env
):
    """Pings go within seconds of finishing; the backend's and the ledger's jobs stay."""
    ping, plain, kept = noop.enqueue().id, add.enqueue(1, 2).id, multiply.enqueue(2, 3).id
    start_worker(
        "--threads", "2", env={**worker_env, "DJANGO_SETTINGS_MODULE": "tests.retention_settings"}
    )
    for job_id in (plain, kept):
        assert wait_for_status(job_id) == "SUCCESSFUL"

    def ping_pruned() -> bool:
        """the ping job was pruned a second after it finished"""
        return not exists(ping)

    wait_until(ping_pruned, timeout=15)
    # Ten years old: still kept by its own rule, while an old job of the
    # backend's retention goes at the worker's next heartbeat.
    age(kept, 3650 * DAY)
    old_plain = add.enqueue(2, 2).id
    assert wait_for_status(old_plain) == "SUCCESSFUL"
    age(old_plain, 8 * DAY)

    def old_plain_pruned() -> bool:
        """the job past RETAIN_SUCCESSFUL was pruned"""
        return not exists(old_plain)

    wait_until(old_plain_pruned, timeout=15)
    assert exists(kept) and exists(plain)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "index"),
    [
        ("default", "jobs_job_finished_idx"),
        ("rule", "jobs_job_retained_idx"),
        ("orphaned", "jobs_job_retained_idx"),
    ],
)
def test_each_prune_reads_its_own_index(kind, index):
    """A prune that no index serves would read every finished job at each heartbeat."""
    params = {
        "statuses": ["SUCCESSFUL"],
        "older_than": 60.0,
        "rule": "pings",
        "rules": ["pings"],
        "backend": "default",
        "limit": 10,
    }
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {queries.finish.PRUNABLE[kind]}", params)
        plan = "\n".join(row for (row,) in cursor.fetchall())
    assert re.search(rf"(using|on) {index}\b", plan), plan


def test_the_readme_retention_example_passes_the_checks():
    [block] = python_blocks(section("Retention per task and per queue"))
    namespace: dict = {}
    exec(block, namespace)
    backend = namespace["TASKS"]["default"]
    options, errors = QueueOptions.parse("default", backend["OPTIONS"])
    assert errors == []
    assert options.retain.rule_of("accounts.tasks.send_welcome_email", "communications") == (
        "welcome-email"
    )
    assert options.retain.rule_of("accounts.reports.send_signup_report", "reports") == "reports"
    with override_settings(TASKS=namespace["TASKS"]):
        assert check_retention() == []


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["FINISHED_BY_MINUTE", "LATENCY", "TASK_STATISTICS"])
def test_the_dashboards_reads_of_recent_jobs_read_each_rules_range(name):
    """Not every job a rule keeps: a range of the retained index per rule, by its name."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {getattr(queries.observe, name)}")
        plan = "\n".join(row for (row,) in cursor.fetchall())
    assert re.search(r"Index Cond: .*\(retention\)::text = rule(_\d+)?\.name", plan), plan
    assert "jobs_job_finished_idx" in plan, plan
