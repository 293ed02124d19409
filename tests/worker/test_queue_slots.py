"""
Slots per queue in one worker (`runworker --queues reports:2,default`): at
most that many of the queue's jobs at once in the worker, the other queues
sharing the rest; and a --queues that cannot be read is refused by name.
"""

import pytest
from django.core.management import CommandError, call_command

from jobs.models import Job, JobStatus
from jobs.worker.queue_slots import QueueSlotsError, parse_queues
from tests.conftest import fetch, wait_until
from tests.limits.test_limits import most_at_once
from tests.tasks import limited_run


def test_queues_and_their_slots_are_read_in_order():
    assert parse_queues("reports:2, default ,emails:10") == (
        ["reports", "default", "emails"],
        {"reports": 2, "emails": 10},
    )
    assert parse_queues("default") == (["default"], {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("reports:0", "'reports:0' gives queue 'reports' '0' slots"),
        ("reports:two", "a whole number of at least 1, as in reports:2"),
        ("reports:", "gives queue 'reports' '' slots"),
        (":2", "names no queue"),
        ("reports,reports:2", "or one named already"),
    ],
)
def test_slots_that_cannot_be_read_are_refused_by_name(text, message):
    with pytest.raises(QueueSlotsError, match=message):
        parse_queues(text)


@pytest.mark.django_db
def test_runworker_refuses_them_before_it_starts():
    with pytest.raises(CommandError, match="a whole number of at least 1"):
        call_command("runworker", "--queues", "reports:-1")


@pytest.mark.django_db(transaction=True)
def test_a_capped_queue_never_runs_more_than_its_slots_while_the_others_fill_the_rest(
    start_worker, limit_ledger
):
    reports = [
        r.id for r in limited_run.using(queue_name="reports").enqueue_many([(("r", 0.5), {})] * 6)
    ]
    others = [r.id for r in limited_run.enqueue_many([(("d", 0.5), {})] * 16)]
    start_worker("--queues", "reports:2,default", "--concurrency", "2", "--threads", "5")
    done = Job.objects.filter(id__in=reports + others, status=JobStatus.SUCCESSFUL)
    wait_until(lambda: done.count() == len(reports) + len(others), timeout=60)

    rows = fetch(
        "SELECT key, extract(epoch FROM started_at), extract(epoch FROM ended_at) "
        "FROM test_limit_ledger"
    )
    runs = {key: [(float(start), float(end)) for k, start, end in rows if k == key] for key in "rd"}
    assert len(runs["r"]) == 6 and len(runs["d"]) == 16
    assert most_at_once(runs["r"]) == 2, "reports ran past its 2 slots, or never used both"
    # A report's freed slot takes the next one at once, not at the next poll
    # (5 s): three rounds of two take 1.5 s.
    span = max(end for _, end in runs["r"]) - min(start for start, _ in runs["r"])
    assert span < 5, f"the reports took {span:.1f} s: a freed slot waited for a poll"
    # The other queue had the rest of the 10 slots: 8 at once, beside the 2.
    assert most_at_once(runs["d"]) == 8
