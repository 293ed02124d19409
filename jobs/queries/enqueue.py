"""
Enqueue: the INSERT of one job or many on the caller's connection, in its
transaction, and the limit keys they count against.
"""

from .channels import LIMITED_READY_CHANNEL, READY_CHANNEL
from .limit_values import SETTLED

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

# Each in three forms: jobs with tags, meta, a trace context or a RETAIN
# rule (jobs.retention) name those columns; the others leave them to the
# columns' defaults, which keeps four parameters (5% of an enqueue's time)
# off the common path. Jobs under limits
# (jobs.limits) name them too, and their keys: each call's [own key, shared
# key] comes third in its JSON, after args and kwargs.
_PLAIN = {"label_columns": "", "label_values": "", "ready_channel": READY_CHANNEL}
_LABELLED = {
    "label_columns": ", tags, meta, trace_context, retention",
    "label_values": (
        ", %(tags)s::varchar[], %(meta)s::jsonb, %(trace_context)s::jsonb, %(retention)s"
    ),
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
# A row is made with the values its limit's settings give its key under the
# overrides in force (queries.limit_values.SETTLED). A row made by an enqueue
# that read the overrides just before one changed, and committed after the
# change rewrote its limit's rows, has the old values: the workers' next
# heartbeat brings it up to date (jobs.limit_overrides.RECENT_CHANGES).
# A row that exists already is held FOR KEY SHARE until the enqueue commits:
# that lock does not conflict with the claim's and the completion's FOR NO
# KEY UPDATE, nor with another enqueue's, so enqueues of one key never wait
# for each other; it does conflict with the DELETE of an idle key
# (PRUNE_LIMIT_KEYS), which therefore either sees this enqueue's jobs or
# happens wholly before it. A row deleted or made by another transaction
# after this statement's snapshot is neither held nor made here: the result
# is false, and the caller runs the statement again (jobs.transitions).
ENSURE_LIMIT_KEYS = f"""
WITH wanted AS (
    SELECT DISTINCT ON (row ->> 0) row ->> 0 AS key, row
    FROM jsonb_array_elements(%(limit_keys)s::jsonb) AS row
    ORDER BY row ->> 0
),
{SETTLED},
made AS (
    INSERT INTO jobs_limit_key (
        key, name, concurrency, rate, period, burst, running, tokens, refilled_at
    )
    SELECT key, name, concurrency, rate, period, burst, 0, COALESCE(burst, 0),
           statement_timestamp()
    FROM settled
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

LIVE_JOB_BY_UNIQUE_KEY = """
SELECT id FROM jobs_job WHERE unique_key = %s AND status IN ('READY', 'RUNNING')
"""

# `replace` (jobs.uniqueness): the key's job that has not started (READY,
# no attempt spent, never snoozed) takes the new call's arguments, due time
# and limit keys (third in the call's JSON, NULL for a job under no limit);
# returns its id, or no row, and then the enqueue inserts as any other. Only
# that job's row is locked, until the caller commits: a RUNNING one is never
# touched, nor locked (ON CONFLICT DO UPDATE would lock it even when its
# WHERE is false, and hold up the worker's outcome). A claim that has the row
# already leaves it RUNNING, and this update then finds nothing.
_REPLACE_UNSTARTED = """
UPDATE jobs_job
SET args = %(calls)s::jsonb -> 0 -> 0, kwargs = %(calls)s::jsonb -> 0 -> 1,
    run_at = COALESCE(%(run_after)s, statement_timestamp()), run_after = %(run_after)s,
    limit_key = %(calls)s::jsonb -> 0 -> 2 ->> 0,
    shared_limit_key = %(calls)s::jsonb -> 0 -> 2 ->> 1
WHERE unique_key = %(unique_key)s AND status = 'READY' AND attempts = 0 AND snoozes IS NULL
RETURNING id::text, statement_timestamp(),
          CASE WHEN %(notify)s THEN pg_notify('{ready_channel}', queue) END
"""
REPLACE_UNSTARTED = _REPLACE_UNSTARTED.format(ready_channel=READY_CHANNEL)
REPLACE_UNSTARTED_LIMITED = _REPLACE_UNSTARTED.format(ready_channel=LIMITED_READY_CHANNEL)

# A unique key held over time or by states (jobs.uniqueness.existing_job):
# the lock serializes the enqueues of one key until each one's transaction
# ends (64 bits of the key's hash: two keys that share them only wait for
# each other), and the read then sees what the last one committed.
LOCK_UNIQUE_KEY = """
SELECT pg_advisory_xact_lock(hashtextextended('jobs.unique_key:' || %(key)s, 0))
"""

# The newest job with the key in one of the states, enqueued within the
# period (NULL: ever); read from the partial index jobs_job_unique_key_idx.
JOB_HOLDING_UNIQUE_KEY = """
SELECT id::text FROM jobs_job
WHERE unique_key = %(key)s
  AND status = ANY(%(states)s::text[])
  AND (%(period)s::float8 IS NULL
       OR enqueued_at > statement_timestamp() - make_interval(secs => %(period)s::float8))
ORDER BY id DESC
LIMIT 1
"""


def enqueue_statements(*, labelled: bool, limited: bool) -> tuple[str, str]:
    """
    The statements that enqueue one job and many: those under limits name
    their keys and labels, those with tags, meta or a trace context their
    labels, and the others neither (three parameters fewer to send).
    """
    if limited:
        return ENQUEUE_ONE_LIMITED, ENQUEUE_LIMITED
    if labelled:
        return ENQUEUE_ONE_LABELLED, ENQUEUE_LABELLED
    return ENQUEUE_ONE, ENQUEUE
