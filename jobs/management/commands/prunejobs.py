from django.core.management.base import BaseCommand
from django.db import connections

from jobs import sql
from jobs.management.backends import queue_backend
from jobs.worker.maintenance import retention_groups


class Command(BaseCommand):
    help = (
        "Delete finished jobs past their retention (the backend's RETAIN_SUCCESSFUL and "
        "RETAIN_FAILED options), in small batches that hold no long locks. Workers do this "
        "on their own; this is for doing it now, or seeing what it would do."
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
            for statuses, retain in retention_groups(backend.config):
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
                    cursor.execute(sql.PRUNE_BATCH, {**params, "limit": options["batch_size"]})
                    deleted += cursor.rowcount
                    if cursor.rowcount < options["batch_size"]:
                        break
                    self.stdout.write(f"{label}: {deleted} deleted so far...")
                self.stdout.write(f"{label}: deleted {deleted} job(s) older than {retain:.0f} s")
