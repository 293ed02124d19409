"""
`manage.py jobs tail` against a real worker: each job's enqueue, start,
retry and finish, in order, filtered by tag, until SIGTERM ends it cleanly.
"""

import json
import signal

from tests.conftest import ManageProcess, wait_for_status, wait_until
from tests.tasks import fails_twice, sleep_for


def events(tail: ManageProcess) -> list[dict]:
    return [json.loads(line) for line in tail.output().splitlines() if line.startswith("{")]


def test_tail_tells_enqueue_start_retry_and_finish_in_order(start_worker, worker_env, tmp_path):
    tail = ManageProcess(
        "jobs", worker_env, tmp_path / "tail.log", ["tail", "--json", "--tag", "watched"]
    )
    try:
        wait_until(lambda: "Following jobs" in tail.output(), timeout=30)
        start_worker("--concurrency", "1")
        slow = sleep_for.using(tags=["watched"]).enqueue(0.3)
        failing = fails_twice.using(tags=["watched"]).enqueue()
        unwatched = sleep_for.enqueue(0.01)
        for result in (slow, failing, unwatched):
            wait_for_status(result.id)

        def told(job_id: str, count: int) -> list[dict]:
            return [event for event in events(tail) if event["id"] == job_id][:count]

        def failing_told() -> bool:
            """the failing job's five events were told"""
            tail.check_running()
            return len(told(failing.id, 5)) == 5

        wait_until(failing_told, timeout=30)
        wait_until(lambda: len(told(slow.id, 3)) == 3, timeout=30)
        assert [e["event"] for e in told(slow.id, 3)] == ["enqueued", "started", "finished"]
        assert told(slow.id, 3)[-1]["status"] == "SUCCESSFUL"
        story = [(e["event"], e["attempt"], e["status"]) for e in told(failing.id, 5)]
        assert story == [
            ("enqueued", 0, "READY"),
            ("started", 1, "RUNNING"),
            ("retrying", 1, "READY"),
            ("started", 2, "RUNNING"),
            ("finished", 2, "FAILED"),
        ]
        assert told(failing.id, 5)[-1]["error"]
        assert not told(unwatched.id, 1)
        tail.signal(signal.SIGTERM)
        assert tail.wait(timeout=30) == 0
    finally:
        tail.kill()
