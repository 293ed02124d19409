"""
Retry policies per task (jobs.retries): the backoff, the exceptions worth
another attempt, and what each failed attempt's entry says it led to.
"""

import importlib
import io

import pytest
from django.core.management import call_command
from django.tasks import task
from django.tasks.exceptions import InvalidTask
from django.urls import reverse

from jobs.exceptions import DoNotRetry, JobInterrupted, JobTimeout, RetryJob
from jobs.models import Job
from jobs.retries import Retry, RetryRules
from jobs.testing import run_due_jobs
from tests.conftest import wait_for_status
from tests.docs.pages import python_blocks, section
from tests.tasks import (
    BadNumber,
    ProviderBusy,
    add,
    hang_once,
    provider_delay,
    send_under_policy,
    send_with_delay_callable,
)

BACKEND = Retry(base=1.0, cap=10.0)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"base": -1}, "base must be a number of at least 0"),
        ({"factor": 0.5}, "factor must be a number of at least 1"),
        ({"cap": "60"}, "cap must be a number"),
        ({"jitter": 2}, "jitter is the random share"),
    ],
)
def test_a_backoff_that_makes_no_sense_is_refused_with_the_reason(policy, message):
    with pytest.raises(InvalidTask, match=message):
        Retry(**policy)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": 30}, r"retry is a jobs.retries.Retry\(base=..."),
        ({"retry_on": ["ValueError"]}, "retry_on is a list of exception classes"),
        ({"dont_retry_on": [ValueError, 3]}, "dont_retry_on is a list of exception classes"),
    ],
)
def test_retry_options_are_checked_where_the_task_is_declared(options, message):
    with pytest.raises(InvalidTask, match=message):
        task(**options)(provider_delay)


def test_a_backoff_without_jitter_is_exact_and_stops_at_its_cap():
    backoff = Retry(base=0.5, factor=3, cap=4.0, jitter=0)
    assert [backoff.delay(attempt) for attempt in (1, 2, 3, 4)] == [0.5, 1.5, 4.0, 4.0]


def test_the_rules_retry_what_retry_on_names_and_never_what_dont_retry_on_names():
    rules = RetryRules.of(send_under_policy, BACKEND)
    assert rules.after(ProviderBusy(), 2) == (
        pytest.approx(0.15),
        "the task's backoff, 0.05 s * 3^(n-1), at most 1 s",
    )
    assert rules.after(BadNumber(), 1) == (
        None,
        "not retried: BadNumber is in the task's dont_retry_on",
    )
    assert rules.after(KeyError(), 1) == (
        None,
        "not retried: KeyError is not in the task's retry_on (ProviderBusy, BadNumber)",
    )
    # The task's own requests come first: RetryJob is retried whatever the lists say.
    assert rules.after(RetryJob(countdown=7), 1) == (7, "the task asked for this delay (RetryJob)")
    assert rules.after(DoNotRetry(), 1)[0] is None


def test_a_task_without_a_policy_retries_everything_with_the_backends_backoff():
    delay, reason = RetryRules.of(add, BACKEND).after(ValueError(), 1)
    assert 0.5 <= delay <= 1.0
    assert reason == "the backend's backoff, 1 s * 2^(n-1), at most 10 s, 50% of it random"


def test_a_delay_callable_that_fails_falls_back_on_the_backends_backoff():
    def broken(attempt: int, error: BaseException) -> float:
        raise ZeroDivisionError("no")

    delay, reason = RetryRules(backoff=broken, default=BACKEND, own=True).after(ValueError(), 1)
    assert 0.5 <= delay <= 1.0
    assert reason.startswith("the task's retry delay ")
    assert "broken() raised ZeroDivisionError: no; the backend's backoff" in reason
    negative = RetryRules(backoff=lambda attempt, error: -1, default=BACKEND, own=True)
    assert "returned -1, not seconds" in negative.after(ValueError(), 1)[1]


def notes(job_id: str) -> list[str]:
    return [entry["retry"] for entry in Job.objects.get(id=job_id).errors]


def test_a_worker_retries_by_exception_class_with_the_tasks_backoff(start_worker):
    busy = send_under_policy.enqueue("ProviderBusy")
    bad = send_under_policy.enqueue("BadNumber")
    unlisted = send_under_policy.enqueue("KeyError")
    delayed = send_with_delay_callable.enqueue()
    start_worker("--concurrency", "1")
    for result in (busy, bad, unlisted, delayed):
        assert wait_for_status(result.id) == "FAILED"
    assert notes(busy.id) == [
        "next attempt in 0.05 s: the task's backoff, 0.05 s * 3^(n-1), at most 1 s",
        "next attempt in 0.15 s: the task's backoff, 0.05 s * 3^(n-1), at most 1 s",
        "not retried: 3 of 3 attempts spent",
    ]
    assert notes(bad.id) == ["not retried: BadNumber is in the task's dont_retry_on"]
    assert notes(unlisted.id) == [
        "not retried: KeyError is not in the task's retry_on (ProviderBusy, BadNumber)"
    ]
    assert notes(delayed.id) == [
        "next attempt in 0.1 s: the task's retry delay provider_delay()",
        "not retried: 2 of 2 attempts spent",
    ]
    # The gaps are the policy's: the second attempt began 0.05 s or more after the first failed.
    first, second = Job.objects.get(id=busy.id).errors[:2]
    assert second["at"] - first["at"] >= 0.05


def test_an_attempt_the_worker_ends_follows_the_tasks_rules_too(start_worker):
    result = hang_once.enqueue()
    start_worker("--concurrency", "1")
    assert wait_for_status(result.id) == "FAILED"
    job = Job.objects.get(id=result.id)
    assert job.attempts == 1
    [entry] = job.errors
    assert entry["exception_class_path"] == f"{JobTimeout.__module__}.JobTimeout"
    assert entry["retry"] == "not retried: JobTimeout is in the task's dont_retry_on"


@pytest.mark.django_db(transaction=True)
def test_the_job_page_and_jobs_show_say_what_each_failed_attempt_led_to(admin_client):
    result = send_under_policy.enqueue("ProviderBusy")
    run_due_jobs(include_retries=True)
    page = admin_client.get(reverse("admin:jobs_job_change", args=[result.id])).content.decode()
    first = "next attempt in 0.05 s: the task&#x27;s backoff, 0.05 s * 3^(n-1), at most 1 s"
    assert page.count(first) == 2  # under the attempt's error, and in the timeline
    assert "not retried: 3 of 3 attempts spent" in page
    out = io.StringIO()
    call_command("jobs", "show", result.id, stdout=out)
    shown = out.getvalue()
    assert "next attempt in 0.15 s: the task's backoff" in shown
    assert shown.rstrip().endswith("not retried: 3 of 3 attempts spent")


def test_the_readmes_retry_policies_do_what_it_says(tmp_path, monkeypatch):
    text = section("Retry policies")
    [block] = python_blocks(text)
    (tmp_path / "readme_retry_tasks.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("readme_retry_tasks")
    sms = RetryRules.of(module.send_sms, BACKEND)
    for attempt, ceiling in ((1, 5.0), (2, 15.0), (3, 45.0), (6, 600.0)):
        delay, _ = sms.after(module.ProviderBusy(), attempt)
        assert ceiling * 0.75 <= delay <= ceiling
    assert sms.after(ConnectionResetError(), 1)[0] is not None
    assert sms.after(module.BadNumber(), 1)[0] is None
    assert sms.after(ValueError(), 1)[0] is None
    push = RetryRules.of(module.send_push, BACKEND)
    assert push.after(ValueError(), 1)[0] == 30.0
    asked = ValueError()
    asked.retry_after = 12
    assert push.after(asked, 1)[0] == 12.0


def test_a_job_interrupted_by_its_neighbour_is_retried_whatever_the_lists_say():
    rules = RetryRules.of(send_under_policy, BACKEND)
    delay, reason = rules.after(JobInterrupted("a neighbour timed out"), 1)
    assert delay == pytest.approx(0.05) and reason.startswith("the task's backoff")


def test_a_delay_beyond_a_year_or_not_finite_is_refused():
    with pytest.raises(InvalidTask, match="cap must be at most"):
        Retry(cap=400 * 86400)
    with pytest.raises(InvalidTask, match="base must be a number"):
        Retry(base=float("inf"))
    huge = RetryRules(backoff=lambda attempt, error: float("inf"), default=BACKEND, own=True)
    assert "not seconds from 0 to" in huge.after(ValueError(), 1)[1]
    # An attempt far past any cap stays at the cap.
    assert Retry(base=1, factor=10, cap=60, jitter=0).delay(5000) == 60
