"""What `runworker` asks of one worker, as the coordinator reads it."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerConfig:
    """What `runworker` asks of one worker."""

    queues: tuple[str, ...]  # empty: every queue
    concurrency: int
    prefetch: int | None = None  # None: adaptive
    threads: int = 1  # per executor process
    # Async tasks each executor runs at once on its event loop, beside its threads.
    async_slots: int = 0
    backend: str = "default"
    shutdown_timeout: float = 30.0
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None  # bytes of resident memory
    health_file: str | None = None  # see jobs.health
    # Slots of some queues in this worker (jobs.worker.queue_slots): {queue: n}.
    queue_slots: dict[str, int] = field(default_factory=dict)

    @property
    def queues_text(self) -> str:
        """The queues as --queues names them, with their slots."""
        if not self.queues:
            return "every queue"
        slots = self.queue_slots
        return ",".join(f"{q}:{slots[q]}" if q in slots else q for q in self.queues)
