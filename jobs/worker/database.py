"""
The coordinator's own database connections.

Each is a plain psycopg connection in autocommit mode, apart from Django's:
each statement of jobs/queries/ is its own short transaction, and psycopg
prepares the ones that repeat. The coordinator's main connection claims and
LISTENs for new jobs, and a Reconnector (jobs.worker.reconnector) carries
it through an outage; its completer's only writes outcomes.
"""

import logging
import pkgutil
import socket
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import psycopg

from .. import limit_overrides, queries, transitions
from ..limits import Limits
from ..retention import PrunePass
from .attempts import WORKER_LOST, refused_outcome
from .connection import (
    connection_params,
    describe,
    first_line,
)
from .key_scan import KEYS_PER_WAIT, KeyScan
from .protocol import ClaimedJob, Outcome, complete_batch

logger = logging.getLogger("jobs.worker")

# Errors of a statement that Postgres refused for what one of its rows holds,
# not for the connection: the rows are written apart to find that one.
REFUSED_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


@dataclass
class Notifications:
    """
    What came by NOTIFY: whether one of the worker's queues has new due jobs
    (and whether some are under limits, or a limit's slot freed), which jobs
    were cancelled, and which of its queues were paused.
    """

    wake: bool = False
    limited: bool = False
    # (job id, the attempt that ran when it was cancelled; None from a
    # worker of an older version, whose NOTIFY carried the id alone).
    cancelled: set[tuple[str, int | None]] = field(default_factory=set)
    paused: set[str] = field(default_factory=set)


class QueueDatabase:
    """One connection of the coordinator, and the queue's statements it runs."""

    def __init__(
        self,
        alias: str,
        queues: Sequence[str],
        *,
        prepared_statements: bool = True,
        limits: Limits | None = None,
        limited_poll: float = 5.0,
    ) -> None:
        # No queues: every queue (the backend's QUEUES is empty, any name goes).
        self.alias = alias
        self.queues = list(queues)
        self.prepared_statements = prepared_statements
        # With limits, the claim, the completion and the release are their
        # LIMITED_ forms, which count the runs of limited jobs in and out.
        self.limits = limits or Limits(())
        self.scan = KeyScan()
        # When this worker's claims last started a job under no limit (epoch
        # seconds, the database's clock), which takes its turn among the keys
        # as one more key last served then (see queries.limits.LIMITED_CLAIM).
        self.plain_served: float | None = None
        # Whether a job under limits may start now, or when one may (monotonic
        # seconds): until then the plain CLAIM, which costs a third of
        # LIMITED_CLAIM, takes the jobs under no limit. Set by what the last
        # LIMITED_CLAIM found, by LIMITED_READY_CHANNEL, and by the next due
        # time; `limited_poll` seconds at most, for a slot that a run in
        # another queue freed.
        self.limited_due = True
        # Whether the last LIMITED_CLAIM found READY jobs under limits at
        # all: without, the next due time is the plain statement's.
        self.limited_jobs_seen = True
        self.limited_poll = limited_poll
        self.limited_due_at = time.monotonic() + limited_poll
        self.conn: psycopg.Connection | None = None
        # Whether a statement ran since notifications were last read (see
        # _execute).
        self.notifications_unread = False

    def connect(self, *, listen: bool = True) -> None:
        """Connect; listen=False for a connection that only writes (the completer's)."""
        params = connection_params(self.alias)
        role = "" if listen else " outcomes"
        params.setdefault("application_name", f"jobs worker {socket.gethostname()}{role}")
        params.setdefault("connect_timeout", 5)
        # A connection that a firewall or load balancer dropped in silence
        # would hang a write for the kernel's TCP timeout (a quarter of an
        # hour): keepalives find it within a minute. Unix sockets ignore them.
        params.setdefault("keepalives", 1)
        params.setdefault("keepalives_idle", 30)
        params.setdefault("keepalives_interval", 10)
        params.setdefault("keepalives_count", 3)
        prepare_threshold = 0 if self.prepared_statements else None
        self.conn = psycopg.connect(**params, autocommit=True, prepare_threshold=prepare_threshold)
        self.limited_due = self.limited_jobs_seen = True
        if listen:
            channels = [queries.channels.READY_CHANNEL]
            if self.limits:
                channels.append(queries.channels.LIMITED_READY_CHANNEL)
            channels += [queries.channels.CANCEL_CHANNEL, queries.channels.PAUSE_CHANNEL]
            # One round trip for all of them: statements without parameters
            # go together in the simple protocol, never prepared.
            self.notifications_unread = True
            self.conn.execute("; ".join(f"LISTEN {channel}" for channel in channels), prepare=False)

    def schema_problem(self) -> str | None:
        """
        Why this database cannot hold the queue yet, or None: migrations of
        the jobs app on disk that it has not applied (a database never
        migrated has none applied), which would otherwise end the worker in
        a raw "relation does not exist" at its first statement. One
        statement, and the migration files' names listed, not imported: it
        runs at every start.
        """
        from .. import migrations

        on_disk = {
            module.name
            for module in pkgutil.iter_modules(migrations.__path__)
            if module.name[:4].isdigit()
        }
        try:
            rows = self._execute("SELECT name FROM django_migrations WHERE app = 'jobs'")
            applied = {name for (name,) in rows.fetchall()}
        except psycopg.errors.UndefinedTable:
            applied = set()
        missing = sorted(on_disk - applied)
        if not missing:
            return None
        return (
            f"Database {describe(self.alias)} lacks {len(missing)} migration(s) of the jobs app "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): run "
            "`python manage.py migrate` first."
        )

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.closed

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _execute(self, statement: str, params: object = None) -> psycopg.Cursor:
        """
        Run one statement on this connection.

        A NOTIFY that arrives while a statement runs is read off the socket
        with its results and kept in psycopg's backlog, so the socket no
        longer wakes a wait for it: the caller must read notifications
        before it next waits (notifications_unread), or that job waits for
        the next wake-up.
        """
        self.notifications_unread = True
        return self.conn.execute(statement, params)

    def _cursor(self) -> psycopg.Cursor:
        """A cursor for jobs.transitions, which may run several statements (see _execute)."""
        self.notifications_unread = True
        return self.conn.cursor()

    def notifications(self) -> "Notifications":
        """What the NOTIFYs that came since the last call ask of this worker."""
        news = Notifications()
        self.notifications_unread = False
        for notify in self.conn.notifies(timeout=0):
            if notify.channel == queries.channels.CANCEL_CHANNEL:
                job_id, _, attempt = notify.payload.partition(":")
                news.cancelled.add((job_id, int(attempt) if attempt else None))
            elif self.queues and notify.payload and notify.payload not in self.queues:
                continue
            elif notify.channel == queries.channels.PAUSE_CHANNEL:
                news.paused.add(notify.payload)
            else:
                news.wake = True
                if notify.channel == queries.channels.LIMITED_READY_CHANNEL:
                    news.limited = self.limited_due = self.limited_jobs_seen = True
        return news

    def paused_queues(self) -> set[str]:
        """The paused queues: read after a reconnect, whose NOTIFYs may have been lost."""
        return {name for (name,) in self._execute(queries.workers.PAUSED_QUEUES).fetchall()}

    def claim(
        self, worker_id: str, limit: int, queues: Sequence[str] | None = None
    ) -> list[ClaimedJob]:
        """Up to `limit` due jobs of `queues` (by default the worker's), started."""
        queues = self.queues if queues is None else list(queues)
        params = {"queues": queues, "limit": limit, "worker_id": worker_id}
        if self.limits and (self.limited_due or time.monotonic() >= self.limited_due_at):
            rows: list[tuple] = []
            due = False
            while True:
                began_past_first_key = self.scan.began_past_first_key(queues)
                batch = {**params, "limit": limit - len(rows), "plain_served": self.plain_served}
                claimed, state = self.scan.claim(
                    self._cursor(), batch, every_queue=not queues, own=queues is self.queues
                )
                rows += claimed
                # A key that had room gave a job (it took a turn in the batch
                # beside the first plain job), so none that is left may start
                # now: a slot that frees, or a due time, says when one may,
                # and the limited claim runs again within limited_poll seconds
                # anyway. A full batch may have left keys with room for plain jobs.
                due = due or (
                    self.scan.keys_left
                    or state["limited"] > 0
                    or (len(claimed) == batch["limit"] and state["keys"] > 0)
                )
                self.limited_jobs_seen = state["keys"] > 0
                # A scan that began past a queue's first key and reached its
                # last did not look at the keys before where it began.
                if not began_past_first_key or self.scan.keys_left or len(rows) == limit:
                    break
            self.limited_due = due
            self.limited_due_at = time.monotonic() + self.limited_poll
        else:
            self.scan.keys_left = False
            rows = transitions.claim(self._cursor(), params, limited=False, every_queue=not queues)
        jobs = [ClaimedJob(*row) for row in rows]
        # A claim stamps the jobs it starts with its own time.
        self.plain_served = max(
            (job.last_attempted_at for job in jobs if not job.limited), default=self.plain_served
        )
        jobs.sort(key=lambda job: (-job.priority, job.run_at, job.id))
        return jobs

    def claim_by_queue(
        self, worker_id: str, free: int, groups: Sequence[tuple[Sequence[str], int | None]]
    ) -> tuple[list[ClaimedJob], bool]:
        """
        One claim round of a worker with slots per queue (jobs.worker.queue_slots):
        each group of queues with its room (None: whatever is free), in order.
        The round claims jobs under limits in each group if it does in the
        first, and learns what any of its claims learned. Returns the jobs, and
        whether a group filled its room (there may be more due).
        """
        limited_round = bool(self.limits) and (
            self.limited_due or time.monotonic() >= self.limited_due_at
        )
        jobs: list[ClaimedJob] = []
        full, learned = False, []
        for queues, room in groups:
            limit = free - len(jobs) if room is None else min(room, free - len(jobs))
            if limit <= 0:
                continue
            self.limited_due = self.limited_due or limited_round
            claimed = self.claim(worker_id, limit, queues)
            learned.append(
                (
                    self.scan.keys_left,
                    self.limited_due,
                    self.limited_jobs_seen,
                    self.scan.full_keys_met,
                )
            )
            full = full or len(claimed) == limit
            jobs += claimed
        if learned:
            (
                self.scan.keys_left,
                self.limited_due,
                self.limited_jobs_seen,
                self.scan.full_keys_met,
            ) = (any(flags) for flags in zip(*learned, strict=True))
        jobs.sort(key=lambda job: (-job.priority, job.run_at, job.id))
        return jobs, full

    def seconds_until_next_due(self, queues: Sequence[str] | None = None) -> float | None:
        """Seconds until the next job of `queues` (by default the worker's) is due; None: none."""
        queues = self.queues if queues is None else list(queues)
        if not queues and self.queues:
            return None
        statement = queries.limits.next_due_statement(
            limited=bool(self.limits) and self.limited_jobs_seen, every_queue=not queues
        )
        params = {
            "queues": queues,
            "visit": KEYS_PER_WAIT,
            "skip": self.scan.skip,
        }
        seconds, *limited = self._execute(statement, params).fetchone()
        if limited:
            (until_limited,) = limited
            # At most limited_poll: a key past the ones looked at, or a job
            # behind its key's first, may be due sooner.
            wait = self.limited_poll if until_limited is None else max(until_limited, 0.0)
            wait = min(wait, self.limited_poll)
            self.limited_due_at = time.monotonic() + wait
            if until_limited is not None and (seconds is None or until_limited < seconds):
                seconds = until_limited
        return None if seconds is None else float(seconds)

    def complete(
        self,
        outcomes: Sequence[Outcome],
        worker_id: str,
        *,
        limited: bool = True,
        dependants: frozenset[str] = frozenset(),
    ) -> set[str]:
        """
        Write outcomes; return the ids the fence accepted. limited=False
        says that none of their jobs is under a limit (COMPLETE will do);
        `dependants` are the ids of those that jobs of a workflow wait for,
        which are moved in the same transaction (jobs.workflows.advance).

        When Postgres refuses the batch for what a row holds, each half is
        written apart, down to the row it refuses, whose attempt fails with
        Postgres's reason instead (attempts.refused_outcome). So one outcome
        that cannot be stored never takes the others, or the worker, with it,
        whether the completer writes it or the shutdown does. Each statement
        is its own transaction (autocommit): a refused one wrote nothing, and
        the fence keeps a retried row from being written twice.
        """
        try:
            return transitions.complete(
                self._cursor(),
                complete_batch(outcomes),
                limited=bool(self.limits) and limited,
                dependants=dependants,
            )
        except REFUSED_ROW_ERRORS as error:
            if len(outcomes) > 1:
                middle = len(outcomes) // 2
                options = {"limited": limited, "dependants": dependants}
                return self.complete(outcomes[:middle], worker_id, **options) | self.complete(
                    outcomes[middle:], worker_id, **options
                )
            [refused] = outcomes
            logger.error(
                "Job %s attempt %d: Postgres refused to store its outcome (%s); failing the "
                "attempt instead",
                refused.id,
                refused.attempt,
                first_line(error),
            )
            return self.complete(
                [refused_outcome(refused, error, worker_id)],
                worker_id,
                limited=limited,
                dependants=dependants,
            )

    def release(
        self,
        jobs: Sequence[ClaimedJob],
        run_at: Sequence[float] | None = None,
        begun: Collection[str] = frozenset(),
        snoozes: Sequence[str | None] | None = None,
    ) -> int:
        """
        Put claimed jobs back to READY, their attempt not spent (see
        queries.finish.RELEASE): due at once, or at run_at (epoch seconds, one
        per job). Those whose ids are in `begun` had started: their rate
        tokens stay spent. `snoozes`: one per job, the entry of a job that
        snoozed, or None.
        """
        if not jobs:
            return 0
        return transitions.release(
            self._cursor(),
            [job.id for job in jobs],
            [job.attempt for job in jobs],
            run_at,
            limited=any(job.limited for job in jobs),
            begun=[job.id in begun for job in jobs],
            snoozes=snoozes,
        )

    def register(self, worker_id: str, hostname: str, pid: int, concurrency: int) -> None:
        self._execute(
            queries.workers.REGISTER_WORKER,
            {
                "id": worker_id,
                "hostname": hostname,
                "pid": pid,
                "queues": self.queues,
                "concurrency": concurrency,
            },
        )

    def heartbeat(self, worker_id: str) -> bool:
        return self._execute(queries.workers.HEARTBEAT, {"id": worker_id}).fetchone() is not None

    def unregister(self, worker_id: str) -> None:
        self._execute(queries.workers.UNREGISTER_WORKER, {"id": worker_id})

    def rescue(self, dead_after: float) -> tuple[int, int, int]:
        """Rescue the jobs of dead workers: (dead workers, jobs READY again, jobs FAILED)."""
        rescued = transitions.rescue(self._cursor(), dead_after, WORKER_LOST)
        return rescued.dead_workers, rescued.ready, rescued.failed

    def analyze_if_never_analyzed(self) -> bool | None:
        """
        Give the planner statistics of jobs_job if it has none: None when it
        had some, True when it has now, False when ANALYZE was refused (this
        role does not own the table).
        """
        if not self._execute(queries.claim.NEVER_ANALYZED).fetchone()[0]:
            return None
        self._execute(queries.claim.ANALYZE)
        return not self._execute(queries.claim.NEVER_ANALYZED).fetchone()[0]

    def prune_batch(self, prune_pass: PrunePass, limit: int, rules: Sequence[str]) -> int:
        return transitions.prune(self._cursor(), prune_pass, limit, rules=rules)

    def prune_limit_keys(self, after: str, limit: int) -> tuple[int, str | None]:
        return transitions.prune_limit_keys(self._cursor(), after, limit)

    def limited_jobs_waiting(self) -> int:
        """How many READY jobs are under limits (counted up to 1,000)."""
        return self._execute(queries.limits.LIMITED_JOBS_WAIT).fetchone()[0]

    def sync_limits(self, names: Sequence[str] | None = None) -> None:
        """
        Bring the key rows of every limit (or of those named) to the values
        this worker's settings give them, under the overrides in force.
        """
        for limit in self.limits.all:
            if names is None or limit.name in names:
                limit_overrides.sync_limit(self._cursor(), limit)

    def recently_changed_limits(self) -> list[str]:
        """The limits whose values changed at runtime lately (jobs.limit_overrides)."""
        return limit_overrides.recently_changed(self._cursor())

    def reconcile_limits(self) -> list[str]:
        """
        Recount the running jobs of keys whose count disagrees with the
        RUNNING rows; return the keys recounted. See queries.limits.MISCOUNTED_LIMIT_KEYS.
        """
        keys = [key for (key,) in self._execute(queries.limits.MISCOUNTED_LIMIT_KEYS).fetchall()]
        if not keys:
            return []
        with self.conn.transaction():
            self._execute(queries.limits.LOCK_LIMIT_KEYS, {"keys": keys})
            return [
                key for (key,) in self._execute(queries.limits.RECOUNT_LIMIT_KEYS, {"keys": keys})
            ]
