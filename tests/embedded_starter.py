"""
Start the embedded Postgres from many threads released together, and say
what each got: called by tests/package/test_embedded_postgres.py in its own process,
and run as `python -m tests.embedded_starter PGDATA READY GO COUNT` by the
processes it starts, which wait for the file GO once they have touched READY.
"""

import sys
import threading
import time
from pathlib import Path

from project.embedded_postgres import ensure_running


def start_from_threads(pgdata: Path, count: int) -> list[str]:
    """ensure_running(pgdata) from count threads released together; what each got."""
    barrier = threading.Barrier(count)
    results: list[str] = []

    def start() -> None:
        barrier.wait()
        try:
            results.append(f"socket {ensure_running(pgdata)}")
        except BaseException as error:
            results.append(f"error {type(error).__name__}: {error}")

    threads = [threading.Thread(target=start) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


if __name__ == "__main__":
    pgdata, ready, go, count = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    print("\n".join(start_from_threads(pgdata, int(count))))
