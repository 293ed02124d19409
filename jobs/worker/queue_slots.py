"""
Slots per queue in one worker: `runworker --queues reports:2,default:8`
holds at most 2 jobs of `reports` at once in this worker and 8 of
`default`; its other queues share what is left of --concurrency times --threads.

A cap counts the jobs the worker holds of its queue, those running and those
claimed to run next, so it bounds what runs. It is this worker's alone: the
limits of LIMITS hold across every worker as before. A claim round claims
each capped queue that has room with that room, then the other queues with
the slots left, one claim statement a group (QueueDatabase.claim_by_queue);
a worker without caps claims in one statement, as it always did.
"""

from collections import Counter
from collections.abc import Iterable, Sequence

from .pool import ExecutorPool
from .protocol import ClaimedJob, Outcome


class QueueSlotsError(ValueError):
    """--queues cannot be read; the message says what it must be."""


def parse_queues(text: str) -> tuple[list[str], dict[str, int]]:
    """`--queues reports:2,default` as its queues, in order, and the caps it gives some."""
    queues: list[str] = []
    caps: dict[str, int] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, colon, cap = (part.strip() for part in entry.partition(":"))
        if colon and not (cap.isdigit() and int(cap) >= 1):
            raise QueueSlotsError(
                f"--queues: {entry!r} gives queue {name!r} {cap!r} slots; a queue's slots "
                "are a whole number of at least 1, as in reports:2."
            )
        if not name or name in queues:
            raise QueueSlotsError(f"--queues: {entry!r} names no queue, or one named already.")
        queues.append(name)
        if colon:
            caps[name] = int(cap)
    return queues, caps


class QueueSlots:
    """The caps of a worker's queues, and the claims of a round they allow."""

    def __init__(self, queues: Sequence[str], caps: dict[str, int], pool: ExecutorPool) -> None:
        self.caps = caps
        self.uncapped = [name for name in queues if name not in caps]
        self.pool = pool

    def held(self) -> Counter:
        """The jobs of each queue the worker holds: running, or claimed to run next."""
        return Counter(job.queue for e in self.pool.executors for job in e.assigned.values())

    def groups(self) -> list[tuple[list[str], int | None]]:
        """
        The claims of a round, in order: each capped queue with room, with
        its room; then the other queues, with whatever is free (None).
        """
        held = self.held()
        groups: list[tuple[list[str], int | None]] = [
            ([name], cap - held[name]) for name, cap in self.caps.items() if held[name] < cap
        ]
        if self.uncapped:
            groups.append((self.uncapped, None))
        return groups

    def open_queues(self) -> list[str]:
        """The queues with room, whose next due job the worker waits for."""
        held = self.held()
        return [*(name for name, cap in self.caps.items() if held[name] < cap), *self.uncapped]

    def freed(self, finished: Iterable[tuple[ClaimedJob, Outcome]]) -> bool:
        """Whether a capped queue's job ended: its queue may have room for a waiting job now."""
        return any(job.queue in self.caps for job, _ in finished)
