"""Outages: a scheduler frozen inside its pass, a database that is not there."""

import signal
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from django.db import connection

from jobs.scheduler.runner import RETRY_DELAY_MAX
from tests.conftest import fetch, fetch_value, wait_until
from tests.scheduler.conftest import add_schedule, ticks_of
from tests.tcp_proxy import PostgresProxy, free_port

# Backends of the test database that sit idle inside a transaction holding a
# lock on jobs_schedule: a pass stopped before it commits. A pass that runs
# takes milliseconds; such a one has been idle for a second.
STALLED_PASSES = """
SELECT count(DISTINCT activity.pid) FROM pg_stat_activity AS activity
JOIN pg_locks AS lock ON lock.pid = activity.pid
WHERE activity.datname = current_database()
  AND activity.state = 'idle in transaction'
  AND activity.state_change < statement_timestamp() - interval '1 second'
  AND lock.relation = 'jobs_schedule'::regclass
"""


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat: 'T' for a stopped process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_a_scheduler_frozen_inside_its_pass_holds_its_schedule_for_seconds_only(
    start_scheduler, worker_env, tmp_path
):
    request = tmp_path / "freeze"
    env = {**worker_env, "TEST_FREEZE_REQUEST": str(request)}
    schedulers = [start_scheduler(env, wait=False) for _ in range(3)]
    for scheduler in schedulers:
        scheduler.wait_started()
    schedule = add_schedule("every-second", "* * * * * *", "tests.scheduler_tasks.tick")
    wait_until(lambda: len(ticks_of("every-second")) >= 2, timeout=10)

    # The next scheduler to enqueue a tick stops itself inside that pass.
    request.touch()
    taken = Path(f"{request}.taken")
    pid = int(wait_until(lambda: taken.exists() and taken.read_text(), timeout=10))
    [frozen] = [scheduler for scheduler in schedulers if scheduler.process.pid == pid]
    stalled_at = time.monotonic()
    wait_until(lambda: process_state(pid) == "T", timeout=5)
    wait_until(lambda: fetch_value(STALLED_PASSES) == 1, timeout=5)
    frozen_tick = fetch_value("SELECT next_run_at FROM jobs_schedule WHERE id = %s", [schedule.id])

    def lock_freed():
        """Postgres ended the frozen scheduler's transaction"""
        return fetch_value(STALLED_PASSES) == 0

    try:
        wait_until(lock_freed, timeout=8, interval=0.1)
        freed_after = time.monotonic() - stalled_at

        def fifteen_seconds_ticked():
            """the others enqueued the ticks of 15 s while the scheduler stayed frozen"""
            assert process_state(pid) == "T"
            last = fetch_value("SELECT last_run_at FROM jobs_schedule WHERE id = %s", [schedule.id])
            return last >= frozen_tick + timedelta(seconds=15)

        wait_until(fifteen_seconds_ticked, timeout=25, interval=0.2)
    finally:
        frozen.process.send_signal(signal.SIGCONT)

    # It wakes to a closed connection, reconnects and carries on: alone, it
    # enqueues the ticks.
    wait_until(lambda: "Database error (" in frozen.output(), timeout=10)
    others = [scheduler for scheduler in schedulers if scheduler is not frozen]
    assert all(scheduler.stop() == 0 for scheduler in others)
    enqueued_before = len(frozen.enqueued())
    wait_until(lambda: len(frozen.enqueued()) >= enqueued_before + 2, timeout=10)
    assert frozen.stop() == 0

    keys = fetch(
        "SELECT unique_key, count(*), max(extract(epoch FROM enqueued_at - run_at)) "
        "FROM jobs_job WHERE unique_key LIKE %s GROUP BY unique_key",
        [f"schedule:{schedule.id}:%"],
    )
    assert [key for key, count, _ in keys if count != 1] == [], "a tick has more than one job"
    ticks = sorted(datetime.fromisoformat(key.split(":", 2)[2]) for key, _, _ in keys)
    assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))], (
        "a tick is missing"
    )
    assert frozen_tick + timedelta(seconds=15) < ticks[-1]
    logged = Counter(
        tick
        for scheduler in schedulers
        for name, tick in scheduler.enqueued()
        if name == schedule.name
    )
    assert sorted(datetime.fromisoformat(tick) for tick in logged) == ticks
    assert set(logged.values()) == {1}, "a tick was logged as enqueued twice"
    latest = max(late for _, _, late in keys)
    assert latest <= 10, f"a tick was enqueued {latest:.1f} s late"
    print(
        f"{len(ticks)} ticks, each once; the frozen scheduler's lock freed after "
        f"{freed_after:.1f} s; latest enqueue {latest:.1f} s after its tick"
    )


def test_runscheduler_waits_for_its_database_and_starts_when_it_answers(
    start_scheduler, worker_env
):
    schedule = add_schedule("every-second", "* * * * * *")
    params = connection.get_connection_params()
    password = params.get("password") or "not-for-the-log"  # trust ignores it
    port = free_port()
    proxy = PostgresProxy(port)
    url = f"postgres://{params.get('user') or 'postgres'}:{password}@127.0.0.1:{port}/"
    env = {**worker_env, "DATABASE_URL": url + params["dbname"], "JOBS_LOG_LEVEL": "DEBUG"}
    waiting = (
        f"WARNING jobs.scheduler Cannot connect to database {params['dbname']} on "
        f"127.0.0.1:{port} ("
    )
    retrying = "DEBUG jobs.scheduler Database still unreachable"

    def retries(outage: int):
        """A condition: the scheduler waits out its outage-th outage, trying twice more."""
        before = scheduler.output().count(retrying)

        def condition():
            """the scheduler waits for the database, trying again and again"""
            output = scheduler.output()
            assert scheduler.process.poll() is None, output
            return output.count(waiting) == outage and output.count(retrying) >= before + 2

        return condition

    def enqueued_within(seconds: float, after: int) -> float:
        opened = time.monotonic()
        proxy.open()
        wait_until(lambda: len(scheduler.enqueued()) > after, timeout=seconds)
        return time.monotonic() - opened

    scheduler = start_scheduler(env, wait=False)
    try:
        # Nothing listens: it waits, saying so once, and starts when it answers.
        wait_until(retries(outage=1), timeout=10)
        first = enqueued_within(RETRY_DELAY_MAX + 3, after=0)
        assert " started: " in scheduler.output()

        # The database goes away under it, and comes back.
        proxy.close()
        wait_until(retries(outage=2), timeout=15)
        second = enqueued_within(RETRY_DELAY_MAX + 3, after=len(scheduler.enqueued()))
        assert scheduler.stop() == 0
    finally:
        proxy.close()
    output = scheduler.output()
    assert "Traceback" not in output and password not in output
    assert output.count(waiting) == 2, "said once per outage, not at every try"
    database = f"Database {params['dbname']} on 127.0.0.1:{port}"
    assert output.count(f"INFO jobs.scheduler {database} reachable\n") == 1
    assert output.count(f"INFO jobs.scheduler {database} reachable again\n") == 1

    keys = fetch(
        "SELECT unique_key FROM jobs_job WHERE unique_key LIKE %s", [f"schedule:{schedule.id}:%"]
    )
    ticks = sorted(datetime.fromisoformat(key.split(":", 2)[2]) for (key,) in keys)
    assert ticks[0] == schedule.next_run_at, "the ticks of the first outage were lost"
    assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))]
    logged = Counter(tick for _, tick in scheduler.enqueued())
    assert sorted(datetime.fromisoformat(tick) for tick in logged) == ticks
    assert set(logged.values()) == {1}, "a tick was logged as enqueued twice"
    print(f"enqueuing {first:.1f} s after the database answered, {second:.1f} s after it returned")
