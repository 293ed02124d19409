"""
The queue's SQL, in one place.

Every statement here is one round trip. The invariants that keep the queue
correct under concurrency are stated beside the statement that keeps them.
"""

# Channel of the NOTIFY sent when a job becomes due now; the payload is its queue.
READY_CHANNEL = "jobs_ready"
# The same for a job under a limit (jobs.limits), or a slot of one that frees:
# a worker with limits runs LIMITED_CLAIM only while such jobs may start.
LIMITED_READY_CHANNEL = "jobs_limited_ready"

# Enqueue one or many jobs of one task in a single INSERT on the caller's
# connection, so the jobs exist only if the caller's transaction commits.
#
# The ids arrive as one comma-separated text and the calls as one JSON array
# of [args, kwargs] pairs, zipped on the server: two parameters whatever the
# batch size, instead of arrays that the driver would encode element by
# element. Only their count and enqueue time come back.
#
# NOTIFY is transactional too: it is delivered at commit, and Postgres folds
# identical (channel, payload) notifications of one transaction into one, so a
# transaction that enqueues 10,000 jobs on one queue wakes the workers once and
# takes the notify queue's global lock once. Only jobs due before the workers'
# next poll notify (the backend decides): a worker woken for one that is not
# due yet reads its run_at and sleeps until then; later ones wake nobody.
#
# A unique key that is READY or RUNNING already makes the insert a no-op
# (ON CONFLICT against the partial unique index, so there is no race between
# concurrent enqueues); the caller then reads the existing job. A unique key
# comes with a single job only.
_ENQUEUE = """
WITH job AS (
    INSERT INTO jobs_job (
        id, backend, task_path, queue, priority, args, kwargs, status, run_at, run_after,
        attempts, max_attempts, timeout, enqueued_at, worker_ids, errors, unique_key{label_columns}
    )
    SELECT
        new.id, %(backend)s, %(task_path)s, %(queue)s, %(priority)s,
        new.call -> 0, new.call -> 1, 'READY', COALESCE(%(run_after)s, statement_timestamp()),
        %(run_after)s, 0, %(max_attempts)s, %(timeout)s, statement_timestamp(), '{{}}', '[]',
        %(unique_key)s{label_values}
    FROM ROWS FROM (
        unnest(string_to_array(%(ids)s::text, ',')::uuid[]),
        jsonb_array_elements(%(calls)s::jsonb)
    ) AS new(id, call)
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND status IN ('READY', 'RUNNING') DO NOTHING
    RETURNING 1
)
SELECT count(*), statement_timestamp(),
       CASE WHEN %(notify)s AND count(*) > 0 THEN pg_notify('{ready_channel}', %(queue)s) END
FROM job
"""

# ENQUEUE for one job, the common case of a view or a signal handler: a
# plain INSERT ... VALUES, planned and run in about 100 µs less than the
# batch form's unnest and count. Its call is the same [[args, kwargs]] JSON.
# The same transactional NOTIFY, and the same no-op on a live unique key,
# which returns no row.
_ENQUEUE_ONE = """
INSERT INTO jobs_job (
    id, backend, task_path, queue, priority, args, kwargs, status, run_at, run_after,
    attempts, max_attempts, timeout, enqueued_at, worker_ids, errors, unique_key{label_columns}
)
VALUES (
    %(ids)s::uuid, %(backend)s, %(task_path)s, %(queue)s, %(priority)s,
    %(calls)s::jsonb -> 0 -> 0, %(calls)s::jsonb -> 0 -> 1, 'READY',
    COALESCE(%(run_after)s, statement_timestamp()), %(run_after)s,
    0, %(max_attempts)s, %(timeout)s, statement_timestamp(), '{{}}', '[]',
    %(unique_key)s{label_values}
)
ON CONFLICT (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('READY', 'RUNNING') DO NOTHING
RETURNING 1, statement_timestamp(),
          CASE WHEN %(notify)s THEN pg_notify('{ready_channel}', %(queue)s) END
"""

# Each in three forms: jobs with tags, meta or a trace context name those
# columns; the others leave them to the columns' defaults, which keeps three
# parameters (5% of an enqueue's time) off the common path. Jobs under limits
# (jobs.limits) name them too, and their keys: each call's [own key, shared
# key] comes third in its JSON, after args and kwargs.
_PLAIN = {"label_columns": "", "label_values": "", "ready_channel": READY_CHANNEL}
_LABELLED = {
    "label_columns": ", tags, meta, trace_context",
    "label_values": ", %(tags)s::varchar[], %(meta)s::jsonb, %(trace_context)s::jsonb",
    "ready_channel": READY_CHANNEL,
}
_LIMITED = {
    "label_columns": _LABELLED["label_columns"] + ", limit_key, shared_limit_key",
    "label_values": _LABELLED["label_values"] + ", {call} -> 2 ->> 0, {call} -> 2 ->> 1",
    "ready_channel": LIMITED_READY_CHANNEL,
}
ENQUEUE = _ENQUEUE.format(**_PLAIN)
ENQUEUE_LABELLED = _ENQUEUE.format(**_LABELLED)
ENQUEUE_ONE = _ENQUEUE_ONE.format(**_PLAIN)
ENQUEUE_ONE_LABELLED = _ENQUEUE_ONE.format(**_LABELLED)

# The key rows of jobs under limits are made just before their jobs, in the
# same transaction: a claim starts a job only through its keys' rows.
#
# Each row is [key, name, concurrency, rate, period, burst]; a new bucket
# starts full. New rows are inserted in key order, so two enqueues that make
# the same new keys wait for each other's commit, never deadlock.
#
# A row that exists already is held FOR KEY SHARE until the enqueue commits:
# that lock does not conflict with the claim's and the completion's FOR NO
# KEY UPDATE, nor with another enqueue's, so enqueues of one key never wait
# for each other; it does conflict with the DELETE of an idle key
# (PRUNE_LIMIT_KEYS), which therefore either sees this enqueue's jobs or
# happens wholly before it. A row deleted or made by another transaction
# after this statement's snapshot is neither held nor made here: the result
# is false, and the caller runs the statement again (jobs.transitions).
ENSURE_LIMIT_KEYS = """
WITH wanted AS (
    SELECT DISTINCT ON (row ->> 0) row ->> 0 AS key, row
    FROM jsonb_array_elements(%(limit_keys)s::jsonb) AS row
    ORDER BY row ->> 0
),
made AS (
    INSERT INTO jobs_limit_key (
        key, name, concurrency, rate, period, burst, running, tokens, refilled_at
    )
    SELECT key, row ->> 1, (row ->> 2)::int, (row ->> 3)::int, (row ->> 4)::float8,
           (row ->> 5)::int, 0, COALESCE((row ->> 5)::float8, 0), statement_timestamp()
    FROM wanted
    ORDER BY key
    ON CONFLICT (key) DO NOTHING
    RETURNING key
),
held AS (
    SELECT key FROM jobs_limit_key WHERE key IN (SELECT key FROM wanted)
    ORDER BY key
    FOR KEY SHARE
)
SELECT (SELECT count(*) FROM made) + (SELECT count(*) FROM held) = (SELECT count(*) FROM wanted)
"""
ENQUEUE_LIMITED = _ENQUEUE.format(
    **{**_LIMITED, "label_values": _LIMITED["label_values"].format(call="new.call")}
)
ENQUEUE_ONE_LIMITED = _ENQUEUE_ONE.format(
    **{**_LIMITED, "label_values": _LIMITED["label_values"].format(call="%(calls)s::jsonb -> 0")}
)

# Whether jobs under limits wait: a worker without LIMITS never claims them.
LIMITED_JOBS_WAIT = """
SELECT count(*) FROM (
    SELECT FROM jobs_job WHERE status = 'READY' AND limit_key IS NOT NULL LIMIT 1000
) AS waiting
"""

# Bring the key rows of a limit to its settings, when a worker starts.
SYNC_LIMIT = """
UPDATE jobs_limit_key
SET concurrency = %(concurrency)s, rate = %(rate)s, period = %(period)s, burst = %(burst)s,
    tokens = LEAST(tokens, COALESCE(%(burst)s, 0))
WHERE name = %(name)s
  AND (concurrency, rate, period, burst) IS DISTINCT FROM
      (%(concurrency)s::int, %(rate)s::int, %(period)s::float8, %(burst)s::int)
"""

LIVE_JOB_BY_UNIQUE_KEY = """
SELECT id FROM jobs_job WHERE unique_key = %s AND status IN ('READY', 'RUNNING')
"""

# Claim up to `limit` due jobs of the given queues in one statement.
#
# A paused queue (a row in jobs_paused_queue) gives nothing: the pause holds
# from the commit that paused it, for every claim that starts after.
#
# FOR UPDATE SKIP LOCKED: two workers claiming at once never take the same row
# and never wait for each other; a row another worker is claiming right now is
# simply skipped. The row lock lasts until this statement commits (autocommit),
# by which time the row is RUNNING and no longer matches `status = 'READY'`.
#
# Jobs under a limit are not this statement's: see LIMITED_CLAIM, which a
# worker runs instead when its backend has limits.
#
# The lateral subquery reads the partial claim index once per queue in
# (priority DESC, run_at, id) order and stops after `limit` rows, so the cost
# does not grow with the backlog. The caller re-sorts the returned rows, since
# RETURNING keeps no order.
#
# `attempts` is incremented here, at claim: the attempt number is the fence
# that every later write of this attempt must match (see COMPLETE).
#
# The clock is the statement's: in the worker's autocommit it is now(), and
# jobs.testing runs the claim inside a test's transaction, where now() is when
# the transaction began, before the jobs the test enqueued were due.
#
# Times come back as epoch seconds: a float costs the coordinator a fraction
# of a datetime to read and to pickle for the executor, which makes the
# datetimes its TaskResult needs.
#
# The columns come back in the order of jobs.worker.protocol.ClaimedJob's
# fields, each named as the field it fills (tests/test_worker_parts.py checks
# both), so a row becomes a ClaimedJob by position, with no lookup per column.
_CLAIMED_COLUMNS = """job.id::text AS id, job.backend AS backend, job.task_path AS task_path,
          job.queue AS queue, job.priority AS priority,
          extract(epoch FROM job.run_at)::float8 AS run_at,
          job.args::text AS args, job.kwargs::text AS kwargs,
          job.attempts AS attempt, job.max_attempts AS max_attempts,
          extract(epoch FROM job.timeout)::float8 AS timeout,
          extract(epoch FROM job.enqueued_at)::float8 AS enqueued_at,
          extract(epoch FROM job.started_at)::float8 AS started_at,
          extract(epoch FROM job.last_attempted_at)::float8 AS last_attempted_at,
          job.worker_ids AS worker_ids, job.errors::text AS errors,
          extract(epoch FROM job.run_after)::float8 AS run_after,
          job.trace_context::text AS trace_context,
          job.limit_key IS NOT NULL AS limited,
          job.has_dependants AS has_dependants"""

_CLAIM = """
WITH {ready_queues}claimed AS (
    SELECT candidate.id, candidate.priority, candidate.run_at
    FROM {queues} AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at
        FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NULL AND queue = q.name
          AND run_at <= statement_timestamp()
          AND NOT EXISTS (SELECT FROM jobs_paused_queue AS paused WHERE paused.queue = q.name)
        ORDER BY priority DESC, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS candidate
    ORDER BY candidate.priority DESC, candidate.run_at, candidate.id
    LIMIT %(limit)s
)
UPDATE jobs_job AS job
SET status = 'RUNNING',
    attempts = job.attempts + 1,
    started_at = COALESCE(job.started_at, statement_timestamp()),
    last_attempted_at = statement_timestamp(),
    worker_ids = array_append(job.worker_ids, %(worker_id)s)
FROM claimed
WHERE job.id = claimed.id
RETURNING {claimed_columns}
"""

# The queues that have READY jobs, for a worker of every queue (a backend
# whose QUEUES is empty allows any name): a loose index scan, one probe of the
# claim index per queue, so it costs as many probes as there are queues, not
# a read of the backlog. Ends with one NULL name, which matches no job.
READY_QUEUES = """RECURSIVE ready_queues(name) AS (
    SELECT min(queue) FROM jobs_job WHERE status = 'READY'
    UNION ALL
    SELECT (SELECT min(queue) FROM jobs_job WHERE status = 'READY' AND queue > ready_queues.name)
    FROM ready_queues
    WHERE ready_queues.name IS NOT NULL
)"""

_CLAIM_PARTS = {"claimed_columns": _CLAIMED_COLUMNS}
CLAIM = _CLAIM.format(ready_queues="", queues="unnest(%(queues)s::text[])", **_CLAIM_PARTS)
CLAIM_EVERY_QUEUE = _CLAIM.format(
    ready_queues=f"{READY_QUEUES},\n", queues="ready_queues", **_CLAIM_PARTS
)

# Seconds until the next READY job of these queues is due (None: none is).
# A paused queue's jobs are left out: due but not claimable, they would keep
# the worker claiming in a loop.
# One index probe per queue on the (queue, run_at) partial index; for a
# worker of every queue, per queue that READY_QUEUES finds.
_SECONDS_UNTIL_NEXT_DUE = """
{with_ready_queues}SELECT extract(epoch FROM min(next.run_at) - clock_timestamp())::float8
FROM {queues} AS q(name)
CROSS JOIN LATERAL (
    SELECT run_at FROM jobs_job
    WHERE status = 'READY' AND limit_key IS NULL AND queue = q.name
      AND NOT EXISTS (SELECT FROM jobs_paused_queue AS paused WHERE paused.queue = q.name)
    ORDER BY run_at
    LIMIT 1
) AS next
"""
SECONDS_UNTIL_NEXT_DUE = _SECONDS_UNTIL_NEXT_DUE.format(
    with_ready_queues="", queues="unnest(%(queues)s::text[])"
)
SECONDS_UNTIL_NEXT_DUE_EVERY_QUEUE = _SECONDS_UNTIL_NEXT_DUE.format(
    with_ready_queues=f"WITH {READY_QUEUES}\n", queues="ready_queues"
)

# How many jobs a key row lets start now: its free slots (concurrency less
# running) and the whole tokens of its bucket, refilled to this statement's
# time; a limit it does not set allows the claim's whole batch.
_ROOM = """LEAST(
    %(limit)s,
    COALESCE({row}.concurrency - {row}.running, %(limit)s),
    COALESCE(floor({tokens})::int, %(limit)s)
)"""
_TOKENS = """LEAST({row}.burst, {row}.tokens
    + extract(epoch FROM statement_timestamp() - {row}.refilled_at) * {row}.rate / {row}.period)"""


def _room(row: str) -> str:
    return _ROOM.format(row=row, tokens=_TOKENS.format(row=row))


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
keyed AS (
    SELECT candidate.*, open_keys.key AS own_key, open_keys.room AS own_room,
           open_keys.served_at AS own_served_at,
           row_number() OVER (
               PARTITION BY open_keys.key
               ORDER BY candidate.priority DESC, candidate.run_at, candidate.id
           ) AS turn
    FROM open_keys
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at, shared_limit_key
        FROM jobs_job
        WHERE status = 'READY' AND queue = open_keys.queue AND limit_key = open_keys.key
          AND run_at <= statement_timestamp()
        ORDER BY priority DESC, run_at, id
        LIMIT open_keys.room
        FOR UPDATE SKIP LOCKED
    ) AS candidate
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
    UPDATE jobs_job AS job
    SET status = 'RUNNING',
        attempts = job.attempts + 1,
        started_at = COALESCE(job.started_at, statement_timestamp()),
        last_attempted_at = statement_timestamp(),
        worker_ids = array_append(job.worker_ids, %(worker_id)s)
    FROM claimed
    WHERE job.id = claimed.id
    RETURNING {claimed_columns}, job.limit_key, job.shared_limit_key
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
_LIMITED_PARTS = {
    "own_room": _room("own"),
    "shared_room": _room("shared"),
    "counter_tokens": _TOKENS.format(row="counter"),
    "claimed_columns": _CLAIMED_COLUMNS,
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
_TOKEN_DUE = """COALESCE({row}.refilled_at + make_interval(secs =>
    (1 - {row}.tokens) * {row}.period / {row}.rate), '-infinity')"""
_LIMITED_WAIT_PARTS = {
    "own_token_due": _TOKEN_DUE.format(row="own"),
    "shared_token_due": _TOKEN_DUE.format(row="shared"),
}
LIMITED_SECONDS_UNTIL_NEXT_DUE, LIMITED_SECONDS_UNTIL_NEXT_DUE_EVERY_QUEUE = _for_queues(
    _LIMITED_SECONDS_UNTIL_NEXT_DUE,
    key_scan_start="''",
    has_room="COALESCE(own.concurrency > own.running, true)",
    **_LIMITED_WAIT_PARTS,
)

# Whether jobs_job has never been analyzed (a new table, or one just
# truncated). Without statistics the planner guesses one READY row and may
# claim through jobs_job_due_idx, sorting the whole backlog on every
# claim, instead of reading jobs_job_claim_plain_idx in order; any statistics,
# even of an empty table, make it read the claim index.
NEVER_ANALYZED = """
SELECT reltuples < 0 FROM pg_class WHERE oid = 'jobs_job'::regclass
"""

# Needs the table's owner; anyone else gets a warning and no statistics.
ANALYZE = "ANALYZE jobs_job"

# Channel of the NOTIFY sent when jobs finish; the payload is their ids,
# comma-separated, at most WAITER_CHUNK of them per notification (Postgres
# caps a payload at 8000 bytes).
FINISHED_CHANNEL = "jobs_finished"
WAITER_CHUNK = 200

# Free the slots of the jobs in `{ended}` (a CTE of ended runs, with their
# limit keys and queue): each key row's `running` goes down by its jobs there,
# and each of their queues is woken, since a job held back by one of those
# keys may start now. The rows are locked in key order before they are
# written, so two statements that free the same keys never deadlock.
_FREE_SLOTS = """,
freed_keys AS (
    SELECT key, count(*)::int AS jobs
    FROM {ended}, LATERAL (VALUES ({ended}.limit_key), ({ended}.shared_limit_key)) AS k(key)
    WHERE key IS NOT NULL
    GROUP BY key
),
locked_keys AS (
    SELECT counter.key FROM jobs_limit_key AS counter
    WHERE counter.key IN (SELECT key FROM freed_keys)
    ORDER BY counter.key
    FOR NO KEY UPDATE
),
freed AS (
    UPDATE jobs_limit_key AS counter
    SET running = GREATEST(counter.running - freed_keys.jobs, 0){refund}
    FROM freed_keys JOIN locked_keys USING (key)
    WHERE counter.key = freed_keys.key
),
woken_by_freed AS (
    SELECT pg_notify('{ready_channel}', queue)
    FROM (SELECT DISTINCT queue FROM {ended} WHERE limit_key IS NOT NULL) AS queues
)"""


# A run given back before it began (RELEASE) returns the token its claim took
# as well as its slot: a give-back spends nothing of the rate.
_REFUND_TOKENS = """,
        tokens = CASE WHEN counter.rate IS NULL THEN counter.tokens
                      ELSE LEAST(counter.burst, counter.tokens + freed_keys.jobs) END"""


def _freeing(ended: str, *, refund: bool = False) -> str:
    return _FREE_SLOTS.format(
        ended=ended,
        ready_channel=LIMITED_READY_CHANNEL,
        refund=_REFUND_TOKENS if refund else "",
    )


# Write the outcomes of many attempts in one statement.
#
# The fence: a row is written only while it is still RUNNING the very attempt
# that produced the outcome (`attempts = outcome.attempt`). A worker that was
# presumed dead, whose job was rescued and claimed again (attempts + 1), can
# therefore never overwrite the re-run's state; RETURNING tells the caller which
# outcomes were accepted, and the others are reported as discarded.
#
# status is SUCCESSFUL or FAILED (finished_at set), or READY for a retry
# (run_at moves to the retry time; finished_at stays empty).
#
# The outcomes arrive as one JSON array of [id, attempt, status, finished_at,
# retry_at, return value as JSON text, error as JSON text]: json.dumps of a
# batch costs a fraction of psycopg's dumping of seven arrays, and the whole
# statement takes 7 ms instead of 10 for 350 outcomes.
#
# Jobs that finished are announced on FINISHED_CHANNEL, so that code waiting
# for a result wakes at once instead of polling.
_COMPLETE = """
WITH done AS (
    UPDATE jobs_job AS job
    SET status = outcome.status,
        finished_at = CASE WHEN outcome.status = 'READY' THEN NULL
                           ELSE to_timestamp(outcome.finished_at) END,
        run_at = COALESCE(to_timestamp(outcome.retry_at), job.run_at),
        return_value = outcome.return_value,
        errors = CASE WHEN outcome.error IS NULL THEN job.errors
                      ELSE job.errors || jsonb_build_array(outcome.error) END
    FROM (
        SELECT (o ->> 0)::uuid, (o ->> 1)::int, o ->> 2, (o ->> 3)::float8, (o ->> 4)::float8,
               (o ->> 5)::jsonb, (o ->> 6)::jsonb
        FROM jsonb_array_elements(%(outcomes)s::jsonb) AS o
    ) AS outcome(id, attempt, status, finished_at, retry_at, return_value, error)
    WHERE job.id = outcome.id
      AND job.status = 'RUNNING'
      AND job.attempts = outcome.attempt
    RETURNING job.id, job.status{limit_columns}
),
announced AS (
    SELECT pg_notify('{finished_channel}', string_agg(id::text, ','))
    FROM (
        SELECT id, (row_number() OVER () - 1) / {waiter_chunk} AS chunk
        FROM done WHERE status <> 'READY'
    ) AS finished
    GROUP BY chunk
){freeing}
SELECT done.id::text FROM done, (SELECT count(*) FROM announced) AS announcements{woken}
"""
_COMPLETE_PARTS = {"finished_channel": FINISHED_CHANNEL, "waiter_chunk": WAITER_CHUNK}
COMPLETE = _COMPLETE.format(limit_columns="", freeing="", woken="", **_COMPLETE_PARTS)
# COMPLETE for a worker whose backend has limits: the runs that ended free
# their keys' slots, in the transaction that writes their outcomes.
COMPLETE_LIMITED = _COMPLETE.format(
    limit_columns=", job.queue, job.limit_key, job.shared_limit_key",
    freeing=_freeing("done"),
    woken=", (SELECT count(*) FROM woken_by_freed) AS woken",
    **_COMPLETE_PARTS,
)

# Give back claimed jobs that this worker will not run or report (shutdown,
# a skip, an executor killed before it reached them or before it reported
# them, a task that does not load here yet): READY again, the attempt not
# spent, due at once or, with run_at (epoch seconds), then. Under limits,
# their slots and their tokens go back to their keys.
# Fenced like COMPLETE, so only this worker's current attempt is undone.
_RELEASE = """
WITH released AS (
UPDATE jobs_job AS job
SET status = 'READY',
    attempts = job.attempts - 1,
    worker_ids = job.worker_ids[1:cardinality(job.worker_ids) - 1],
    started_at = CASE WHEN job.attempts = 1 THEN NULL ELSE job.started_at END,
    run_at = COALESCE(to_timestamp(given_back.run_at), job.run_at)
FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(run_at)s::float8[])
    AS given_back(id, attempt, run_at)
WHERE job.id = given_back.id
  AND job.status = 'RUNNING'
  AND job.attempts = given_back.attempt
RETURNING job.id, job.queue, job.limit_key, job.shared_limit_key
){freeing}
SELECT id FROM released{woken}
"""
RELEASE = _RELEASE.format(freeing="", woken="")
RELEASE_LIMITED = _RELEASE.format(
    freeing=_freeing("released", refund=True),
    woken=", (SELECT count(*) FROM woken_by_freed) AS woken",
)

REGISTER_WORKER = """
INSERT INTO jobs_worker (id, hostname, pid, queues, concurrency, started_at, last_heartbeat)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s, now(), now())
"""

# Returns no row when the worker's row is gone: another worker declared it dead
# and rescued its jobs, so it must stop (its fenced writes would be refused).
HEARTBEAT = """
UPDATE jobs_worker SET last_heartbeat = now() WHERE id = %(id)s RETURNING id
"""

UNREGISTER_WORKER = """
DELETE FROM jobs_worker WHERE id = %(id)s
"""

# Channel of the NOTIFY that tells workers a queue was paused; the payload is
# the queue. Each gives back the jobs of that queue it holds and has not
# started. Resuming notifies READY_CHANNEL, which wakes them to claim.
PAUSE_CHANNEL = "jobs_pause"

# Pause a queue: the row is what the claim reads (see _CLAIM). Pausing a
# paused queue keeps its first pause's time and author. Returns whether this
# call paused it.
PAUSE_QUEUE = f"""
WITH paused AS (
    INSERT INTO jobs_paused_queue (queue, paused_at, paused_by)
    VALUES (%(queue)s, now(), %(by)s)
    ON CONFLICT (queue) DO NOTHING
    RETURNING queue
)
SELECT (SELECT count(*) FROM paused) > 0, pg_notify('{PAUSE_CHANNEL}', %(queue)s)
"""

PAUSED_QUEUES = "SELECT queue FROM jobs_paused_queue ORDER BY queue"

# The READY jobs of a queue to purge, a batch at a time, locked in id order
# for jobs.transitions.purge, which cancels them (their dependants move as
# for any cancel) and deletes them. A row a worker claims meanwhile is
# RUNNING by the time this reaches it, or skipped, and is left to finish.
PURGEABLE = """
SELECT id::text FROM jobs_job
WHERE queue = %(queue)s AND status = 'READY'
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

# Resume a queue; returns whether it was paused. The NOTIFY, sent only then,
# wakes the workers of the queue as an enqueue does.
RESUME_QUEUE = f"""
WITH resumed AS (
    DELETE FROM jobs_paused_queue WHERE queue = %(queue)s RETURNING queue
)
SELECT count(*) > 0,
       CASE WHEN count(*) > 0 THEN pg_notify('{READY_CHANNEL}', %(queue)s) END,
       CASE WHEN count(*) > 0 THEN pg_notify('{LIMITED_READY_CHANNEL}', %(queue)s) END
FROM resumed
"""

# Channel of the NOTIFY that asks workers to stop running a cancelled job;
# the payload is the job id.
CANCEL_CHANNEL = "jobs_cancel"

# Cancel jobs that have not finished. A WAITING or READY job simply never
# runs. A RUNNING one is marked CANCELLED here and its worker is told to kill
# the executor; the worker's own outcome write is then refused by the
# COMPLETE fence (status = 'RUNNING'), so the cancel always wins, and its
# slots under limits are freed here, once.
#
# The rows are locked first, in id order (two cancels of overlapping jobs
# never deadlock); FOR UPDATE returns each row's latest committed version, so
# the status acted on is the one replaced: a job claimed a moment ago is seen
# as RUNNING and its worker is told.
#
# `exception_class_path` is the error entry's class: JobCancelled's path, as
# jobs.transitions.cancel passes it. One row per job found, with the status
# it had, whether this cancelled it, and whether jobs of a workflow wait for
# it (the caller moves them: jobs.transitions.advance).
CANCEL = f"""
WITH target AS (
    SELECT id, status FROM jobs_job WHERE id = ANY(%(ids)s::uuid[]) ORDER BY id FOR UPDATE
),
cancelled AS (
    UPDATE jobs_job AS job
    SET status = 'CANCELLED',
        finished_at = now(),
        errors = job.errors || jsonb_build_array(jsonb_build_object(
            'exception_class_path', %(exception_class_path)s::text,
            'message', %(reason)s::text,
            'traceback', %(reason)s::text,
            'attempt', job.attempts,
            'at', extract(epoch FROM now())
        ))
    FROM target
    WHERE job.id = target.id AND target.status IN ('WAITING', 'READY', 'RUNNING')
    RETURNING job.id, job.queue, job.limit_key, job.shared_limit_key, job.has_dependants,
              target.status AS was
),
stopped AS (
    SELECT * FROM cancelled WHERE was = 'RUNNING'
),
told AS (
    SELECT pg_notify('{CANCEL_CHANNEL}', id::text) FROM stopped
){_freeing("stopped")}
SELECT target.id::text, target.status, cancelled.id IS NOT NULL,
       COALESCE(cancelled.has_dependants, false),
       (SELECT count(*) FROM told) + (SELECT count(*) FROM woken_by_freed)
FROM target LEFT JOIN cancelled USING (id)
ORDER BY target.id
"""

# The channel that announces a job of jobs_job due now.
_READY_CHANNEL_OF_JOB = (
    f"CASE WHEN limit_key IS NULL THEN '{READY_CHANNEL}' ELSE '{LIMITED_READY_CHANNEL}' END"
)

# Send a FAILED or CANCELLED job round again, with one more attempt to spend.
# Locks the job (the first lock a retry takes: jobs, then dependants). Says
# whether jobs of a workflow wait for it, and whether it is itself one that
# was never given its parents' results (cancelled while it waited), which
# then waits again for what it waits for (RECOUNT_DEPENDANTS).
RETRY = f"""
UPDATE jobs_job
SET status = 'READY',
    run_at = now(),
    finished_at = NULL,
    max_attempts = GREATEST(max_attempts, attempts + 1)
WHERE id = %(id)s AND status IN ('FAILED', 'CANCELLED')
RETURNING pg_notify({_READY_CHANNEL_OF_JOB}, queue), has_dependants,
          parent_results IS NOT NULL AND run_when IS NOT NULL
"""

# Make a scheduled READY job due now.
RUN_NOW = f"""
UPDATE jobs_job SET run_at = now()
WHERE id = %(id)s AND status = 'READY'
RETURNING pg_notify({_READY_CHANNEL_OF_JOB}, queue)
"""

# Rescue the jobs of dead workers. Any live worker runs this now and then.
#
# A worker is dead when its heartbeat is older than `dead_after` seconds; its
# row is deleted, and every RUNNING job whose latest attempt belongs to a
# worker that is not alive (dead now, or gone before) goes back to READY, or to
# FAILED when its attempts are spent, with a "worker lost" error entry. The
# attempt stays counted, so the fence of COMPLETE refuses whatever the lost
# worker might still write should it wake up.
#
# Two rescuers at once are harmless: the second blocks on the rows the first
# updates and, once the first commits, re-checks `status = 'RUNNING'` and skips
# them.
#
# `exception_class_path` is the error entry's class, WorkerLost's path (see
# jobs.worker.attempts.WORKER_LOST). The rescued job is due at once: its
# worker vanished, the job itself did not fail.
RESCUE = f"""
WITH dead AS (
    DELETE FROM jobs_worker
    WHERE last_heartbeat < now() - make_interval(secs => %(dead_after)s)
    RETURNING id
),
rescued AS (
    UPDATE jobs_job AS job
    SET status = CASE WHEN job.attempts >= job.max_attempts THEN 'FAILED' ELSE 'READY' END,
        run_at = now(),
        finished_at = CASE WHEN job.attempts >= job.max_attempts THEN now() END,
        errors = job.errors || jsonb_build_array(jsonb_build_object(
            'exception_class_path', %(exception_class_path)s::text,
            'message', 'Worker lost: ' || job.worker_ids[cardinality(job.worker_ids)]
                       || ' stopped heartbeating while running this attempt',
            'traceback', '',
            'attempt', job.attempts,
            'worker_id', job.worker_ids[cardinality(job.worker_ids)],
            'at', extract(epoch FROM now())
        ))
    WHERE job.status = 'RUNNING'
      AND NOT EXISTS (
          SELECT 1 FROM jobs_worker AS alive
          WHERE alive.id = job.worker_ids[cardinality(job.worker_ids)]
            AND alive.last_heartbeat >= now() - make_interval(secs => %(dead_after)s)
      )
    RETURNING job.id, job.status, job.queue, job.limit_key, job.shared_limit_key,
              job.has_dependants
),
woken AS (
    SELECT pg_notify('{READY_CHANNEL}', queue)
    FROM (SELECT DISTINCT queue FROM rescued WHERE status = 'READY') AS queues
){_freeing("rescued")}
SELECT (SELECT count(*) FROM dead),
       (SELECT count(*) FROM rescued WHERE status = 'READY'),
       (SELECT count(*) FROM rescued WHERE status = 'FAILED'),
       (SELECT count(*) FROM woken) + (SELECT count(*) FROM woken_by_freed),
       ARRAY(SELECT id::text FROM rescued WHERE status = 'FAILED' AND has_dependants)
"""

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

# Finished jobs older than their retention, one small batch at a time, locked
# for jobs.transitions.prune, which deletes them (DELETE_FINISHED): SKIP
# LOCKED and a LIMIT keep every batch short, so pruning never holds locks
# that the claim or the admin would wait on.
PRUNABLE = """
SELECT id::text FROM jobs_job
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

COUNT_PRUNABLE = """
SELECT count(*) FROM jobs_job
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
"""

# Delete finished jobs (prune, purge and the admin's delete, after a cancel
# for a live job: jobs.transitions.delete), locked in id order.
#
# What a dependant will read outlives its parent: the outcome of a deleted
# job that others wait for, or may wait for again after a retry, is kept on
# its edges (`parent_outcome`), which RESOLVE_PARENT_RESULTS and
# RECOUNT_DEPENDANTS read when the parent's row is gone. A job's own edges
# go with it. No edge is both kept and deleted here: an edge between two
# deleted jobs is only deleted.
DELETE_FINISHED = """
WITH doomed AS (
    SELECT id FROM jobs_job
    WHERE id = ANY(%(ids)s::uuid[]) AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
    ORDER BY id
    FOR UPDATE
),
gone AS (
    DELETE FROM jobs_job AS job USING doomed WHERE job.id = doomed.id
    RETURNING job.id, job.status, job.return_value, job.errors, job.has_dependants
),
kept AS (
    UPDATE jobs_dependency AS edge
    SET parent_outcome = jsonb_build_object(
        'status', gone.status, 'return_value', gone.return_value,
        'error', gone.errors -> -1 ->> 'message'
    )
    FROM gone
    WHERE gone.has_dependants AND edge.parent_id = gone.id
      AND edge.child_id NOT IN (SELECT id FROM gone)
),
unlinked AS (
    DELETE FROM jobs_dependency AS edge USING gone WHERE edge.child_id = gone.id
)
SELECT count(*) FROM gone
"""

# Key rows of limits that hold nothing (no run, a full bucket), from `after`
# in key order, a batch at a time, locked for PRUNE_LIMIT_KEYS. SKIP LOCKED
# leaves the rows that a claim, a completion or an enqueue holds now.
IDLE_LIMIT_KEYS = f"""
SELECT key FROM jobs_limit_key AS idle
WHERE key > %(after)s AND running = 0
  AND (rate IS NULL OR {_TOKENS.format(row="idle")} >= burst)
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

# Channel of the NOTIFY sent when a schedule is saved or deleted: it wakes every
# runscheduler to re-read when the next tick is due.
SCHEDULES_CHANNEL = "jobs_schedules"

# Claim the schedules whose next tick has come, for one scheduling pass.
#
# The invariant: a tick is enqueued only by the transaction that holds its
# schedule's row lock and moves next_run_at past it (ADVANCE_SCHEDULES, same
# transaction). So any number of schedulers enqueue exactly one job per tick:
#
# - FOR UPDATE SKIP LOCKED: a row another scheduler is working on is skipped,
#   never waited for and never taken twice.
# - A row that another scheduler advanced and committed after this statement's
#   snapshot is re-read at its latest version before it is locked (READ
#   COMMITTED re-checks the WHERE clause against it): it is returned only if
#   its new next_run_at is due too, and then with that new next_run_at.
# - An admin save of a locked row waits for the pass to commit, then writes its
#   own next_run_at (Schedule.save never writes next_run_at unless the timing
#   changed), so an open form cannot undo a tick.
# - The row locks last no longer than the pass's transaction, and Postgres
#   bounds that transaction when the scheduler stops in the middle of it
#   (SIGSTOP, a paused VM, a network partition): see SCHEDULER_SESSION. The
#   stalled pass is rolled back whole, the jobs it inserted with it, so the
#   scheduler that takes the rows over enqueues those ticks once, a few
#   seconds late, and the stalled one finds its connection gone when it wakes.
#
# `now` is the database's clock unless a test injects one: every scheduler
# reads the same clock, whatever the skew between their hosts.
CLAIM_SCHEDULES = """
SELECT *, COALESCE(%(now)s, statement_timestamp()) AS claimed_at
FROM jobs_schedule
WHERE enabled AND next_run_at <= COALESCE(%(now)s, statement_timestamp())
ORDER BY next_run_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

# Move the claimed schedules past the ticks this pass enqueued: one statement
# for every schedule of the pass, run in the claim's transaction while its row
# locks are held.
ADVANCE_SCHEDULES = """
UPDATE jobs_schedule AS schedule
SET next_run_at = advance.next_run_at,
    last_run_at = COALESCE(advance.last_run_at, schedule.last_run_at)
FROM unnest(%(ids)s::bigint[], %(next_run_at)s::timestamptz[], %(last_run_at)s::timestamptz[])
    AS advance(id, next_run_at, last_run_at)
WHERE schedule.id = advance.id
"""

# Set on every connection of a scheduler's passes (runner.Scheduler sets it
# whenever Django connects). A pass takes milliseconds. A scheduler that sits
# idle inside its transaction for 5 s has stalled, and Postgres ends its
# session (idle_in_transaction_session_timeout), which rolls the pass back and
# frees its row locks; the timer runs on the server, so it fires however
# frozen the client is. A statement of a pass still running after 5 s (one
# blocked on a lock) is cancelled, and the pass rolled back likewise
# (statement_timeout). The guarantee: a scheduler that stops, wherever in its
# pass, keeps the others off its schedules for about 5 s after its last
# statement, well within the grace that still runs those ticks. Not covered:
# a server process blocked sending a result larger than the socket buffers to
# a frozen client; the claim returns at most PASS_LIMIT small rows.
SCHEDULER_SESSION = """
SELECT set_config('idle_in_transaction_session_timeout', '5s', false),
       set_config('statement_timeout', '5s', false)
"""

# Seconds until the next enabled schedule is due (None: none is), from the
# partial index on next_run_at.
SECONDS_UNTIL_NEXT_TICK = """
SELECT extract(epoch FROM min(next_run_at) - clock_timestamp())::float8
FROM jobs_schedule
WHERE enabled
"""

# Workflows (jobs.workflows).

# Insert the jobs of one workflow, all in one statement: each node a JSON
# object of its own columns, zipped with its call ([args, kwargs], its limit
# keys third for a job under limits), as ENQUEUE zips ids and calls; every
# option of an enqueue is a column here too. READY ones due before the
# workers' next poll wake their queues at commit, as an enqueue does (on the
# limited channel for jobs under limits, whose key rows ENSURE_LIMIT_KEYS
# made first); WAITING ones are not the claim's until ADVANCE_WORKFLOWS makes
# them READY, due at their run_after if that is later.
ENQUEUE_WORKFLOW = f"""
WITH job AS (
    INSERT INTO jobs_job (
        id, backend, task_path, queue, priority, args, kwargs, status, run_at, run_after,
        attempts, max_attempts, timeout, enqueued_at, worker_ids, errors, unique_key, tags,
        meta, trace_context, workflow_id, parents_left, parents_failed, run_when,
        parent_results, has_dependants, limit_key, shared_limit_key
    )
    SELECT (node ->> 'id')::uuid, %(backend)s, node ->> 'task_path', node ->> 'queue',
           (node ->> 'priority')::smallint, call -> 0, call -> 1, node ->> 'status',
           COALESCE((node ->> 'run_after')::timestamptz, statement_timestamp()),
           (node ->> 'run_after')::timestamptz, 0, (node ->> 'max_attempts')::int,
           make_interval(secs => (node ->> 'timeout')::float8), statement_timestamp(), '{{}}',
           '[]', node ->> 'unique_key',
           ARRAY(SELECT jsonb_array_elements_text(node -> 'tags'))::varchar[],
           COALESCE((node ->> 'meta')::jsonb, '{{}}'), (node ->> 'trace_context')::jsonb,
           %(workflow_id)s::uuid, (node ->> 'parents_left')::int, 0, node ->> 'run_when',
           node ->> 'parent_results', (node ->> 'has_dependants')::boolean,
           call -> 2 ->> 0, call -> 2 ->> 1
    FROM ROWS FROM (
        jsonb_array_elements(%(jobs)s::jsonb), jsonb_array_elements(%(calls)s::jsonb)
    ) AS new(node, call)
    RETURNING queue, status, run_at, limit_key
)
SELECT statement_timestamp(),
       (SELECT count(pg_notify({_READY_CHANNEL_OF_JOB}, queue))
        FROM (SELECT queue, min(limit_key) AS limit_key FROM job
              WHERE status = 'READY'
                AND run_at <= statement_timestamp() + make_interval(secs => %(poll_interval)s)
              GROUP BY queue, limit_key IS NULL) AS due)
"""

# The edges of a workflow: [parent id, child id, position among the child's parents].
ENQUEUE_DEPENDENCIES = """
INSERT INTO jobs_dependency (parent_id, child_id, position)
SELECT (edge ->> 0)::uuid, (edge ->> 1)::uuid, (edge ->> 2)::int
FROM jsonb_array_elements(%(edges)s::jsonb) AS edge
"""

# What a job of a workflow is given first of the jobs it waited for, put
# before its args as it becomes READY (jobs.workflows): its one parent's
# return value ("one", a chain's step), every parent's in order ("all", a
# batch's success callback), or every parent's outcome ("outcomes").
#
# A statement of its own, after ADVANCE_WORKFLOWS in the same transaction:
# ADVANCE's snapshot may predate the commit of another parent's outcome (it
# waited for that transaction's lock on the child, READ COMMITTED), while this
# statement's snapshot, taken after, holds every parent's.
# A parent that was deleted (pruned, purged) is read from what its edge kept
# of it (DELETE_FINISHED).
_PARENTS = """jobs_dependency AS edge
            LEFT JOIN jobs_job AS job_parent ON job_parent.id = edge.parent_id
            CROSS JOIN LATERAL (SELECT
                edge.parent_id AS id,
                COALESCE(job_parent.status, edge.parent_outcome ->> 'status') AS status,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome -> 'return_value'
                     ELSE job_parent.return_value END AS return_value,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome ->> 'error'
                     ELSE job_parent.errors -> -1 ->> 'message' END AS error
            ) AS parent
            WHERE edge.child_id = job.id"""
_RESOLVED_ARGS = f"""jsonb_build_array(CASE job.parent_results
            WHEN 'one' THEN (SELECT parent.return_value FROM {_PARENTS}
                             ORDER BY edge.position LIMIT 1)
            WHEN 'all' THEN (SELECT COALESCE(jsonb_agg(parent.return_value
                                                       ORDER BY edge.position), '[]')
                             FROM {_PARENTS})
            ELSE (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                      'id', parent.id, 'status', parent.status,
                      'return_value', parent.return_value,
                      'error', parent.error
                  ) ORDER BY edge.position), '[]')
                  FROM {_PARENTS})
        END) || job.args"""

RESOLVE_PARENT_RESULTS = f"""
UPDATE jobs_job AS job
SET args = {_RESOLVED_ARGS}, parent_results = NULL
WHERE job.id = ANY(%(ids)s::uuid[]) AND job.parent_results IS NOT NULL
"""

# A retried job of a workflow resumes it (jobs.transitions.retry, in the
# retry's transaction, after RETRY locked the retried job): its dependants
# that still wait count it as unfinished again, and those cancelled because
# it failed (never started, attempts = 0), and theirs down the graph, wait
# again. This statement finds them and locks them in id order (the lock
# order of every path: jobs, then keys, then dependants by id); the retried
# job itself comes with them when it was cancelled before it was given its
# parents' results. Returns the locked ids, and those of them that come back
# from CANCELLED.
LOCK_RESUMED = """
WITH RECURSIVE resumed(id, restored) AS (
    SELECT child.id, child.status = 'CANCELLED'
    FROM jobs_dependency AS edge JOIN jobs_job AS child ON child.id = edge.child_id
    WHERE edge.parent_id = %(id)s
      AND (child.status = 'WAITING'
           OR (child.status = 'CANCELLED' AND child.attempts = 0 AND child.run_when IS NOT NULL))
    UNION
    SELECT child.id, child.status = 'CANCELLED'
    FROM resumed
    JOIN jobs_dependency AS edge ON edge.parent_id = resumed.id
    JOIN jobs_job AS child ON child.id = edge.child_id
    WHERE resumed.restored
      AND (child.status = 'WAITING'
           OR (child.status = 'CANCELLED' AND child.attempts = 0 AND child.run_when IS NOT NULL))
)
,
locked AS (
    SELECT id, status FROM jobs_job
    WHERE (id IN (SELECT id FROM resumed) AND status IN ('WAITING', 'CANCELLED'))
       OR (id = %(id)s AND %(recount_retried)s)
    ORDER BY id
    FOR UPDATE
)
SELECT ARRAY(SELECT id::text FROM locked),
       ARRAY(SELECT id::text FROM locked WHERE status = 'CANCELLED')
"""

# Count again the parents of locked dependants (LOCK_RESUMED): a statement
# after the locks were taken, whose snapshot holds every outcome committed
# before. A parent that finishes after it counts itself out when it commits
# (ADVANCE_WORKFLOWS waits for these locks, then finds the child WAITING),
# so each parent is counted once: here as finished, or there.
#
# The retried job and the cancelled dependants that come back count as
# unfinished; a deleted parent by what its edge kept. A dependant with no
# unfinished parent (only the retried job can have none) is READY, the
# others WAITING.
RECOUNT_DEPENDANTS = """
WITH counts AS (
    SELECT edge.child_id AS id,
           count(*) FILTER (
               WHERE edge.parent_id = ANY(%(unfinished)s::uuid[])
                  OR COALESCE(parent.status, edge.parent_outcome ->> 'status')
                     NOT IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
           )::int AS parents_left,
           count(*) FILTER (
               WHERE edge.parent_id <> ALL(%(unfinished)s::uuid[])
                 AND COALESCE(parent.status, edge.parent_outcome ->> 'status')
                     IN ('FAILED', 'CANCELLED')
           )::int AS parents_failed
    FROM jobs_dependency AS edge
    LEFT JOIN jobs_job AS parent ON parent.id = edge.parent_id
    WHERE edge.child_id = ANY(%(ids)s::uuid[])
    GROUP BY edge.child_id
)
UPDATE jobs_job AS job
SET status = CASE WHEN counts.parents_left = 0 THEN 'READY' ELSE 'WAITING' END,
    finished_at = NULL,
    run_at = CASE WHEN counts.parents_left = 0
                  THEN GREATEST(statement_timestamp(), job.run_after) ELSE job.run_at END,
    parents_left = counts.parents_left,
    parents_failed = counts.parents_failed
FROM counts
WHERE job.id = counts.id
RETURNING job.id::text, job.status, job.queue, job.limit_key
"""

# Move the dependants of jobs that just finished (`ids`), in the transaction
# that wrote those jobs' outcomes (the completer's, the rescue's, a cancel's).
#
# The invariant: a dependant is made READY, or cancelled, once. Each finished
# parent is counted against each child once, because its outcome was
# accepted once (the fence of COMPLETE, RESCUE's status check, CANCEL's row
# lock), and is counted here in the same transaction; the child's row lock
# serialises the transactions that finish its parents at the same instant,
# and the one that takes its count to zero re-reads it (READ COMMITTED
# re-reads a row it updates) and is the one that moves it. A worker killed
# before its commit leaves both undone, and the rescue re-runs the parent.
#
# A child that runs "on success" is cancelled as soon as one parent did not
# succeed; one that runs "on failure" is cancelled once all finished and none
# failed. Cancelled children come back, for the caller to run this again
# with them (jobs.workflows.advance), in the same transaction: their own
# dependants count them as parents that did not succeed.
ADVANCE_WORKFLOWS = f"""
WITH finished AS (
    SELECT id, status FROM jobs_job
    WHERE id = ANY(%(ids)s::uuid[]) AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
),
counts AS (
    SELECT edge.child_id, count(*)::int AS done,
           count(*) FILTER (WHERE finished.status <> 'SUCCESSFUL')::int AS failed,
           (array_agg(finished.id ORDER BY edge.position)
               FILTER (WHERE finished.status <> 'SUCCESSFUL'))[1] AS failed_parent
    FROM finished JOIN jobs_dependency AS edge ON edge.parent_id = finished.id
    GROUP BY edge.child_id
),
locked AS (
    -- The children's latest versions, locked in id order (two transactions
    -- that finish parents of the same children never deadlock).
    SELECT child.id, child.run_when, counts.failed_parent,
           child.parents_left - counts.done AS parents_left,
           child.parents_failed + counts.failed AS parents_failed
    FROM jobs_job AS child JOIN counts ON counts.child_id = child.id
    WHERE child.status = 'WAITING'
    ORDER BY child.id
    FOR UPDATE OF child
),
next AS (
    SELECT id, parents_left, parents_failed,
           CASE
               WHEN run_when = 'success' AND parents_failed > 0 THEN 'CANCELLED'
               WHEN parents_left > 0 THEN 'WAITING'
               WHEN run_when = 'failure' AND parents_failed = 0 THEN 'CANCELLED'
               ELSE 'READY'
           END AS status,
           CASE WHEN run_when = 'failure'
                THEN 'Not run: every job it waited for succeeded.'
                ELSE 'Not run: job ' || COALESCE(failed_parent::text, '?')
                     || ', which it waited for, did not succeed.'
           END AS reason
    FROM locked
),
moved AS (
    UPDATE jobs_job AS child
    SET parents_left = next.parents_left,
        parents_failed = next.parents_failed,
        status = next.status,
        run_at = CASE WHEN next.status = 'READY'
                      THEN GREATEST(statement_timestamp(), child.run_after) ELSE child.run_at END,
        finished_at = CASE WHEN next.status = 'CANCELLED' THEN statement_timestamp() END,
        errors = CASE WHEN next.status = 'CANCELLED' THEN child.errors || jsonb_build_array(
            jsonb_build_object(
                'exception_class_path', %(exception_class_path)s::text,
                'message', next.reason, 'traceback', next.reason, 'attempt', 0,
                'at', extract(epoch FROM statement_timestamp())
            )) ELSE child.errors END
    FROM next
    WHERE child.id = next.id
    RETURNING child.id, child.status, child.queue, child.parent_results, child.limit_key
),
woken AS (
    SELECT pg_notify({_READY_CHANNEL_OF_JOB}, queue)
    FROM (SELECT queue, min(limit_key) AS limit_key FROM moved WHERE status = 'READY'
          GROUP BY queue, limit_key IS NULL) AS due
)
SELECT ARRAY(SELECT id::text FROM moved WHERE status = 'CANCELLED'),
       ARRAY(SELECT id::text FROM moved WHERE status = 'READY' AND parent_results IS NOT NULL),
       (SELECT count(*) FROM moved WHERE status = 'READY'),
       (SELECT count(*) FROM woken)
"""


# Statements of the models, the admin, the metrics and the waiters: none is on
# the worker's path. The metrics' queries (jobs/metrics.py) each read an index
# that is bounded by the backlog or by the last hour, never the whole history.

# Wake every runscheduler when the transaction commits: a schedule was saved
# or deleted.
NOTIFY_SCHEDULERS = f"SELECT pg_notify('{SCHEDULES_CHANNEL}', '')"

# Taken by the sync of declared schedules, so that schedulers that start
# together sync one after the other, never half each.
SCHEDULE_SYNC_LOCK = 0x6A6F6273  # "jobs"
LOCK_SCHEDULE_SYNC = f"SELECT pg_advisory_xact_lock({SCHEDULE_SYNC_LOCK})"

# Record how far a running attempt got (jobs.progress), fenced as COMPLETE
# is: an attempt that is no longer the job's (cancelled, rescued and run
# again) writes nothing. A finished attempt keeps its last report.
REPORT_PROGRESS = """
UPDATE jobs_job SET progress = %(value)s, progress_message = %(message)s
WHERE id = %(id)s AND status = 'RUNNING' AND attempts = %(attempt)s
RETURNING 1
"""

# A job's status, for a waiter that was woken or has just started listening.
JOB_STATUS = "SELECT status FROM jobs_job WHERE id = %s"

# The planner's row estimate of a query, for a count that would read too much.
# `query` is SQL that Django compiled; its parameters go with it.
PLAN = "EXPLAIN (FORMAT JSON) {query}"

# The most recent workflows (their ids are time-ordered), each with its jobs
# by status: a loose scan down the workflow index, then one count per
# workflow over the same index.
RECENT_WORKFLOWS = """
WITH RECURSIVE recent(id, n) AS (
    (SELECT workflow_id, 1 FROM jobs_job WHERE workflow_id IS NOT NULL
     ORDER BY workflow_id DESC LIMIT 1)
    UNION ALL
    SELECT (SELECT workflow_id FROM jobs_job
            WHERE workflow_id IS NOT NULL AND workflow_id < recent.id
            ORDER BY workflow_id DESC LIMIT 1), recent.n + 1
    FROM recent
    WHERE recent.id IS NOT NULL AND recent.n < %(limit)s
)
SELECT recent.id::text, counts.*
FROM recent
CROSS JOIN LATERAL (
    SELECT count(*), count(*) FILTER (WHERE status = 'SUCCESSFUL'),
           count(*) FILTER (WHERE status IN ('FAILED', 'CANCELLED')),
           count(*) FILTER (WHERE status = 'RUNNING'), min(enqueued_at)
    FROM jobs_job WHERE workflow_id = recent.id
) AS counts
WHERE recent.id IS NOT NULL
ORDER BY recent.id DESC
"""

# The tasks of the most recent jobs, read from the end of the primary key index.
RECENT_TASK_PATHS = """
SELECT DISTINCT task_path
FROM (SELECT task_path FROM jobs_job ORDER BY id DESC LIMIT %s) AS recent
"""

# The tags of the most recent jobs, for the admin's tag filter.
RECENT_TAGS = """
SELECT DISTINCT unnest(tags)
FROM (SELECT tags FROM jobs_job ORDER BY id DESC LIMIT %s) AS recent
"""

# The RUNNING jobs of a worker, as a subquery of a jobs_worker row.
RUNNING_JOBS_OF_WORKER = """
SELECT count(*) FROM jobs_job
WHERE status = 'RUNNING' AND worker_ids[cardinality(worker_ids)] = jobs_worker.id
"""

LIVE_COUNTS = """
SELECT queue, 'READY',
       count(*) FILTER (WHERE run_at <= now()), count(*) FILTER (WHERE run_at > now())
FROM jobs_job WHERE status = 'READY' GROUP BY queue
UNION ALL
SELECT queue, 'RUNNING', count(*), 0
FROM jobs_job WHERE status = 'RUNNING' GROUP BY queue
"""

# How long the oldest due READY job of each queue has waited: two probes per
# queue of the due index, for its jobs under no limit and under limits
# (`IS FALSE` is how the planner matches the index's `limit_key IS NULL`).
OLDEST_READY = """
SELECT q.name, extract(epoch FROM now() - oldest.run_at)::float8
FROM unnest(%(queues)s::text[]) AS q(name)
CROSS JOIN LATERAL (
    SELECT LEAST(
        (SELECT run_at FROM jobs_job
         WHERE status = 'READY' AND queue = q.name AND (limit_key IS NULL) IS TRUE
           AND run_at <= now()
         ORDER BY run_at LIMIT 1),
        (SELECT run_at FROM jobs_job
         WHERE status = 'READY' AND queue = q.name AND (limit_key IS NULL) IS FALSE
           AND run_at <= now()
         ORDER BY run_at LIMIT 1)
    )
) AS oldest(run_at)
WHERE oldest.run_at IS NOT NULL
"""

# The keys of limits that run jobs now or have due jobs waiting, with their
# state: for each, its limits, how many run, its bucket's tokens now, and its
# due READY jobs (as their own key, or as their shared one). Reads the READY
# jobs under limits (the limited claim index) and the keys that run some,
# never every key ever made.
LIMIT_KEYS_IN_USE = f"""
WITH waiting AS (
    SELECT key, count(*)::int AS jobs
    FROM jobs_job, LATERAL (VALUES (limit_key), (shared_limit_key)) AS k(key)
    WHERE status = 'READY' AND limit_key IS NOT NULL AND run_at <= now() AND key IS NOT NULL
    GROUP BY key
),
keys AS (
    SELECT key FROM waiting
    UNION
    SELECT key FROM jobs_limit_key WHERE running > 0
)
SELECT counter.name, counter.key, counter.concurrency, counter.running, counter.rate,
       counter.period, counter.burst,
       {_TOKENS.format(row="counter").replace("statement_timestamp()", "now()")},
       COALESCE(waiting.jobs, 0)
FROM keys
JOIN jobs_limit_key AS counter USING (key)
LEFT JOIN waiting USING (key)
ORDER BY counter.name, COALESCE(waiting.jobs, 0) DESC, counter.key
"""

# One key's state, for the page of a job that waits under it.
LIMIT_KEY_STATE = f"""
SELECT key, name, concurrency, running, rate, period, burst,
       {_TOKENS.format(row="jobs_limit_key").replace("statement_timestamp()", "now()")}
FROM jobs_limit_key
WHERE key = ANY(%(keys)s::text[])
"""

# Each key's verdict, as a claim would give it now: whether it has no free
# slot (`full`) or no whole token (`out_of_tokens`), either of which holds
# its jobs back, its tokens now, and the seconds until its bucket next holds
# a whole token (0 when it holds one, NULL without a rate). Counted with the
# claim's own expressions: the free slots are _ROOM's with no bucket
# (%(limit)s 1: room for one more job), the tokens _TOKENS', the next one
# _TOKEN_DUE's; so the job page, the dashboard and /metrics say what the
# claim does, never a count of their own.
LIMIT_KEY_VERDICTS = f"""
SELECT counter.key, counter.name, counter.concurrency, counter.running, counter.rate,
       counter.period, bucket.tokens,
       {_ROOM.format(row="counter", tokens="NULL::float8")} < 1,
       COALESCE(floor(bucket.tokens) < 1, false),
       CASE WHEN counter.rate IS NOT NULL THEN extract(epoch FROM
           GREATEST({_TOKEN_DUE.format(row="counter")}, statement_timestamp())
           - statement_timestamp())::float8 END
FROM jobs_limit_key AS counter
CROSS JOIN LATERAL (SELECT {_TOKENS.format(row="counter")}) AS bucket(tokens)
WHERE counter.key = ANY(%(keys)s::text[])
"""

# Jobs finished per queue, status and minute over the last 60 minutes (the
# current minute included), read from the (status, finished_at) index.
FINISHED_BY_MINUTE = """
SELECT queue, status, date_trunc('minute', finished_at), count(*)
FROM jobs_job
WHERE status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
  AND finished_at >= date_trunc('minute', now()) - interval '59 minutes'
GROUP BY 1, 2, 3
"""

# The start of each of those 60 minutes, so that a minute without jobs shows too.
MINUTES_OF_LAST_HOUR = """
SELECT date_trunc('minute', now()) - interval '59 minutes' + m * interval '1 minute'
FROM generate_series(0, 59) AS m
"""

# Upper bounds, in seconds, of the enqueue→start latency histogram's buckets.
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)

# Seconds from when a job was due (enqueued, or its run_at if later) to when a
# worker started it, for jobs that finished in the last hour on their first
# attempt: a retried job's run_at has moved to its retry time, so its first
# wait can no longer be told.
_WAITS = """
SELECT GREATEST(0, extract(epoch FROM started_at - GREATEST(enqueued_at, run_at)))::float8 AS wait
FROM jobs_job
WHERE status IN ('SUCCESSFUL', 'FAILED')
  AND finished_at >= now() - interval '1 hour'
  AND attempts = 1
  AND started_at IS NOT NULL
"""
LATENCY = f"""
WITH waits AS ({_WAITS})
SELECT count(*), COALESCE(sum(wait), 0),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY wait),
       ARRAY[{", ".join(f"count(*) FILTER (WHERE wait <= {bound})" for bound in LATENCY_BUCKETS)}]
FROM waits
"""

# Per task, the jobs that ran and finished in the last day, and in the last
# hour: how many, how many FAILED, the last attempt's run time (p50, p95, p99), the mean
# wait from due (enqueued, or run_after) to the first start, and the latest
# failure. One range read of jobs_job_finished_idx per finished status: the
# cost follows the jobs of the last day, not the history.
TASK_STATISTICS = """
WITH recent AS (
    SELECT task_path, status, id, finished_at,
           finished_at >= now() - interval '1 hour' AS last_hour,
           -- The last attempt's run, for attempts that ran to an outcome (a job
           -- cancelled while it waited for a retry has none).
           CASE WHEN status <> 'CANCELLED'
                THEN extract(epoch FROM finished_at - last_attempted_at)::float8 END AS runtime,
           GREATEST(0, extract(epoch FROM started_at
                    - GREATEST(enqueued_at, COALESCE(run_after, enqueued_at))))::float8 AS wait
    FROM jobs_job
    WHERE status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
      AND finished_at >= now() - interval '1 day'
      -- A job cancelled before it ever started did not run.
      AND started_at IS NOT NULL
)
SELECT task_path,
       count(*) FILTER (WHERE last_hour),
       count(*) FILTER (WHERE last_hour AND status = 'FAILED'),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY runtime)
           FILTER (WHERE last_hour),
       avg(wait) FILTER (WHERE last_hour),
       count(*),
       count(*) FILTER (WHERE status = 'FAILED'),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY runtime),
       avg(wait),
       max(finished_at) FILTER (WHERE status = 'FAILED'),
       (array_agg(id ORDER BY finished_at DESC) FILTER (WHERE status = 'FAILED'))[1]
FROM recent
GROUP BY task_path
ORDER BY count(*) DESC, task_path
"""

# Every job by status. READY and RUNNING rows are counted on their partial
# indexes, finished ones on the (status, finished_at) index.
TOTALS_BY_STATUS = """
SELECT 'WAITING', count(*) FROM jobs_job WHERE status = 'WAITING'
UNION ALL
SELECT 'READY', count(*) FROM jobs_job WHERE status = 'READY'
UNION ALL
SELECT 'RUNNING', count(*) FROM jobs_job WHERE status = 'RUNNING'
UNION ALL
SELECT status, count(*) FROM jobs_job
WHERE status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED') GROUP BY status
"""

# The registered workers, each with its heartbeat's age and its RUNNING jobs.
WORKERS = """
SELECT w.id, w.hostname, w.pid, w.queues, w.concurrency, w.started_at, w.last_heartbeat,
       extract(epoch FROM now() - w.last_heartbeat)::float8,
       (SELECT count(*) FROM jobs_job AS j
        WHERE j.status = 'RUNNING' AND j.worker_ids[cardinality(j.worker_ids)] = w.id)
FROM jobs_worker AS w
ORDER BY w.started_at, w.id
"""
