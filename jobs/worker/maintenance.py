"""
The worker's upkeep, once per heartbeat: keep its jobs_worker row alive and
so its lease (jobs.worker.lease), rescue the jobs of workers that stopped
beating, give the claim's table planner statistics if it has none, and
delete finished jobs past their retention, one small batch at a time.
"""

import logging
import os
import socket
import time
from collections.abc import Callable

from ..options import QueueOptions
from .database import QueueDatabase
from .lease import Lease

logger = logging.getLogger("jobs.worker")

PRUNE_BATCH_SIZE = 500
# How often a worker prunes the jobs of rules taken out of RETAIN, a batch
# each time: that read goes through every job a rule keeps (jobs.retention).
ORPHANED_PRUNE_INTERVAL = 600.0
# Idle limit keys looked at per batch, and how often a worker prunes a batch.
LIMIT_KEYS_PRUNE_BATCH = 1000
LIMIT_KEYS_PRUNE_INTERVAL = 60.0


class Maintenance:
    """
    Heartbeat, rescue, analyze and prune for one worker, on its main
    connection, and the lease that each heartbeat written renews.
    `stop_jobs` is called when the lease lapsed or the worker finds that it
    was declared dead: its jobs may be someone else's to run now, so it stops
    those that run and gives back the others; it returns how many of each.
    """

    def __init__(
        self,
        db: QueueDatabase,
        worker_id: str,
        slots: int,
        options: QueueOptions,
        lease: Lease,
        stop_jobs: Callable[[], tuple[int, int]],
        *,
        backend: str,
    ) -> None:
        self.db = db
        self.worker_id = worker_id
        self.hostname = socket.gethostname()
        self.slots = slots
        self.interval = options.heartbeat_interval
        self.dead_after = options.worker_dead_after
        passes = [
            p for p in options.prune_passes(backend, orphaned=True) if p.older_than is not None
        ]
        self.prune_passes = [p for p in passes if not p.orphaned]
        self.orphaned_passes = [p for p in passes if p.orphaned]
        self.retention_rules = options.retain.names
        self.lease = lease
        self.stop_jobs = stop_jobs
        self.due_at = 0.0
        # No worker is taken for dead before this monotonic time (see connected()).
        self.rescue_from = 0.0
        self.analyze_refused = False
        # Where the next prune of idle limit keys goes on, and when it is due.
        self.limit_keys_after = ""
        self.limit_keys_prune_at = 0.0
        self.orphaned_prune_at = 0.0

    def start(self) -> None:
        """
        Register the worker, see that the claim has statistics to plan with,
        and bring the limits' rows to this worker's settings.
        """
        self.connected()
        self.register()
        self.analyze_if_never_analyzed()
        if self.db.limits:
            self.db.sync_limits()
        elif waiting := self.db.limited_jobs_waiting():
            logger.warning(
                "%s job(s) under limits are READY, and this worker's backend has no LIMITS, "
                "so it does not claim them: give workers the LIMITS the web processes have",
                "1000 or more" if waiting >= 1000 else waiting,
            )

    def connected(self) -> None:
        """
        The connection is new, or back: heartbeat at once, and take no other
        worker for dead for WORKER_DEAD_AFTER.

        Workers that the same outage cut off come back at their own pace
        (their backoffs, their networks), their heartbeats as old as the
        outage: the first one back would take the others for dead, live, and
        rescue their jobs to run them twice. A worker that starts cannot tell
        whether the database has just come back, so its first connection
        counts too. Workers that stayed connected rescue a dead one on time.
        """
        self.due_at = 0.0
        self.rescue_from = time.monotonic() + self.dead_after

    def register(self) -> None:
        sent_at = time.monotonic()
        self.db.register(self.worker_id, self.hostname, os.getpid(), self.slots)
        self.lease.renew(sent_at)
        self.due_at = time.monotonic() + self.interval

    def run(self, *, prune: bool = True) -> None:
        """One heartbeat's upkeep; prune=False while the worker stops."""
        self.heartbeat()
        self.rescue()
        self.settle_changed_limits()
        self.reconcile_limits()
        self.analyze_if_never_analyzed()
        if prune:
            self.prune()

    def heartbeat(self) -> None:
        # A lapsed lease is fenced before a heartbeat renews it: the worker
        # may have been rescued meanwhile, even when its row was not deleted
        # yet (a rescue under way reads the heartbeat it had before).
        self.fence_if_lapsed()
        sent_at = time.monotonic()
        if self.db.heartbeat(self.worker_id):
            self.lease.renew(sent_at)
        else:
            running, others = self.stop_jobs()
            logger.warning(
                "Worker %s had been declared dead (its jobs were rescued); stopping its %d "
                "running job(s) and the %d others it holds, and registering again",
                self.worker_id,
                running,
                others,
            )
            self.register()
        self.due_at = time.monotonic() + self.interval

    def fence_if_lapsed(self) -> None:
        """
        Once the lease lapsed, stop every job the worker holds, before other
        workers may take it for dead and run them again (see jobs.worker.lease);
        then heartbeat as soon as the database answers.
        """
        if self.lease.fenced or not self.lease.lapsed():
            return
        self.lease.fenced = True
        running, others = self.stop_jobs()
        if running or others:
            logger.warning(
                "Worker %s has not heartbeaten for %.1f s (WORKER_DEAD_AFTER is %.1f s) and may "
                "be taken for dead: stopping its %d running job(s) and the %d others it holds",
                self.worker_id,
                time.monotonic() - self.lease.renewed_at,
                self.dead_after,
                running,
                others,
            )
        self.due_at = 0.0

    def rescue(self) -> None:
        """Give back the jobs of dead workers (RESCUE), if it may (see connected())."""
        if time.monotonic() < self.rescue_from:
            return
        dead, ready, failed = self.db.rescue(self.dead_after)
        if dead or ready or failed:
            logger.warning(
                "Rescued the jobs of %d dead worker(s): %d READY again, %d FAILED (attempts spent)",
                dead,
                ready,
                failed,
            )

    def settle_changed_limits(self) -> None:
        """
        Rewrite the key rows of limits changed at runtime lately: a row made
        by an enqueue that raced the change holds the old values until then
        (see jobs.limit_overrides.RECENT_CHANGES).
        """
        if not self.db.limits:
            return
        if changed := self.db.recently_changed_limits():
            self.db.sync_limits(changed)

    def reconcile_limits(self) -> None:
        """Recount the running jobs of limit keys whose count went wrong (see queries.limits)."""
        # A worker that sees no job under limits has none to hold back: the
        # first limited claim that finds some turns the recount back on.
        if not self.db.limits or not self.db.limited_jobs_seen:
            return
        recounted = self.db.reconcile_limits()
        if recounted:
            logger.warning(
                "Recounted the running jobs of %d limit key(s) whose count was wrong: %s",
                len(recounted),
                ", ".join(recounted[:10]),
            )

    def analyze_if_never_analyzed(self) -> None:
        """See queries.claim.NEVER_ANALYZED: the claim's plan must not wait for autovacuum."""
        if self.analyze_refused:
            return
        analyzed = self.db.analyze_if_never_analyzed()
        if analyzed:
            logger.info("jobs_job had no planner statistics yet: analyzed it")
        elif analyzed is False:
            self.analyze_refused = True
            logger.warning(
                "jobs_job has no planner statistics and this database role may not ANALYZE "
                "it: claims may be slow until autovacuum analyzes it, or its owner runs "
                "ANALYZE jobs_job"
            )

    def prune(self) -> None:
        """
        Delete one small batch of expired jobs per status group and RETAIN
        rule, per heartbeat, and of the rules taken out of RETAIN every
        ORPHANED_PRUNE_INTERVAL seconds; and, under limits, the rows of keys
        that hold nothing any more, a batch every LIMIT_KEYS_PRUNE_INTERVAL
        seconds (one row per key value ever seen would otherwise stay for
        ever: one per user, say).
        """
        passes = self.prune_passes
        if self.orphaned_passes and time.monotonic() >= self.orphaned_prune_at:
            passes = passes + self.orphaned_passes
            self.orphaned_prune_at = time.monotonic() + ORPHANED_PRUNE_INTERVAL
        for prune_pass in passes:
            self.db.prune_batch(prune_pass, PRUNE_BATCH_SIZE, self.retention_rules)
        if self.db.limits and time.monotonic() >= self.limit_keys_prune_at:
            _, after = self.db.prune_limit_keys(self.limit_keys_after, LIMIT_KEYS_PRUNE_BATCH)
            self.limit_keys_after = after or ""
            self.limit_keys_prune_at = time.monotonic() + LIMIT_KEYS_PRUNE_INTERVAL
