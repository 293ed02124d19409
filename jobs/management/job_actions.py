"""
The `jobs` command's actions on jobs: enqueue a task by its path, show one
job, list them, and retry or cancel them by id or by filter.
"""

import argparse
import json
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.tasks.exceptions import InvalidTask
from django.utils import timezone

from jobs import operations
from jobs.backend import find_task
from jobs.exceptions import JobStateError
from jobs.ids import job_named, uuid7_floor
from jobs.models import EITHER_FINISHED_INDEX, FINISHED_STATUSES, Job, JobStatus

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


# The filters that choose jobs to act on, beside their ids.
FILTERS = ("status", "queue", "task_path", "tags", "meta", "older_than")


class JobActions:
    """enqueue, show, list, retry and cancel; mixed into the `jobs` Command."""

    def add_job_actions(self, actions: Any) -> None:
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
        add_tag_filter(parser)
        parser.add_argument(
            "--meta",
            action="append",
            default=[],
            type=_meta_pair,
            metavar="KEY=VALUE",
            help="Only jobs whose meta has KEY at VALUE (read as JSON when it is, such as "
            "42 or true, else as text); repeat it for all of several.",
        )
        parser.add_argument(
            "--older-than",
            type=_age,
            metavar="AGE",
            help="Only jobs enqueued more than AGE ago: seconds, or a number with s, m, h or d.",
        )

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
        chosen = {name: filters.get(name) for name in FILTERS}
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
        tags: Sequence[str] = (),
        meta: Sequence[tuple[str, Any]] = (),
        older_than: timedelta | None = None,
        **_: Any,
    ) -> QuerySet:
        jobs = self.jobs.order_by("-id")
        if status:
            jobs = jobs.filter(status=status)
        if status in FINISHED_STATUSES:
            jobs = jobs.filter(EITHER_FINISHED_INDEX)
        if queue:
            jobs = jobs.filter(queue=queue)
        if task_path:
            jobs = jobs.filter(task_path=task_path)
        if tags:
            jobs = jobs.filter(tags__contains=list(tags))
        if meta:
            jobs = jobs.filter(meta__contains=dict(meta))
        if older_than is not None:
            # Ids are UUIDv7: "enqueued before" is a range of the primary key.
            jobs = jobs.filter(id__lt=uuid7_floor(timezone.now() - older_than))
        return jobs


def add_tag_filter(parser: CommandParser) -> None:
    parser.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="TAG",
        help="Only jobs with this tag; repeat it for jobs with all of them.",
    )


def _meta_pair(text: str) -> tuple[str, Any]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE.")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _age(text: str) -> timedelta:
    number, unit = (text[:-1], text[-1]) if text[-1:] in _AGE_UNITS else (text, "s")
    try:
        seconds = float(number) * _AGE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an age: seconds, or a number with s, m, h or d (90s, 15m, 2h, 7d)."
        ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age of 0 or more.")
    return timedelta(seconds=seconds)


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
