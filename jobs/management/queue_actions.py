"""
The `jobs` command's actions on queues and on finished jobs: list, pause,
resume and purge queues; prune the finished jobs past their retention.
"""

import getpass
from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandError

from jobs import metrics, operations
from jobs.models import JobStatus
from jobs.retention import PrunePass


class QueueActions:
    """queues list|pause|resume|purge and prune; mixed into the `jobs` Command."""

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
        by = system_user() if by is None else by
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

    def _prune_progress(self, prune_pass: PrunePass, deleted: int) -> None:
        if not self.options["json"] and self.options["verbosity"] > 0:
            self.stderr.write(f"{prune_pass.label}: {deleted} deleted so far...")

    def _purge_progress(self, total: int) -> Callable[[int], None]:
        def progress(deleted: int) -> None:
            if not self.options["json"] and self.options["verbosity"] > 0 and deleted < total:
                self.stderr.write(f"{deleted} of {total} deleted...")

        return progress


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


def system_user() -> str:
    """Who runs the command, as the system names them ("" when it cannot tell)."""
    try:
        return getpass.getuser()
    except OSError:
        return ""


def add_prune(actions: Any) -> None:
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


def add_queue_actions(actions: Any) -> Any:
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
