import argparse
import getpass
import json
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS
from django.tasks.exceptions import InvalidTask

from jobs import metrics, operations
from jobs.backend import find_task
from jobs.exceptions import JobStateError
from jobs.ids import job_named
from jobs.management.backends import queue_backend
from jobs.management.base import BaseCommand, deprecation_notice
from jobs.models import Job, JobStatus
from jobs.retention import PrunePass

# Columns of `jobs list`, and of `show --json`.
LIST_FIELDS = ("id", "status", "task_path", "queue", "attempts", "max_attempts", "enqueued_at")
SHOW_FIELDS = (
    *LIST_FIELDS,
    "priority",
    "run_at",
    "started_at",
    "finished_at",
    "worker_ids",
    "args",
    "kwargs",
    "return_value",
    "errors",
    "snoozes",
    "retention",
)


class Command(BaseCommand):
    help = (
        "Look at jobs and act on them from the command line: enqueue a task by its path, "
        "show or list jobs, retry or cancel them by id or by filter, prune the finished "
        "ones past their retention; list, pause, resume or purge queues. Acting on a "
        "filter asks first (--yes for scripts); --json prints machine-readable output."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backend",
            default=DEFAULT_TASK_BACKEND_ALIAS,
            help="The TASKS backend (default: %(default)s).",
        )
        actions = parser.add_subparsers(dest="action", required=True, metavar="action")
        self._add_job_actions(actions)
        _add_prune(actions)
        queue_actions = _add_queue_actions(actions)
        for subparser in actions.choices.values():
            _add_output_options(subparser)
        # After the queue action too; `jobs queues` alone lists them.
        for subparser in queue_actions.choices.values():
            _add_output_options(subparser, json_default=argparse.SUPPRESS)

    def _add_job_actions(self, actions: Any) -> None:
        """enqueue, show, list, retry and cancel."""
        enqueue = actions.add_parser("enqueue", help="Enqueue a task by its dotted path.")
        enqueue.add_argument("task_path", help="e.g. accounts.tasks.send_welcome_email")
        enqueue.add_argument(
            "--args", dest="call_args", default="[]", help="A JSON list (default: [])."
        )
        enqueue.add_argument(
            "--kwargs", dest="call_kwargs", default="{}", help="A JSON object (default: {})."
        )
        enqueue.add_argument("--queue", help="The queue (default: the task's).")
        enqueue.add_argument("--priority", type=int, help="-100 to 100 (default: the task's).")
        enqueue.add_argument("--countdown", type=float, help="Seconds before it is due.")

        show = actions.add_parser("show", help="Show one job, its errors included.")
        show.add_argument("job_id")

        listing = actions.add_parser("list", help="List jobs, newest first.")
        self._add_filters(listing)
        listing.add_argument("--limit", type=int, default=20, help="At most this many (20).")

        for name, verb in (
            ("retry", "Retry FAILED or CANCELLED"),
            ("cancel", "Cancel WAITING, READY or RUNNING"),
        ):
            acting = actions.add_parser(name, help=f"{verb} jobs, by id or by filter.")
            acting.add_argument("job_ids", nargs="*", metavar="job_id")
            self._add_filters(acting)
            acting.add_argument("--yes", action="store_true", help="Do not ask first.")

    @staticmethod
    def _add_filters(parser: CommandParser) -> None:
        parser.add_argument("--status", choices=JobStatus.values, help="Only jobs in this status.")
        parser.add_argument("--queue", help="Only jobs of this queue.")
        parser.add_argument("--task", dest="task_path", help="Only jobs of this task path.")

    def handle(self, *args: Any, **options: Any) -> None:
        # The jobs of this backend, in its database.
        self.jobs = Job.objects.using(queue_backend(options["backend"], "jobs").database)
        self.options = options
        action = options["action"]
        if action == "purge":
            self.stderr.write(deprecation_notice("jobs purge"))
            action = "queues_purge"
        elif action == "queues":
            action = f"queues_{options['queue_action'] or 'list'}"
        getattr(self, f"_{action}")(**options)

    # The actions.

    def _enqueue(self, task_path: str, backend: str, **options: Any) -> None:
        call_args = _json_option("--args", options["call_args"], list)
        call_kwargs = _json_option("--kwargs", options["call_kwargs"], dict)
        changes = {
            name: value
            for name, value in (
                ("queue_name", options["queue"]),
                ("priority", options["priority"]),
                ("countdown", options["countdown"]),
            )
            if value is not None
        }
        try:
            task = find_task(task_path)
            if task.backend != backend:
                changes["backend"] = backend
            if changes:
                task = task.using(**changes)
            result = task.enqueue(*call_args, **call_kwargs)
        except (InvalidTask, TypeError, ValueError) as error:
            raise CommandError(f"Not enqueued: {error}") from error
        self._print({"id": result.id, "status": result.status}, f"Enqueued job {result.id}")

    def _show(self, job_id: str, **options: Any) -> None:
        job = self._get_job(job_id)
        fields = {name: getattr(job, name) for name in SHOW_FIELDS}
        if self.options["json"]:
            self._print(fields, "")
            return
        for name in SHOW_FIELDS:
            if name not in ("errors", "snoozes"):
                self.stdout.write(f"{name:<13} {_text(fields[name])}")
        for number, snooze in enumerate(job.snoozes or (), start=1):
            at = datetime.fromtimestamp(snooze["at"], UTC).isoformat(timespec="seconds")
            self.stdout.write(
                f"snooze {number:<6} attempt {snooze['attempt']}: for {snooze['seconds']:g} s, "
                f"at {at}"
            )
        for number, error in enumerate(job.errors, start=1):
            self.stdout.write(
                f"error {number:<7} attempt {error.get('attempt', '?')}: "
                f"{error.get('exception_class_path', '')}: {error.get('message', '')}"
            )
            if error.get("retry"):
                self.stdout.write(f"{'':<13} {error['retry']}")
            if self.options["verbosity"] > 1 and error.get("traceback"):
                self.stdout.write(error["traceback"])

    def _list(self, limit: int, **options: Any) -> None:
        if limit < 1:
            raise CommandError("--limit must be 1 or more.")
        rows = list(self._filtered(**options).values(*LIST_FIELDS)[:limit])
        if self.options["json"]:
            self._print(rows, "")
            return
        if not rows:
            self.stdout.write("No jobs match.")
            return
        self.stdout.write(
            f"{'id':<36}  {'status':<10} {'attempts':<8}  {'queue':<14} {'task'}  (enqueued)"
        )
        for row in rows:
            attempts = f"{row['attempts']}/{row['max_attempts']}"
            self.stdout.write(
                f"{row['id']}  {row['status']:<10} {attempts:<8}  "
                f"{row['queue']:<14} {row['task_path']}  {row['enqueued_at']:%Y-%m-%d %H:%M:%S}"
            )

    def _retry(self, job_ids: list[str], backend: str, **options: Any) -> None:
        self._act(
            "retry",
            job_ids,
            (JobStatus.FAILED, JobStatus.CANCELLED),
            lambda job_id: operations.retry(job_id, backend=backend),
            **options,
        )

    def _cancel(self, job_ids: list[str], backend: str, **options: Any) -> None:
        self._act(
            "cancel",
            job_ids,
            (JobStatus.WAITING, JobStatus.READY, JobStatus.RUNNING),
            lambda job_id: operations.cancel(
                job_id, reason="Cancelled from the command line", backend=backend
            ),
            **options,
        )

    def _prune(self, dry_run: bool, batch_size: int, backend: str, **options: Any) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be 1 or more.")
        pruned = operations.prune(
            dry_run=dry_run, batch_size=batch_size, backend=backend, progress=self._prune_progress
        )
        lines = []
        for prune_pass, count in pruned.jobs:
            label, retain = prune_pass.label, prune_pass.older_than
            if prune_pass.orphaned and not count:
                continue
            if retain is None:
                lines.append(f"{label}: kept for ever (retention is None)")
            elif dry_run:
                lines.append(f"{label}: {count} job(s) older than {retain:.0f} s would be deleted")
            else:
                lines.append(f"{label}: deleted {count} job(s) older than {retain:.0f} s")
        if pruned.limit_keys is not None:
            lines.append(f"limit keys: deleted {pruned.limit_keys} idle key(s)")
        data = {
            "dry_run": dry_run,
            "jobs": [
                {
                    "statuses": list(prune_pass.statuses),
                    "rule": prune_pass.rule,
                    "orphaned": prune_pass.orphaned,
                    "retain": prune_pass.older_than,
                    "count": count,
                }
                for prune_pass, count in pruned.jobs
            ],
            "limit_keys": pruned.limit_keys,
        }
        self._print(data, "\n".join(lines))

    def _queues_list(self, backend: str, **options: Any) -> None:
        paused = {row.queue: row for row in operations.paused_queues(backend=backend)}
        stats = {queue.name: queue for queue in metrics.snapshot(backend=backend).queues}
        rows = []
        for name in sorted(set(stats) | set(paused)):
            queue = stats.get(name) or metrics.QueueStats(name)
            row = paused.get(name)
            rows.append(
                {
                    "queue": name,
                    "due": queue.ready,
                    "running": queue.running,
                    "later": queue.scheduled,
                    "paused_at": row and row.paused_at,
                    "paused_by": row and row.paused_by,
                }
            )
        self._print(
            rows,
            _queue_table(rows)
            if rows
            else "No queues yet: none is configured, and no job was enqueued.",
        )

    def _queues_pause(self, queues: list[str], by: str | None, backend: str, **_: Any) -> None:
        by = _system_user() if by is None else by
        self._change_queues(
            queues, "paused", lambda name: operations.pause_queue(name, by=by, backend=backend)
        )

    def _queues_resume(self, queues: list[str], backend: str, **_: Any) -> None:
        self._change_queues(
            queues, "resumed", lambda name: operations.resume_queue(name, backend=backend)
        )

    def _queues_purge(self, queue: str, yes: bool, **options: Any) -> None:
        waiting = self.jobs.filter(queue=queue, status=JobStatus.READY).count()
        if waiting == 0:
            self._print({"deleted": 0}, f"Queue {queue!r} has no READY job.")
            return
        self._confirm(f"Delete the {waiting} READY job(s) of queue {queue!r}?", yes)
        deleted = operations.purge_queue(
            queue,
            backend=options["backend"],
            progress=self._purge_progress(waiting),
        )
        self._print({"deleted": deleted}, f"Deleted {deleted} READY job(s) of queue {queue!r}.")

    # What the actions share.

    def _change_queues(self, queues: list[str], done: str, change: Callable[[str], bool]) -> None:
        changed = {}
        for name in queues:
            try:
                changed[name] = change(name)
            except ValueError as error:
                raise CommandError(str(error)) from error
            if self.options["json"] or self.options["verbosity"] < 1:
                continue
            if changed[name]:
                self.stdout.write(self.style.SUCCESS(f"Queue {name!r} {done}."))
            else:
                state = "paused already" if done == "paused" else "not paused: nothing to resume"
                self.stdout.write(f"Queue {name!r} was {state}.")
        if self.options["json"]:
            self._print({"changed": changed}, "")

    def _act(
        self,
        verb: str,
        job_ids: list[str],
        statuses: tuple[str, ...],
        operation: Callable[[str], object],
        *,
        yes: bool,
        **filters: Any,
    ) -> None:
        past = "cancelled" if verb == "cancel" else "retried"
        chosen = {name: filters.get(name) for name in ("status", "queue", "task_path")}
        if job_ids and any(chosen.values()):
            raise CommandError(f"Give job ids or filters to {verb}, not both.")
        if job_ids:
            targets: Iterable[str] = [str(self._get_job(job_id).id) for job_id in job_ids]
        elif any(chosen.values()):
            if chosen["status"] and chosen["status"] not in statuses:
                named = f"{', '.join(statuses[:-1])} or {statuses[-1]}"
                raise CommandError(f"Only {named} jobs can be {past}.")
            matching = self._filtered(**chosen).filter(status__in=statuses)
            count = matching.count()
            if count == 0:
                self._print({"done": 0, "skipped": 0}, "No jobs match.")
                return
            self._confirm(f"{verb.capitalize()} {count} job(s)?", yes)
            # WAITING jobs first: a workflow's callback cancelled before its
            # members cannot be made due by their cancels.
            waiting_first = matching.annotate(
                later=ExpressionWrapper(~Q(status=JobStatus.WAITING), BooleanField())
            ).order_by("later", "id")
            targets = [
                str(job_id) for job_id in waiting_first.values_list("id", flat=True).iterator()
            ]
        else:
            raise CommandError(f"Name the jobs to {verb}: their ids, or --status/--queue/--task.")
        done, skipped = 0, []
        for job_id in targets:
            try:
                operation(job_id)
            except JobStateError as error:
                skipped.append(str(error))
                continue
            done += 1
            if self.options["verbosity"] > 1 and not self.options["json"]:
                self.stdout.write(f"{verb} {job_id}")
        for reason in skipped:
            self.stderr.write(f"Skipped: {reason}")
        self._print({"done": done, "skipped": len(skipped)}, f"{done} job(s) {past}.")
        if skipped and not done:
            raise CommandError(f"No job {past}.")

    def _get_job(self, job_id: str) -> Job:
        try:
            return job_named(self.jobs, job_id)
        except LookupError as error:
            raise CommandError(str(error)) from None

    def _filtered(
        self,
        status: str | None = None,
        queue: str | None = None,
        task_path: str | None = None,
        **_: Any,
    ) -> QuerySet:
        jobs = self.jobs.order_by("-id")
        if status:
            jobs = jobs.filter(status=status)
        if queue:
            jobs = jobs.filter(queue=queue)
        if task_path:
            jobs = jobs.filter(task_path=task_path)
        return jobs

    def _confirm(self, question: str, yes: bool) -> None:
        if yes:
            return
        if not sys.stdin.isatty():
            raise CommandError(f"{question} Not confirmed: add --yes to run without asking.")
        if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
            raise CommandError("Nothing done.")

    def _prune_progress(self, prune_pass: PrunePass, deleted: int) -> None:
        if not self.options["json"] and self.options["verbosity"] > 0:
            self.stderr.write(f"{prune_pass.label}: {deleted} deleted so far...")

    def _purge_progress(self, total: int) -> Callable[[int], None]:
        def progress(deleted: int) -> None:
            if not self.options["json"] and self.options["verbosity"] > 0 and deleted < total:
                self.stderr.write(f"{deleted} of {total} deleted...")

        return progress

    def _print(self, data: Any, line: str) -> None:
        if self.options["json"]:
            self.stdout.write(json.dumps(data, cls=DjangoJSONEncoder, indent=2))
        elif line and self.options["verbosity"] > 0:
            self.stdout.write(line)


def _add_output_options(parser: CommandParser, json_default: Any = False) -> None:
    parser.add_argument("--json", action="store_true", default=json_default, help="Print JSON.")
    # Also after the action, where it is natural to type it.
    parser.add_argument(
        "-v",
        "--verbosity",
        type=int,
        choices=[0, 1, 2, 3],
        default=argparse.SUPPRESS,
        help="0 prints errors and JSON only, 2 each job acted on and tracebacks.",
    )


def _queue_table(rows: list[dict[str, Any]]) -> str:
    width = max(len(row["queue"]) for row in rows)
    lines = [f"{'queue':<{width}}  {'due':>8}  {'running':>8}  {'later':>8}  state"]
    for row in rows:
        state = "active"
        if row["paused_at"] is not None:
            state = f"PAUSED since {row['paused_at']:%Y-%m-%d %H:%M:%S %Z}"
            if row["paused_by"]:
                state += f" by {row['paused_by']}"
        lines.append(
            f"{row['queue']:<{width}}  {row['due']:>8,}  {row['running']:>8,}  "
            f"{row['later']:>8,}  {state}"
        )
    return "\n".join(lines)


def _system_user() -> str:
    try:
        return getpass.getuser()
    except OSError:
        return ""


def _add_prune(actions: Any) -> None:
    about = (
        "Delete finished jobs past their retention (the backend's RETAIN_SUCCESSFUL, "
        "RETAIN_FAILED and the rules of RETAIN), and the rows of limit keys that hold "
        "nothing. Workers do it as they go; this does it now."
    )
    prune = actions.add_parser("prune", help=about, description=about)
    prune.add_argument(
        "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
    )
    prune.add_argument(
        "--batch-size",
        type=int,
        default=operations.PRUNE_BATCH,
        help="Jobs per transaction (default: %(default)s).",
    )


def _add_queue_actions(actions: Any) -> Any:
    """queues list|pause|resume|purge, and purge under its former name."""
    about = (
        "List the queues (the default), or pause, resume or purge some. A paused queue's "
        "jobs wait, on every worker, until it is resumed."
    )
    queues = actions.add_parser("queues", help=about, description=about)
    queue_actions = queues.add_subparsers(dest="queue_action", metavar="queue_action")
    queue_actions.add_parser("list", help="Each queue: due, running, later, paused or not.")
    pause = queue_actions.add_parser("pause", help="Start none of their jobs until resumed.")
    pause.add_argument("queues", nargs="+", metavar="queue")
    pause.add_argument(
        "--by", help="Who pauses, shown beside the pause (default: this system user)."
    )
    resume = queue_actions.add_parser("resume", help="Let the workers start their jobs.")
    resume.add_argument("queues", nargs="+", metavar="queue")
    purge = queue_actions.add_parser("purge", help="Delete the READY jobs of a queue.")
    purge.add_argument("queue")
    purge.add_argument("--yes", action="store_true", help="Do not ask first.")
    # The name purge had before it joined the queues' actions.
    actions.add_parser("purge", parents=[purge], add_help=False)
    return queue_actions


def _json_option(name: str, text: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CommandError(f"{name} is not JSON: {error}") from error
    if not isinstance(value, kind):
        raise CommandError(f"{name} must be a JSON {'list' if kind is list else 'object'}.")
    return value


def _text(value: Any) -> str:
    if isinstance(value, list | dict) or value is None:
        return json.dumps(value, cls=DjangoJSONEncoder)
    return str(value)
