import getpass

from django.core.management.base import BaseCommand, CommandError
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS

from jobs import metrics, operations
from jobs.management.backends import queue_backend


class Command(BaseCommand):
    help = (
        "List the queues with their backlog and whether each is paused (the default), "
        "or pause or resume queues for every worker at once. A paused queue's running "
        "jobs finish; none of its jobs starts until it is resumed. The pause is kept in "
        "the database: restarting workers does not resume it."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "action",
            nargs="?",
            choices=["list", "pause", "resume"],
            default="list",
            help="list (the default), pause or resume.",
        )
        parser.add_argument("queues", nargs="*", metavar="queue", help="The queues to act on.")
        parser.add_argument(
            "--backend",
            default=DEFAULT_TASK_BACKEND_ALIAS,
            help="The TASKS backend whose queues these are (default: %(default)s).",
        )
        parser.add_argument(
            "--by",
            default=None,
            help="Who pauses, shown beside the pause (default: this system user).",
        )

    def handle(self, *args, **options):
        action, names, alias = options["action"], options["queues"], options["backend"]
        queue_backend(alias, "queues")
        if action == "list":
            if names:
                raise CommandError("list takes no queue names; it lists every queue.")
            self._list(alias)
            return
        if not names:
            raise CommandError(f"Name the queue(s) to {action}.")
        by = options["by"] if options["by"] is not None else _system_user()
        for name in names:
            try:
                if action == "pause":
                    changed = operations.pause_queue(name, by=by, backend=alias)
                else:
                    changed = operations.resume_queue(name, backend=alias)
            except ValueError as error:
                raise CommandError(str(error)) from error
            done = "paused" if action == "pause" else "resumed"
            if changed:
                self.stdout.write(self.style.SUCCESS(f"Queue {name!r} {done}."))
            else:
                was = "paused" if action == "pause" else "not paused"
                self.stdout.write(f"Queue {name!r} was {was} already.")

    def _list(self, alias: str) -> None:
        paused = {row.queue: row for row in operations.paused_queues(backend=alias)}
        stats = {queue.name: queue for queue in metrics.snapshot(backend=alias).queues}
        names = sorted(set(stats) | set(paused))
        if not names:
            self.stdout.write("No queues yet: none is configured, and no job was enqueued.")
            return
        width = max(len(name) for name in names)
        self.stdout.write(f"{'queue':<{width}}  {'due':>8}  {'running':>8}  {'later':>8}  state")
        for name in names:
            queue = stats.get(name) or metrics.QueueStats(name)
            state = "active"
            if name in paused:
                row = paused[name]
                state = f"PAUSED since {row.paused_at:%Y-%m-%d %H:%M:%S %Z}"
                if row.paused_by:
                    state += f" by {row.paused_by}"
            self.stdout.write(
                f"{name:<{width}}  {queue.ready:>8,}  {queue.running:>8,}  "
                f"{queue.scheduled:>8,}  {state}"
            )


def _system_user() -> str:
    try:
        return getpass.getuser()
    except OSError:
        return ""
