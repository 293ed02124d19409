"""
Flow control (jobs.limits): the claim of jobs under limits, key by key,
when one may start next, and the upkeep of the key rows.
"""

from .claim import (
    CLAIM,
    CLAIM_EVERY_QUEUE,
    CLAIMED_COLUMNS,
    READY_QUEUES,
    SECONDS_UNTIL_NEXT_DUE,
    SECONDS_UNTIL_NEXT_DUE_EVERY_QUEUE,
    START_ATTEMPT,
)

# Whether jobs under limits wait: a worker without LIMITS never claims them.
LIMITED_JOBS_WAIT = """
SELECT count(*) FROM (
    SELECT FROM jobs_job WHERE status = 'READY' AND limit_key IS NOT NULL LIMIT 1000
) AS waiting
"""

# How many jobs a key row lets start now: its free slots (concurrency less
# running) and the whole tokens of its bucket, refilled to this statement's
# time; a limit it does not set allows the claim's whole batch.
ROOM = """LEAST(
    %(limit)s,
    COALESCE({row}.concurrency - {row}.running, %(limit)s),
    COALESCE(floor({tokens})::int, %(limit)s)
)"""
TOKENS = """LEAST({row}.burst, {row}.tokens
    + extract(epoch FROM statement_timestamp() - {row}.refilled_at) * {row}.rate / {row}.period)"""


def _room(row: str) -> str:
    return ROOM.format(row=row, tokens=TOKENS.format(row=row))


# The open (not paused) queues of a worker, and the keys with READY jobs in
# each: a loose index scan of the limited claim index from `start`, one probe
# per key. LIMITED_CLAIM starts each queue where its worker's previous claim
# stopped; LIMITED_SECONDS_UNTIL_NEXT_DUE at the first key.
#
# Keys at their limit: with `skip` above 0, each key's row is looked at too
# (one more probe, by primary key), and a key without room (`has_room`: for
# the claim, room to start a job now; for the next due time, a free slot,
# since a bucket's next token is a due time of its own) is passed over
# instead of visited. The scan stops after `visit` keys visited, or `skip`
# passed over and one more, or after the last key: so a key with room is
# found behind a thousand full ones, two probes each, and a scan of keys
# that are all full still ends. With `skip` 0, every key is visited, as
# when keys never bind: the worker asks for that while its claims meet no
# key without room, and so pays for no look it does not need.
#
# `has_room` is read in the statement's snapshot: a hint of where to look,
# never what keeps a limit (LIMITED_CLAIM counts the room again on the row
# it locks). A key that filled meanwhile is counted again and left; one that
# freed meanwhile waits for the next scan, which the NOTIFY of its freed
# slot starts.
_KEY_SCAN = """WITH RECURSIVE {ready_queues}open_queues(name) AS (
    SELECT q.name FROM {queues} AS q(name)
    WHERE q.name IS NOT NULL
      AND NOT EXISTS (SELECT FROM jobs_paused_queue AS paused WHERE paused.queue = q.name)
),
keys(queue, key, has_room, visited, skipped) AS (
    SELECT q.name, next.key, {key_has_room}, 0, 0
    FROM open_queues AS q
    LEFT JOIN LATERAL ({first_key}) AS next(key) ON true
    UNION ALL
    SELECT keys.queue, next.key, {key_has_room},
           keys.visited + keys.has_room::int, keys.skipped + (NOT keys.has_room)::int
    FROM keys
    LEFT JOIN LATERAL ({next_key}) AS next(key) ON true
    WHERE keys.key IS NOT NULL
      AND keys.visited + keys.has_room::int < %(visit)s
      AND keys.skipped + (NOT keys.has_room)::int <= %(skip)s
),"""
# The next key of a queue with READY jobs after `after`; past the last, none
# (the scan's last row, whose key is NULL).
_NEXT_KEY = """SELECT limit_key FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NOT NULL AND queue = {queue}
          AND limit_key > {after}
        ORDER BY limit_key LIMIT 1"""
# A row of the scan counts the keys before it (`visited`, `skipped`), so that
# `has_room` is used once in the row that computes it: used twice, it would
# look at the key's row twice.
_KEY_HAS_ROOM = """CASE WHEN %(skip)s = 0 THEN true ELSE EXISTS (
        SELECT FROM jobs_limit_key AS own WHERE own.key = next.key AND {has_room}
    ) END"""


def _for_queues(
    template: str, *, key_scan_start: str, has_room: str, **parts: str
) -> tuple[str, str]:
    """A statement that scans keys, for a worker of named queues and for one of every queue."""
    named = ("", "unnest(%(queues)s::text[])")
    every = (READY_QUEUES.removeprefix("RECURSIVE ") + ",\n", "ready_queues")
    scan = {
        "first_key": _NEXT_KEY.format(queue="q.name", after=key_scan_start),
        "next_key": _NEXT_KEY.format(queue="keys.queue", after="keys.key"),
        "key_has_room": _KEY_HAS_ROOM.format(has_room=has_room),
    }
    return tuple(
        template.format(
            key_scan=_KEY_SCAN.format(ready_queues=ready, queues=queues, **scan), **parts
        )
        for ready, queues in (named, every)
    )


# Claim, for a worker whose backend has limits (jobs.limits): the jobs under
# no limit as CLAIM does, and those under limits key by key, in one statement.
#
# The invariant: a key's RUNNING jobs never outnumber its concurrency, and its
# starts never outrun its bucket, at any commit, whatever the number of
# workers. It is kept by the key rows (jobs_limit_key): a key's jobs start
# only in the statement that holds its row's lock (FOR NO KEY UPDATE) and adds
# them to `running` and takes their tokens before it commits; every statement
# that ends a run (COMPLETE_LIMITED, RELEASE_LIMITED, RESCUE, CANCEL) takes
# them off under the same lock. A locked row returns its latest committed
# version (READ COMMITTED re-reads a row it locks), so the room is counted from
# what every earlier claim and completion wrote, not from this statement's
# snapshot. SKIP LOCKED: a key another worker is claiming right now is left to
# it, and no claim ever waits. Blocked jobs are never selected, so nothing is
# claimed and given back, and a waiting job keeps its attempts.
#
# Fair shares: the keys with READY jobs are visited in key order, from where
# the worker's previous claim stopped (`after`, a JSON object of queue to
# key), by _KEY_SCAN: `visit` keys with room per queue, those without passed
# over; so the cost follows the keys visited and passed over, never a key's
# backlog. Each key gives at most its room, and the batch is filled turn by
# turn (every key's first job, then every key's second...), so a key with
# 100,000 jobs takes a turn like a key with one. Within a turn, priority comes
# first, then the key served longest ago (`served_at`, which `counted` sets,
# under the lock that counts `running`, on the rows of keys whose jobs start
# as their own; a key never served goes first), then the oldest job: a claim
# of one job, a busy pool's free slot, serves the keys in turn too, instead of
# the one whose jobs are oldest. Jobs under no limit take their turn as one
# more key, last served when this worker's claims last started one of them
# (`plain_served`, epoch seconds; NULL: not yet). They have no row to remember
# it in, and one row for all of them would make every claim of them wait for
# its lock; so each worker gives them a turn in its own round of the keys.
#
# A key's candidates are up to its room and its share of the batch
# (`key_share`: the batch over the keys with room, rounded up, once more over
# those with room for more than that after the others took all theirs). A
# batch is filled turn by turn, so a key's jobs past its share are reached
# only when other keys have fewer jobs than theirs: then (`topped_up`) the
# keys that gave their whole share give the rest of their room too. Reading
# every key's whole room at once (100 keys with room for 1,000 each, for a
# batch of 250) read and locked 25,000 jobs to start 250, five times the
# claim's time. Priority orders each key's candidates and then the batch: a
# key with more urgent jobs than its share starts its share of them in each
# claim (all of them when the other keys cannot fill the batch).
#
# A job's shared key (a task's or a queue's limit over its own keyed one) is
# locked after its own; a row that is both some jobs' own key and others'
# shared key gives the shared ones only what its own ones left.
#
# The last row, whose id is NULL, carries in `trace_context` where each
# queue's scan stopped (`after`: the next claim's, an empty key once a scan
# reached the end, so that the next one starts again from the first key), how
# many jobs under limits it claimed (`limited`), how many keys with READY
# jobs it visited or passed over (`keys`) and how many of those it found
# without room, or being claimed by another worker (`full`).
_LIMITED_CLAIM = """
{key_scan}
open_keys AS (
    SELECT keys.queue, own.key, own.served_at, {own_room} AS room
    FROM keys JOIN jobs_limit_key AS own ON own.key = keys.key
    WHERE keys.has_room AND {own_room} > 0
    FOR NO KEY UPDATE OF own SKIP LOCKED
),
-- The batch over the keys, once more over those with room for more than
-- that after the others took all their room; none (no cap) when no key has
-- room for more.
key_share(share) AS (
    SELECT share FROM (
        SELECT ceil((%(limit)s - COALESCE(sum(room) FILTER (WHERE room < even.share), 0))::float8
                    / NULLIF(count(*) FILTER (WHERE room >= even.share), 0))::int
        FROM open_keys, (SELECT ceil(%(limit)s::float8 / count(*)) AS share FROM open_keys) AS even
    ) AS uneven(share)
    WHERE share IS NOT NULL
),
shares AS ({shares}
),
-- A batch that the shares left short (keys with fewer due jobs than their
-- share) takes the rest of the room of the keys that gave their whole share;
-- a full one reads nothing more (the condition is checked once, first).
topped_up AS ({topped_up}
    WHERE (SELECT count(*) FROM shares) < %(limit)s
      AND open_keys.room > (SELECT share FROM key_share)
),
keyed AS (
    SELECT candidate.id, candidate.priority, candidate.run_at, candidate.shared_limit_key,
           candidate.key AS own_key, candidate.room AS own_room,
           candidate.served_at AS own_served_at,
           row_number() OVER (
               PARTITION BY candidate.key
               ORDER BY candidate.priority DESC, candidate.run_at, candidate.id
           ) AS turn
    FROM (SELECT * FROM shares UNION ALL SELECT * FROM topped_up) AS candidate
),
-- A key with jobs in several queues was visited once per queue: its room
-- holds for all of them together.
limited AS (
    SELECT * FROM keyed WHERE turn <= own_room
),
open_shared AS (
    SELECT shared.key,
           {shared_room} - (SELECT count(*) FROM limited WHERE limited.own_key = shared.key) AS room
    FROM jobs_limit_key AS shared
    WHERE shared.key IN (SELECT shared_limit_key FROM limited)
      AND {shared_room} > 0
    FOR NO KEY UPDATE OF shared SKIP LOCKED
),
plain AS (
    SELECT candidate.id, candidate.priority, candidate.run_at,
           row_number() OVER (ORDER BY candidate.priority DESC, candidate.run_at, candidate.id)
    FROM open_queues AS q
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at
        FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NULL AND queue = q.name
          AND run_at <= statement_timestamp()
        ORDER BY priority DESC, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS candidate
),
claimed AS (
    SELECT id, priority, run_at, turn, to_timestamp(%(plain_served)s::float8) AS served_at
    FROM plain AS p(id, priority, run_at, turn)
    UNION ALL
    SELECT id, priority, run_at, turn, served_at FROM (
        SELECT limited.id, limited.priority, limited.run_at, limited.turn,
               limited.own_served_at AS served_at, limited.shared_limit_key,
               row_number() OVER (PARTITION BY limited.shared_limit_key
                                  ORDER BY limited.priority DESC, limited.turn,
                                           limited.own_served_at NULLS FIRST, limited.run_at,
                                           limited.id) AS shared_turn
        FROM limited
    ) AS candidate
    WHERE candidate.shared_limit_key IS NULL
       OR candidate.shared_turn <= (SELECT room FROM open_shared
                                    WHERE open_shared.key = candidate.shared_limit_key)
    ORDER BY priority DESC, turn, served_at NULLS FIRST, run_at, id
    LIMIT %(limit)s
),
started AS (
{start_attempt}, job.limit_key, job.shared_limit_key
),
counted AS (
    UPDATE jobs_limit_key AS counter
    SET running = counter.running + used.jobs,
        tokens = CASE WHEN counter.rate IS NULL THEN counter.tokens
                      ELSE {counter_tokens} - used.jobs END,
        refilled_at = CASE WHEN counter.rate IS NULL THEN counter.refilled_at
                           ELSE statement_timestamp() END,
        served_at = CASE WHEN used.own THEN statement_timestamp() ELSE counter.served_at END
    FROM (
        SELECT key, count(*)::int, bool_or(own)
        FROM started,
             LATERAL (VALUES (started.limit_key, true), (started.shared_limit_key, false))
                 AS k(key, own)
        WHERE key IS NOT NULL
        GROUP BY key
    ) AS used(key, jobs, own)
    WHERE counter.key = used.key
)
SELECT id, backend, task_path, queue, priority, run_at, args, kwargs, attempt, max_attempts,
       timeout, enqueued_at, started_at, last_attempted_at, worker_ids, errors, run_after,
       trace_context, limited, has_dependants
FROM started
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL,
       jsonb_build_object(
           'after',
           (SELECT COALESCE(jsonb_object_agg(queue, COALESCE(key, '')), '{{}}')
            FROM (SELECT DISTINCT ON (queue) queue, key FROM keys
                  ORDER BY queue, visited + skipped DESC) AS last),
           'limited', (SELECT count(*) FROM started WHERE limited),
           'keys', (SELECT count(*) FROM keys WHERE key IS NOT NULL),
           'full', (SELECT count(*) FROM keys WHERE key IS NOT NULL)
                   - (SELECT count(*) FROM open_keys)
       )::text,
       NULL, NULL
"""
# Up to `limit` due jobs of each open key, in claim order, locked as read,
# leaving out those that `excluded` names: a key's share of the batch, and
# what tops it up.
_KEY_CANDIDATES = """
    SELECT open_keys.queue, open_keys.key, open_keys.room, open_keys.served_at, candidate.*
    FROM open_keys
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at, shared_limit_key
        FROM jobs_job
        WHERE status = 'READY' AND queue = open_keys.queue AND limit_key = open_keys.key
          AND run_at <= statement_timestamp(){excluded}
        ORDER BY priority DESC, run_at, id
        LIMIT {limit}
        FOR UPDATE SKIP LOCKED
    ) AS candidate"""
_LIMITED_PARTS = {
    "shares": _KEY_CANDIDATES.format(
        excluded="", limit="LEAST(open_keys.room, (SELECT share FROM key_share))"
    ),
    "topped_up": _KEY_CANDIDATES.format(
        excluded="""
          AND id NOT IN (SELECT shares.id FROM shares
                         WHERE shares.queue = open_keys.queue AND shares.key = open_keys.key)""",
        limit="open_keys.room - (SELECT share FROM key_share)",
    ),
    "own_room": _room("own"),
    "shared_room": _room("shared"),
    "counter_tokens": TOKENS.format(row="counter"),
    "start_attempt": START_ATTEMPT.format(claimed_columns=CLAIMED_COLUMNS),
}
LIMITED_CLAIM, LIMITED_CLAIM_EVERY_QUEUE = _for_queues(
    _LIMITED_CLAIM,
    key_scan_start="COALESCE(%(after)s::jsonb ->> q.name, '')",
    has_room=f"{_room('own')} > 0",
    **_LIMITED_PARTS,
)

# Seconds until a job of these queues may start, under no limit and under
# limits (None: none is due, or none can start until a slot frees, which
# NOTIFYs). For jobs under no limit as SECONDS_UNTIL_NEXT_DUE;
# for each key (up to `visit` per queue, from the first; with `skip`, those
# without a free slot passed over, see _KEY_SCAN) the latest of its first
# job's run_at, and the time its own and shared buckets next hold a token; a
# key or shared key that has no free slot counts no time at all.
# A key's first job in claim order stands for all of its jobs: with one
# priority, that is the one due first.
_LIMITED_SECONDS_UNTIL_NEXT_DUE = """
{key_scan}
waits(limited, due_at) AS (
    SELECT true, GREATEST(first.run_at, {own_token_due}, {shared_token_due})
    FROM keys
    CROSS JOIN LATERAL (
        SELECT run_at, shared_limit_key FROM jobs_job
        WHERE status = 'READY' AND queue = keys.queue AND limit_key = keys.key
        ORDER BY priority DESC, run_at, id
        LIMIT 1
    ) AS first
    JOIN jobs_limit_key AS own ON own.key = keys.key
    LEFT JOIN jobs_limit_key AS shared ON shared.key = first.shared_limit_key
    WHERE COALESCE(own.concurrency > own.running, true)
      AND COALESCE(shared.concurrency > shared.running, true)
    UNION ALL
    SELECT false, min(next.run_at)
    FROM open_queues AS q
    CROSS JOIN LATERAL (
        SELECT run_at FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NULL AND queue = q.name
        ORDER BY run_at
        LIMIT 1
    ) AS next
)
SELECT extract(epoch FROM min(due_at) FILTER (WHERE NOT limited) - clock_timestamp())::float8,
       extract(epoch FROM min(due_at) FILTER (WHERE limited) - clock_timestamp())::float8
FROM waits
"""
# When a bucket next holds a whole token (the past, when it holds one now).
TOKEN_DUE = """COALESCE({row}.refilled_at + make_interval(secs =>
    (1 - {row}.tokens) * {row}.period / {row}.rate), '-infinity')"""
_LIMITED_WAIT_PARTS = {
    "own_token_due": TOKEN_DUE.format(row="own"),
    "shared_token_due": TOKEN_DUE.format(row="shared"),
}
LIMITED_SECONDS_UNTIL_NEXT_DUE, LIMITED_SECONDS_UNTIL_NEXT_DUE_EVERY_QUEUE = _for_queues(
    _LIMITED_SECONDS_UNTIL_NEXT_DUE,
    key_scan_start="''",
    has_room="COALESCE(own.concurrency > own.running, true)",
    **_LIMITED_WAIT_PARTS,
)

# The keys whose count of running jobs disagrees with the RUNNING rows, which
# the reconciliation then recounts under their row locks (RECOUNT_LIMIT_KEYS).
# Only a bug, or a RUNNING row deleted by hand, can make them disagree: every
# claim and completion writes a key's count and its jobs in one transaction,
# so one snapshot sees both or neither. Reads the RUNNING rows and the keys
# that count some, not the history or every key.
_RUNNING_BY_KEY = """
SELECT key, count(*)::int AS jobs
FROM jobs_job, LATERAL (VALUES (limit_key), (shared_limit_key)) AS k(key)
WHERE status = 'RUNNING' AND key IS NOT NULL
GROUP BY key
"""
MISCOUNTED_LIMIT_KEYS = f"""
WITH actual AS ({_RUNNING_BY_KEY})
SELECT counter.key FROM jobs_limit_key AS counter
WHERE counter.running > 0
  AND counter.running <> COALESCE((SELECT jobs FROM actual WHERE actual.key = counter.key), 0)
UNION
SELECT counter.key FROM actual JOIN jobs_limit_key AS counter USING (key)
WHERE counter.running <> actual.jobs
"""

# Lock the key rows to recount, in key order, inside the reconciliation's
# transaction: while they are held no claim starts their jobs (it skips
# them) and no run that ends counts itself out (it waits).
LOCK_LIMIT_KEYS = """
SELECT key FROM jobs_limit_key WHERE key = ANY(%(keys)s::text[]) ORDER BY key FOR NO KEY UPDATE
"""

# The recount, a statement after the locks were taken: its snapshot holds
# every claim and completion that committed before them.
RECOUNT_LIMIT_KEYS = f"""
WITH actual AS ({_RUNNING_BY_KEY})
UPDATE jobs_limit_key AS counter
SET running = COALESCE((SELECT jobs FROM actual WHERE actual.key = counter.key), 0)
WHERE counter.key = ANY(%(keys)s::text[])
  AND counter.running <> COALESCE((SELECT jobs FROM actual WHERE actual.key = counter.key), 0)
RETURNING counter.key
"""

# Key rows of limits that hold nothing (no run, a full bucket), from `after`
# in key order, a batch at a time, locked for PRUNE_LIMIT_KEYS. SKIP LOCKED
# leaves the rows that a claim, a completion or an enqueue holds now.
IDLE_LIMIT_KEYS = f"""
SELECT key FROM jobs_limit_key AS idle
WHERE key > %(after)s AND running = 0
  AND (rate IS NULL OR {TOKENS.format(row="idle")} >= burst)
ORDER BY key
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

# Delete the locked idle keys that no live job names. A statement after the
# locks were taken, so its snapshot holds every enqueue that held one of
# these rows (ENSURE_LIMIT_KEYS' FOR KEY SHARE) before: a key whose jobs are
# WAITING, READY or RUNNING stays. An enqueue that comes after waits for this
# transaction, finds the row gone and makes it anew.
PRUNE_LIMIT_KEYS = """
WITH live AS (
    SELECT limit_key AS key FROM jobs_job
    WHERE status = 'READY' AND limit_key = ANY(%(keys)s::text[])
    UNION
    SELECT shared_limit_key FROM jobs_job
    WHERE status = 'READY' AND limit_key IS NOT NULL AND shared_limit_key = ANY(%(keys)s::text[])
    UNION
    SELECT key FROM jobs_job, LATERAL (VALUES (limit_key), (shared_limit_key)) AS k(key)
    WHERE status IN ('WAITING', 'RUNNING') AND key = ANY(%(keys)s::text[])
)
DELETE FROM jobs_limit_key
WHERE key = ANY(%(keys)s::text[]) AND key NOT IN (SELECT key FROM live WHERE key IS NOT NULL)
"""


# The limit keys of jobs that a retry makes READY or WAITING again, whose rows
# a prune of idle keys may have deleted while the jobs were finished: the
# retry makes and holds them again (ENSURE_LIMIT_KEYS) before it commits.
LIMIT_KEYS_OF_JOBS = """
SELECT task_path, queue, limit_key, shared_limit_key FROM jobs_job
WHERE id = ANY(%(ids)s::uuid[]) AND limit_key IS NOT NULL
"""


def claim_statement(*, limited: bool, every_queue: bool) -> str:
    """
    The claim for a worker of named queues or of every queue: LIMITED_CLAIM
    while a job under limits may start, else CLAIM, which costs a third of it.
    """
    if limited:
        return LIMITED_CLAIM_EVERY_QUEUE if every_queue else LIMITED_CLAIM
    return CLAIM_EVERY_QUEUE if every_queue else CLAIM


def next_due_statement(*, limited: bool, every_queue: bool) -> str:
    """When a job may start next: under limits too while the worker sees such jobs."""
    if limited:
        return (
            LIMITED_SECONDS_UNTIL_NEXT_DUE_EVERY_QUEUE
            if every_queue
            else LIMITED_SECONDS_UNTIL_NEXT_DUE
        )
    return SECONDS_UNTIL_NEXT_DUE_EVERY_QUEUE if every_queue else SECONDS_UNTIL_NEXT_DUE
