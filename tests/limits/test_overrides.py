"""
A limit's values per key (LIMITS' per_key) and changed at runtime
(jobs.limit_overrides): each key row holds the values it runs with, and the
claim honours them.
"""

import json
import logging

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.tasks.exceptions import InvalidTask
from django.test import override_settings
from django.urls import reverse

from jobs import limit_overrides
from jobs.limit_overrides import LimitOverrideError
from jobs.limits import LimitConfigurationError, Values, parse_limits
from jobs.models import Job, JobStatus, LimitChange, LimitKey, LimitOverride
from tests.conftest import fetch, fetch_value, wait_until
from tests.docs.pages import python_blocks, section
from tests.limits.test_limits import most_at_once
from tests.tasks import limited_run, tenant_noop, tiered_run

# The worker's connection (QueueDatabase) sees only what was committed.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("limited_backend")]


def values(key: str) -> tuple:
    row = LimitKey.objects.get(key=key)
    return (row.concurrency, row.rate, row.period, row.burst)


# Values per key.


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"concurrency": 1, "per_key": {"a": {"concurrency": 2}}}, "goes with a key"),
        ({"key": "k", "concurrency": 1, "per_key": {"a": {"concurency": 2}}}, "unknown settings"),
        ({"key": "k", "concurrency": 1, "per_key": {"a": {"concurrency": 0}}}, "at least 1"),
        ({"key": "k", "concurrency": 1, "per_key": {"a": {"burst": 2}}}, "burst goes with a rate"),
        ({"key": "k", "concurrency": 1, "per_key": {"a": {"rate": "often"}}}, "<count>/<unit>"),
        ({"key": "k", "concurrency": 1, "per_key": "myapp.nowhere.tiers"}, "does not import"),
        ({"key": "k", "concurrency": 1, "per_key": [1]}, "a dict from key to values"),
    ],
)
def test_per_key_values_that_cannot_be_used_are_refused_with_the_reason(spec, message):
    with pytest.raises(LimitConfigurationError, match=message):
        parse_limits({"x": {"tasks": ["t.x"], **spec}})


def test_a_key_named_in_per_key_gets_its_values_and_the_others_the_limits():
    gold, plain = tiered_run.enqueue("gold"), tiered_run.enqueue("tin")
    assert values("tiered:gold") == (3, None, None, None)
    assert values("tiered:tin") == (1, None, None, None)
    assert gold.status == plain.status == "READY"


def test_a_callable_gives_each_key_its_values_as_its_row_is_made():
    tenant_noop.enqueue("premium-acme")
    tenant_noop.enqueue("acme")
    # A new rate brings its own burst: its count.
    assert values("by-tenant:premium-acme") == (4, 100, 1.0, 100)
    assert values("by-tenant:acme") == (1, None, None, None)


def test_a_callable_answer_that_cannot_be_used_refuses_the_enqueue(monkeypatch):
    monkeypatch.setattr("tests.tasks.tier_of", lambda key: {"concurrency": "lots"})
    limits = parse_limits({"x": {"tasks": ["t"], "key": "k", "per_key": "tests.tasks.tier_of"}})
    with pytest.raises(InvalidTask, match=r"per_key\('a'\) of limit 'x': concurrency"):
        limits[0].values("x:a")


def test_the_claim_holds_each_key_to_its_own_concurrency(db):
    for key in ["gold"] * 5 + ["tin"] * 5:
        tiered_run.enqueue(key)
    claimed = db.claim("w", 20)
    assert sorted(json.loads(job.args)[0] for job in claimed) == ["gold"] * 3 + ["tin"]


# Overrides.


def test_an_override_rewrites_the_rows_of_its_limit_and_makes_new_ones_with_it(db):
    limited_run.enqueue("a")
    change = limit_overrides.set_override("per-key", concurrency=1, by="alice", via="command")
    assert values("per-key:a")[0] == 1
    limited_run.enqueue("b")
    assert values("per-key:b")[0] == 1
    assert (change.name, change.key, change.before, change.after) == (
        "per-key",
        "",
        "2 at once (settings)",
        "1 at once",
    )
    assert (change.changed_by, change.via) == ("alice", "command")
    # A worker that starts keeps it.
    db.sync_limits()
    assert values("per-key:a")[0] == 1


def test_a_keys_override_beats_its_limits_and_a_reset_gives_back_the_settings(db):
    for key in ("gold", "tin"):
        tiered_run.enqueue(key)
    limit_overrides.set_override("tiered", concurrency=2, by="alice")
    limit_overrides.set_override("tiered", key="gold", concurrency=5, rate="2/s", by="alice")
    assert values("tiered:gold") == (5, 2, 1.0, 2)
    assert values("tiered:tin") == (2, None, None, None)
    # Setting one value keeps the other overridden.
    limit_overrides.set_override("tiered", key="gold", concurrency=6, by="bob")
    assert values("tiered:gold") == (6, 2, 1.0, 2)

    limit_overrides.remove_override("tiered", key="gold", by="bob")
    assert values("tiered:gold") == (2, None, None, None)
    limit_overrides.remove_override("tiered", by="bob")
    assert values("tiered:gold") == (3, None, None, None)
    assert values("tiered:tin") == (1, None, None, None)
    assert limit_overrides.remove_override("tiered", by="bob") is None
    assert [(c.key, c.before, c.after) for c in LimitChange.objects.order_by("id")] == [
        ("", "1 at once (settings)", "2 at once"),
        ("gold", "3 at once (settings)", "5 at once, 2 per s (burst 2)"),
        ("gold", "5 at once, 2 per s (burst 2)", "6 at once, 2 per s (burst 2)"),
        ("gold", "6 at once, 2 per s (burst 2)", "3 at once (settings)"),
        ("", "2 at once", "1 at once (settings)"),
    ]
    assert not LimitOverride.objects.exists()


def test_a_lowered_limit_starts_nothing_beyond_it_and_a_raised_one_starts_more(db):
    for _ in range(6):
        limited_run.enqueue("a")
    assert len(db.claim("w", 10)) == 2
    limit_overrides.set_override("per-key", concurrency=1)
    assert db.claim("w", 10) == []
    limit_overrides.set_override("per-key", concurrency=4)
    # The workers are told at once, whatever queues they take.
    assert db.notifications().limited
    assert len(db.claim("w", 10)) == 2


def test_a_lowered_rate_keeps_at_most_its_burst_of_tokens(db):
    limited_run.enqueue("a")  # per-key: no rate
    LimitKey.objects.create(
        key="provider",
        name="provider",
        rate=50,
        period=1.0,
        burst=50,
        tokens=50,
        refilled_at="2026-01-01T00:00:00Z",
    )
    limit_overrides.set_override("provider", rate="5/s")
    row = LimitKey.objects.get(key="provider")
    assert (row.rate, row.burst, row.tokens) == (5, 5, 5)


def test_a_row_made_by_an_enqueue_that_raced_a_change_is_settled_at_the_next_heartbeat(db):
    limited_run.enqueue("a")
    limit_overrides.set_override("per-key", concurrency=1)
    # As if an enqueue had read the overrides before the change and committed after it.
    LimitKey.objects.filter(key="per-key:a").update(concurrency=2)
    assert db.recently_changed_limits() == ["per-key"]
    db.sync_limits(db.recently_changed_limits())
    assert values("per-key:a")[0] == 1


def test_a_per_key_callable_that_fails_leaves_the_worker_running_on_the_defaults(
    db, monkeypatch, caplog
):
    tenant_noop.enqueue("premium-acme")
    LimitKey.objects.filter(key="by-tenant:premium-acme").update(concurrency=9)

    def broken(key: str) -> dict:
        raise RuntimeError("the plans table is away")

    monkeypatch.setattr("tests.tasks.tier_of", broken)
    limits = parse_limits(
        {
            "by-tenant": {
                "tasks": ["tests.tasks.tenant_noop"],
                "key": "tenant",
                "concurrency": 1,
                "per_key": "tests.tasks.tier_of",
            }
        }
    )
    with caplog.at_level(logging.WARNING, logger="jobs.limits"):
        limit_overrides.sync_limit(connection.cursor(), limits[0])
    assert values("by-tenant:premium-acme") == (1, None, None, None)
    assert "per_key failed for 'by-tenant:premium-acme'" in caplog.text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"name": "nope", "concurrency": 1},
            r"No limit named 'nope' in LIMITS \(limits: by-tenant",
        ),
        ({"name": "provider", "key": "a", "concurrency": 1}, "has no key"),
        ({"name": "per-key"}, "Give a concurrency, a rate or both"),
        ({"name": "per-key", "concurrency": 0}, "at least 1"),
        ({"name": "per-key", "rate": "fast"}, "<count>/<unit>"),
        ({"name": "per-key", "concurrency": 1, "burst": 3}, "burst goes with a rate"),
    ],
)
def test_an_override_that_cannot_be_used_is_refused_and_changes_nothing(arguments, message):
    with pytest.raises(LimitOverrideError, match=message):
        limit_overrides.set_override(**arguments)
    assert not LimitOverride.objects.exists() and not LimitChange.objects.exists()


def test_each_change_is_logged_with_who_and_how(caplog):
    with caplog.at_level(logging.INFO, logger="jobs.limits"):
        limit_overrides.set_override("provider", rate="10/s", by="alice", via="admin")
    assert (
        "Limit provider: 50 per s (burst 50) (settings) → 10 per s (burst 10), by alice (admin)"
        in (caplog.text)
    )


# The command.


def test_jobs_limits_sets_lists_and_resets_an_override(capsys):
    call_command("jobs", "limits", "set", "per-key", "--concurrency", "1", "--by", "alice")
    assert "Limit 'per-key': 2 at once (settings) → 1 at once." in capsys.readouterr().out
    call_command("jobs", "limits")
    listed = capsys.readouterr().out
    assert "per-key: 2 at once per key (settings)" in listed
    assert "  override for every key: 1 at once, since " in listed and " by alice" in listed
    call_command("jobs", "limits", "list", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert {"limit": "per-key", "key": None, "override": "1 at once"}.items() <= rows[1].items()
    call_command("jobs", "limits", "reset", "per-key", "--by", "alice")
    assert "Limit 'per-key': 1 at once → 2 at once (settings)." in capsys.readouterr().out
    call_command("jobs", "limits", "reset", "per-key")
    assert "had no override: nothing to reset" in capsys.readouterr().out


def test_jobs_limits_set_refuses_what_the_api_refuses():
    with pytest.raises(CommandError, match="No limit named 'nope'"):
        call_command("jobs", "limits", "set", "nope", "--concurrency", "1")
    with pytest.raises(CommandError, match="Give a concurrency, a rate or both"):
        call_command("jobs", "limits", "set", "per-key")


# The docs' examples.


def test_the_docs_per_key_example_gives_premium_tenants_and_user_42_their_values():
    [block] = python_blocks(section("Values per key"))
    namespace: dict = {}
    exec(block, namespace)
    tenants, users = parse_limits(namespace["LIMITS"])
    assert tenants.values("per-tenant:premium-acme") == Values(10, 100, 1.0, 100)
    assert tenants.values("per-tenant:acme") == Values(1, None, None, None)
    assert users.values("per-user:42") == Values(10, None, None, None)
    assert users.values("per-user:7") == Values(1, None, None, None)


def test_the_docs_override_example_changes_the_limits_of_the_first_example():
    [settings_block] = python_blocks(section("Limits: concurrency, rates and fair shares"))[:1]
    namespace: dict = {}
    exec(settings_block, namespace)
    with override_settings(TASKS=namespace["TASKS"]):
        [block] = python_blocks(section("Change a limit at runtime"))
        exec(block, {})
        assert [
            (c.name, c.key, c.after, c.changed_by) for c in LimitChange.objects.order_by("id")
        ] == [
            ("sms-provider", "", "2 per s (burst 2)", "alice"),
            ("sms-per-user", "42", "3 at once", "alice"),
            ("sms-provider", "", "10 per s (burst 10) (settings)", "alice"),
        ]
        assert [str(o) for o in limit_overrides.overrides()] == ["sms-per-user:42"]


# The admin.


def test_an_operator_overrides_a_limit_in_the_admin_and_the_dashboard_says_so(admin_client):
    limited_run.enqueue("a")
    add = reverse("admin:jobs_limitoverride_add")
    refused = admin_client.post(add, {"name": "per-key", "rate_text": "fast"})
    assert refused.status_code == 200
    assert "is not &#x27;&lt;count&gt;/&lt;unit&gt;&#x27;" in refused.content.decode()
    assert not LimitOverride.objects.exists()

    response = admin_client.post(add, {"name": "per-key", "concurrency": "1", "rate_text": ""})
    assert response.status_code == 302
    assert values("per-key:a")[0] == 1
    change = LimitChange.objects.get()
    assert (change.via, change.changed_by, change.after) == ("admin", "admin", "1 at once")
    dashboard = admin_client.get(reverse("admin:jobs_job_dashboard")).content.decode()
    assert "Overridden: 1 at once</strong> by admin" in dashboard

    # Edited, the override is what the form says: the concurrency is no longer overridden.
    override = LimitOverride.objects.get()
    page = reverse("admin:jobs_limitoverride_change", args=[override.pk])
    admin_client.post(page, {"concurrency": "", "rate_text": "5/s", "burst": "2"})
    assert values("per-key:a") == (2, 5, 1.0, 2)
    admin_client.post(
        reverse("admin:jobs_limitoverride_delete", args=[override.pk]), {"post": "yes"}
    )
    assert values("per-key:a") == (2, None, None, None)
    history = admin_client.get(reverse("admin:jobs_limitchange_changelist")).content.decode()
    assert history.count("per-key") >= 3
    assert "5 per s (burst 2)" in history


def test_changing_a_limit_needs_its_own_permission(client, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_limitoverride"))
    client.force_login(viewer)
    assert client.get(reverse("admin:jobs_limitoverride_changelist")).status_code == 200
    assert client.get(reverse("admin:jobs_limitoverride_add")).status_code == 403
    assert (
        client.post(reverse("admin:jobs_limitoverride_add"), {"name": "per-key"}).status_code == 403
    )


# Real workers.


def ledger(key: str) -> list[tuple[float, float | None]]:
    """When each run of a key started and ended, by the database's clock."""
    return [
        (float(start), float(end) if end is not None else None)
        for start, end in fetch(
            "SELECT extract(epoch FROM started_at), extract(epoch FROM ended_at) "
            "FROM test_limit_ledger WHERE key = %s ORDER BY started_at",
            [key],
        )
    ]


def database_clock() -> float:
    return float(fetch_value("SELECT extract(epoch FROM clock_timestamp())"))


def test_two_workers_hold_each_key_to_its_own_concurrency(start_worker, limited_env, limit_ledger):
    ids = [r.id for r in tiered_run.enqueue_many([(("gold", 0.1), {})] * 30)]
    ids += [r.id for r in tiered_run.enqueue_many([(("tin", 0.1), {})] * 10)]
    for _ in range(2):
        start_worker("--concurrency", "2", "--threads", "3", env=limited_env, wait=False)
    done = Job.objects.filter(id__in=ids, status=JobStatus.SUCCESSFUL)
    wait_until(lambda: done.count() == len(ids), timeout=120)
    assert most_at_once(ledger("gold")) == 3
    assert most_at_once(ledger("tin")) == 1


def test_a_lowered_limit_starts_no_job_beyond_it_and_a_raised_one_lets_the_backlog_flow(
    start_worker, limited_env, limit_ledger
):
    ids = [r.id for r in limited_run.enqueue_many([(("k", 0.3), {})] * 60)]
    for _ in range(2):
        start_worker("--concurrency", "2", "--threads", "3", env=limited_env, wait=False)
    wait_until(lambda: LimitKey.objects.get(key="per-key:k").running == 2, timeout=30)

    limit_overrides.set_override("per-key", concurrency=1, by="test")
    lowered_at = database_clock()
    wait_until(lambda: len([s for s, _ in runs(ids) if s > lowered_at]) >= 3, timeout=30)
    # Each job claimed after the change found no other running: the two that
    # ran then had ended. (A job's run is its claim to its outcome, by the
    # database's clock.)
    everything = runs(ids)
    for start, _ in (run for run in everything if run[0] > lowered_at):
        beside = [s for s, e in everything if s < start < e]
        assert beside == [], f"a job claimed at {start} beside {len(beside)} running"

    limit_overrides.set_override("per-key", concurrency=6, by="test")
    raised_at = database_clock()
    wait_until(lambda: reached(runs(ids), 6) is not None, timeout=30)
    flowing = reached(runs(ids), 6) - raised_at
    print(f"6 jobs ran at once {flowing:.3f} s after the limit was raised")
    assert flowing < 1.0
    limit_overrides.remove_override("per-key", by="test")
    done = Job.objects.filter(id__in=ids, status=JobStatus.SUCCESSFUL)
    wait_until(lambda: done.count() == len(ids), timeout=60)
    assert most_at_once(runs(ids)) <= 6


def runs(ids: list[str]) -> list[tuple[float, float]]:
    """Each job's claim and outcome by the database's clock; a running one as if ending now."""
    now = database_clock()
    return [
        (float(start), float(end) if end is not None else now)
        for start, end in fetch(
            "SELECT extract(epoch FROM started_at), extract(epoch FROM finished_at) "
            "FROM jobs_job WHERE id = ANY(%s::uuid[]) AND started_at IS NOT NULL",
            [ids],
        )
    ]


def reached(intervals: list[tuple[float, float]], count: int) -> float | None:
    """The first instant at which `count` of the intervals overlap, if any."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = 0
    for moment, step in events:
        now += step
        if now >= count:
            return moment
    return None
