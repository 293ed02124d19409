"""
The claim of jobs under no limit, and when the next one is due.
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
# fields, each named as the field it fills (tests/worker/test_worker_parts.py checks
# both), so a row becomes a ClaimedJob by position, with no lookup per column.
CLAIMED_COLUMNS = """job.id::text AS id, job.backend AS backend, job.task_path AS task_path,
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
{start_attempt}
"""

# Start an attempt of each claimed job (a CTE `claimed` of ids): RUNNING,
# one more attempt spent, this worker appended to its workers. The attempt
# number it writes is the fence of every later write of this attempt. The one
# spelling of a start, for CLAIM and LIMITED_CLAIM alike; RETURNING names
# ClaimedJob's fields, to which LIMITED_CLAIM adds the job's limit keys.
START_ATTEMPT = """UPDATE jobs_job AS job
SET status = 'RUNNING',
    attempts = job.attempts + 1,
    started_at = COALESCE(job.started_at, statement_timestamp()),
    last_attempted_at = statement_timestamp(),
    worker_ids = array_append(job.worker_ids, %(worker_id)s)
FROM claimed
WHERE job.id = claimed.id
RETURNING {claimed_columns}"""

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

_CLAIM_PARTS = {"start_attempt": START_ATTEMPT.format(claimed_columns=CLAIMED_COLUMNS)}
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
