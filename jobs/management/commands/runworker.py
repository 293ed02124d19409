import importlib.util
import os
import sys
from typing import Any

from django.core.management.base import CommandError

from jobs.exceptions import WorkerCannotStart
from jobs.management.backends import check_health_file, queue_backend
from jobs.management.base import BaseCommand
from jobs.management.command_logging import configure_command_logging
from jobs.worker.config import WorkerConfig
from jobs.worker.coordinator import Coordinator
from jobs.worker.queue_slots import QueueSlotsError, parse_queues


def default_concurrency() -> int:
    return max(2, os.cpu_count() or 1)


class Command(BaseCommand):
    help = (
        "Run a worker: claim due jobs from Postgres and run them in a pool of executor "
        "processes. SIGTERM or Ctrl-C stops claiming and lets running jobs finish within "
        "--shutdown-timeout; a second signal stops at once."
    )

    def add_arguments(self, parser):
        _add_jobs_options(parser.add_argument_group("Which jobs"))
        _add_capacity_options(parser.add_argument_group("How many at once"))
        _add_executors_options(parser.add_argument_group("Executor processes"))
        _add_running_options(parser.add_argument_group("Running under a supervisor"))

    def handle(self, *args, **options):
        configure_command_logging(options["verbosity"], sys.stderr)
        check_health_file(options["health_file"])
        backend = queue_backend(options["backend"], "runworker")
        # No QUEUES (an empty list) allows any queue name, as in Django: the
        # worker then works every queue unless --queues names some.
        queues, queue_slots = sorted(backend.queues), {}
        if options["queues"] is not None:
            try:
                queues, queue_slots = parse_queues(options["queues"])
            except QueueSlotsError as error:
                raise CommandError(str(error)) from None
            if not queues:
                raise CommandError(
                    f"--queues {options['queues']!r} names no queue; leave it out to work "
                    "the backend's queues."
                )
            unknown = [name for name in queues if backend.queues and name not in backend.queues]
            if unknown:
                raise CommandError(
                    f"Unknown queue(s) {', '.join(unknown)}; the backend's QUEUES are "
                    f"{', '.join(sorted(backend.queues))}."
                )
        if options["shutdown_timeout"] < 0:
            raise CommandError("--shutdown-timeout must be 0 or more seconds.")
        for name in ("concurrency", "threads"):
            if options[name] < 1:
                raise CommandError(f"--{name} must be at least 1.")
        if options["async_slots"] < 0:
            raise CommandError("--async-slots must be 0 or more.")
        for name in ("max_tasks_per_child", "max_memory_per_child"):
            if options[name] is not None and options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1.")
        if options["max_memory_per_child"] and importlib.util.find_spec("psutil") is None:
            raise CommandError(
                "--max-memory-per-child reads the executors' memory with psutil, which is not "
                'installed: pip install "django-pgjobs[memory]".'
            )
        if options["prefetch"] is not None and options["prefetch"] < 1:
            raise CommandError("--prefetch must be at least 1.")
        config = WorkerConfig(
            queues=tuple(queues),
            queue_slots=queue_slots,
            concurrency=options["concurrency"],
            threads=options["threads"],
            async_slots=options["async_slots"],
            prefetch=options["prefetch"],
            backend=options["backend"],
            shutdown_timeout=options["shutdown_timeout"],
            health_file=options["health_file"],
            max_tasks_per_child=options["max_tasks_per_child"],
            max_memory_per_child=(
                options["max_memory_per_child"] * 1024 * 1024
                if options["max_memory_per_child"]
                else None
            ),
        )
        try:
            Coordinator(config).run()
        except WorkerCannotStart as error:
            raise CommandError(str(error)) from None


def _add_jobs_options(group: Any) -> None:
    group.add_argument(
        "--queues",
        default=None,
        help=(
            "Comma-separated queues to take jobs from (default: the backend's QUEUES, or "
            "every queue when QUEUES is empty). A queue may name its slots in this worker, "
            "reports:2,default: at most 2 jobs of reports at once here, the other queues "
            "sharing the rest."
        ),
    )
    group.add_argument(
        "--backend",
        default="default",
        help="Alias of the TASKS backend to work for (default: 'default').",
    )


def _add_capacity_options(group: Any) -> None:
    group.add_argument(
        "--concurrency",
        type=int,
        default=default_concurrency(),
        help="Executor processes (default: the CPU count, at least 2).",
    )
    group.add_argument(
        "--threads",
        type=int,
        default=1,
        help=(
            "Jobs each executor process runs at once, in threads: more for I/O-bound "
            "tasks (HTTP calls, e-mail). Jobs run at once = concurrency x threads. A job "
            "that times out or is cancelled stops its whole process, interrupting the "
            "jobs beside it (retried while attempts remain). Default: 1."
        ),
    )
    group.add_argument(
        "--async-slots",
        type=int,
        default=0,
        help=(
            "Async tasks (async def) each executor process runs at once on an event loop, "
            "beside its threads: many I/O-bound tasks for one thread's cost. A coroutine past "
            "its timeout, or cancelled, is cancelled; one that blocks the loop has its process "
            "killed. Default: 0 (async tasks run on the threads, one at a time each)."
        ),
    )
    group.add_argument(
        "--prefetch",
        type=int,
        default=None,
        help=(
            "Jobs each executor holds: those running and those queued behind them. "
            "Default: adaptive, about 0.1 s of work judged by recent jobs (one slow "
            "job, up to 250 short ones). 1 gives the fairest spread of long jobs "
            "over workers."
        ),
    )


def _add_executors_options(group: Any) -> None:
    group.add_argument(
        "--max-tasks-per-child",
        type=int,
        default=None,
        help="Replace an executor after it ran this many jobs (default: never).",
    )
    group.add_argument(
        "--max-memory-per-child",
        type=int,
        default=None,
        metavar="MB",
        help="Replace an executor, once idle, when its resident memory passes this many MB.",
    )


def _add_running_options(group: Any) -> None:
    group.add_argument(
        "--health-file",
        default=None,
        metavar="PATH",
        help=(
            "Keep PATH rewritten every second while the worker's loop runs, saying "
            "whether it holds its database connection: for `manage.py probe PATH` "
            "as a liveness or readiness check (default: none)."
        ),
    )
    group.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="Seconds running jobs get to finish after SIGTERM (default: 30).",
    )
