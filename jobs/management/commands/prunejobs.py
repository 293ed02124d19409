from django.core.management.base import BaseCommand
from django.db import connections

from jobs import sql, transitions
from jobs.management.backends import queue_backend


class Command(BaseCommand):
    help = (
        "Delete finished jobs past their retention (the backend's RETAIN_SUCCESSFUL and "
        "RETAIN_FAILED options), in small batches that hold no long locks, keeping what the "
        "jobs of workflows that wait for them read; and the rows of limit keys that hold "
        "nothing. Workers do this on their own; this is for doing it now, or seeing what it "
        "would do."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )
        parser.add_argument(
            "--backend", default="default", help="TASKS alias (default: 'default')."
        )
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Jobs per DELETE (default: 1000)."
        )

    def handle(self, *args, **options):
        backend = queue_backend(options["backend"], "prunejobs")
        with connections[backend.database].cursor() as cursor:
            for statuses, retain in backend.queue_options.retention:
                label = "/".join(statuses)
                if retain is None:
                    self.stdout.write(f"{label}: kept for ever (retention is None)")
                    continue
                params = {"statuses": list(statuses), "older_than": retain}
                if options["dry_run"]:
                    cursor.execute(sql.COUNT_PRUNABLE, params)
                    count = cursor.fetchone()[0]
                    self.stdout.write(
                        f"{label}: {count} job(s) older than {retain:.0f} s would be deleted"
                    )
                    continue
                deleted = 0
                while True:
                    batch = transitions.prune(cursor, statuses, retain, options["batch_size"])
                    deleted += batch
                    if batch < options["batch_size"]:
                        break
                    self.stdout.write(f"{label}: {deleted} deleted so far...")
                self.stdout.write(f"{label}: deleted {deleted} job(s) older than {retain:.0f} s")
            if backend.queue_options.limits and not options["dry_run"]:
                self._prune_limit_keys(cursor, options["batch_size"])

    def _prune_limit_keys(self, cursor, batch_size: int) -> None:
        deleted, after = 0, ""
        while after is not None:
            batch, after = transitions.prune_limit_keys(cursor, after, batch_size)
            deleted += batch
        self.stdout.write(f"limit keys: deleted {deleted} idle key(s)")
