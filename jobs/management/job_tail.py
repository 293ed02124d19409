"""
`manage.py jobs tail`: jobs as they are enqueued, start, retry and finish,
like `tail -f`, until Ctrl-C or SIGTERM (jobs.job_events reads them).
"""

import json
import signal
from typing import Any

import psycopg
from django.core.serializers.json import DjangoJSONEncoder
from django.tasks import task_backends

from jobs.job_events import JobEvent, JobTail, TailFilter
from jobs.management.job_actions import add_tag_filter
from jobs.models import JobStatus
from jobs.worker.connection import connection_params


def add_tail(actions: Any) -> None:
    about = (
        "Print jobs as they are enqueued, start, retry and finish, until Ctrl-C; "
        "--json prints one JSON object per line, for scripts."
    )
    tail = actions.add_parser("tail", help=about, description=about)
    tail.add_argument("--queue", help="Only jobs of this queue.")
    tail.add_argument("--task", dest="task_path", help="Only jobs of this task path.")
    tail.add_argument(
        "--status",
        choices=JobStatus.values,
        help="Only what leaves a job in this status (FAILED: the failures).",
    )
    add_tag_filter(tail)


class TailAction:
    """tail; mixed into the `jobs` Command."""

    def _tail(self, backend: str, **options: Any) -> None:
        only = TailFilter(
            options["queue"], options["task_path"], options["status"], options["tags"]
        )
        stopping: list[int] = []

        def stop(signum: int, frame: object) -> None:
            stopping.append(signum)

        previous = signal.signal(signal.SIGTERM, stop)
        database = task_backends[backend].database
        try:
            with psycopg.connect(**connection_params(database), autocommit=True) as connection:
                tail = JobTail(connection, only)
                tail.start()
                if self.options["verbosity"] > 0:
                    self.stderr.write("Following jobs; Ctrl-C stops.")
                while not stopping:
                    for event in tail.events():
                        self.stdout.write(self._event_line(event))
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _event_line(self, event: JobEvent) -> str:
        if self.options["json"]:
            return json.dumps(event.as_dict(), cls=DjangoJSONEncoder)
        at = event.at.astimezone().strftime("%H:%M:%S.%f")[:-3]
        return f"{at}  {event.event:<9} {event.id[:8]}  {event.task_path}  {_detail(event)}"


def _detail(event: JobEvent) -> str:
    if event.event == "enqueued":
        due = f", due {event.due.astimezone():%H:%M:%S}" if event.due else ""
        return f"on {event.queue}{due}"
    attempt = f"attempt {event.attempt} of {event.max_attempts}"
    if event.event == "started":
        return f"{attempt} on {event.worker}"
    if event.event == "retrying":
        again = f"; again at {event.due.astimezone():%H:%M:%S}" if event.due else ""
        return f"{attempt} failed: {event.error}{again}"
    error = f": {event.error}" if event.error else ""
    return f"{event.status} after {attempt}{error}"
