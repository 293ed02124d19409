"""runscheduler processes against the test database: racing, following the admin, stopping."""

import itertools
from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from tests.conftest import fetch, fetch_value, wait_until
from tests.scheduler.conftest import add_schedule, form_data, ticks_of


@pytest.mark.slow
def test_three_schedulers_and_a_per_second_schedule_for_20_s_one_job_per_tick(
    start_scheduler, start_worker
):
    schedulers = [start_scheduler() for _ in range(3)]
    # A worker runs the jobs as they come, so a tick enqueued twice would be
    # two rows (the unique key only folds jobs that are still live).
    start_worker("--concurrency", "1")
    schedule = add_schedule("every-second", "* * * * * *")
    started = schedule.next_run_at

    def ticks_passed():
        """20 ticks of the per-second schedule were enqueued"""
        last = fetch_value("SELECT last_run_at FROM jobs_schedule WHERE id = %s", [schedule.id])
        return last is not None and last >= started + timedelta(seconds=19)

    wait_until(ticks_passed, timeout=40, interval=0.5)
    assert all(scheduler.stop() == 0 for scheduler in schedulers)

    keys = fetch(
        "SELECT unique_key, count(*) FROM jobs_job WHERE unique_key LIKE %s GROUP BY unique_key",
        [f"schedule:{schedule.id}:%"],
    )
    assert keys, "no job was enqueued"
    assert [key for key, count in keys if count != 1] == [], "a tick has more than one job"
    ticks = sorted(datetime.fromisoformat(key.split(":", 2)[2]) for key, _ in keys)
    assert ticks[0] == started
    assert ticks == [started + timedelta(seconds=n) for n in range(len(ticks))], "a tick is missing"
    assert len(ticks) >= 20

    logged = Counter(
        tick
        for scheduler in schedulers
        for name, tick in scheduler.enqueued()
        if name == "every-second"
    )
    assert [tick for tick, count in logged.items() if count != 1] == []
    assert sorted(datetime.fromisoformat(tick) for tick in logged) == ticks
    shares = [sum(1 for name, _ in s.enqueued() if name == "every-second") for s in schedulers]
    lateness = fetch(
        """
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY late), max(late)
        FROM (SELECT extract(epoch FROM enqueued_at - run_at) AS late
              FROM jobs_job WHERE unique_key LIKE %s) AS jobs
        """,
        [f"schedule:{schedule.id}:%"],
    )[0]
    print(
        f"{len(ticks)} ticks; enqueued by each scheduler: {shares}; "
        f"enqueued after the tick: median {lateness[0] * 1000:.0f} ms, "
        f"max {lateness[1] * 1000:.0f} ms"
    )


def test_admin_disable_stops_a_schedule_at_once_and_an_edit_fires_on_the_new_expression(
    start_scheduler, admin_client
):
    start_scheduler()
    target = add_schedule("target", "* * * * * *")
    # The witness keeps ticking every second: once it has ticked after a
    # change, the scheduler has had its chance to (wrongly) fire the target.
    add_schedule("witness", "* * * * * *")
    wait_until(lambda: len(ticks_of("target")) >= 2)

    url = f"/admin/jobs/schedule/{target.id}/change/"
    response = admin_client.post(url, form_data(target, enabled=None, queue="default"))
    assert response.status_code == 302
    disabled_at = timezone.now()
    wait_until(lambda: len(ticks_of("witness", after=disabled_at)) >= 3)
    assert ticks_of("target", after=disabled_at) == []

    response = admin_client.post(url, form_data(target, cron="*/3 * * * * *"))
    assert response.status_code == 302
    edited_at = timezone.now()
    wait_until(lambda: len(ticks_of("target", after=edited_at)) >= 3, timeout=20)
    fired = ticks_of("target", after=edited_at)
    assert all(tick.second % 3 == 0 for tick in fired)
    assert all(b - a == timedelta(seconds=3) for a, b in itertools.pairwise(fired))


def test_runscheduler_stops_cleanly_on_sigterm(start_scheduler):
    scheduler = start_scheduler()
    assert scheduler.stop() == 0
    assert "Scheduler stopped" in scheduler.output()
