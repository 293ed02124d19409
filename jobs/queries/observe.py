"""
Reads of the admin, the metrics and the waiters: none is on the worker's
path. The metrics' queries (jobs/metrics.py) each read an index that is
bounded by the backlog or by the last hour, never the whole history.
"""

from .limits import ROOM, TOKEN_DUE, TOKENS

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
    SELECT max(workflow_name), count(*), count(*) FILTER (WHERE status = 'SUCCESSFUL'),
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

# The limits' values changed at runtime (jobs.limit_overrides), a handful of rows.
LIMIT_OVERRIDES = """
SELECT name, key, concurrency, rate, period, burst, changed_by, changed_at
FROM jobs_limit_override ORDER BY name, key
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
       {TOKENS.format(row="counter").replace("statement_timestamp()", "now()")},
       COALESCE(waiting.jobs, 0)
FROM keys
JOIN jobs_limit_key AS counter USING (key)
LEFT JOIN waiting USING (key)
ORDER BY counter.name, COALESCE(waiting.jobs, 0) DESC, counter.key
"""

# Each key's verdict, as a claim would give it now: whether it has no free
# slot (`full`) or no whole token (`out_of_tokens`), either of which holds
# its jobs back, its tokens now, and the seconds until its bucket next holds
# a whole token (0 when it holds one, NULL without a rate). Counted with the
# claim's own expressions: the free slots are ROOM's with no bucket
# (%(limit)s 1: room for one more job), the tokens TOKENS', the next one
# TOKEN_DUE's; so the job page, the dashboard and /metrics say what the
# claim does, never a count of their own.
LIMIT_KEY_VERDICTS = f"""
SELECT counter.key, counter.name, counter.concurrency, counter.running, counter.rate,
       counter.period, bucket.tokens,
       {ROOM.format(row="counter", tokens="NULL::float8")} < 1,
       COALESCE(floor(bucket.tokens) < 1, false),
       CASE WHEN counter.rate IS NOT NULL THEN extract(epoch FROM
           GREATEST({TOKEN_DUE.format(row="counter")}, statement_timestamp())
           - statement_timestamp())::float8 END
FROM jobs_limit_key AS counter
CROSS JOIN LATERAL (SELECT {TOKENS.format(row="counter")}) AS bucket(tokens)
WHERE counter.key = ANY(%(keys)s::text[])
"""

# The finished jobs that `condition` keeps (it names status and finished_at,
# unqualified, to read a recent range), from the two partial indexes that
# hold them (jobs.retention): those under no RETAIN rule from
# jobs_job_finished_idx; the others rule by rule from jobs_job_retained_idx,
# whose first column is the rule, its names found by a skip through that
# index (one probe per rule). Read whole, that index would cost every job a
# rule keeps (90 days of payments) at each refresh, on a Postgres without
# skip scans (before 18). OFFSET 0 keeps each rule's read a read of its own.
_RETENTION_RULES = """(
    WITH RECURSIVE rule(name) AS (
        SELECT min(retention) FROM jobs_job
        WHERE retention IS NOT NULL AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
        UNION ALL
        SELECT (SELECT min(retention) FROM jobs_job
                WHERE retention > rule.name AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED'))
        FROM rule WHERE rule.name IS NOT NULL
    )
    SELECT name FROM rule WHERE name IS NOT NULL
) AS rule"""


def _finished_jobs(condition: str) -> str:
    return f"""(
    SELECT * FROM jobs_job WHERE retention IS NULL AND {condition}
    UNION ALL
    SELECT job.* FROM {_RETENTION_RULES}
    CROSS JOIN LATERAL (
        SELECT * FROM jobs_job WHERE retention = rule.name AND {condition} OFFSET 0
    ) AS job
) AS job"""


# Jobs finished per queue, status and minute over the last 60 minutes (the
# current minute included), read from the (status, finished_at) indexes.
FINISHED_BY_MINUTE = f"""
SELECT queue, status, date_trunc('minute', finished_at), count(*)
FROM {
    _finished_jobs(
        "status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED') "
        "AND finished_at >= date_trunc('minute', now()) - interval '59 minutes'"
    )
}
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
# wait can no longer be told. MATERIALIZED: each wait is computed once, not
# once for each of the 15 aggregates that read it (a third of the time, 140
# instead of 450 ms, over 110,000 jobs in the hour).
_WAITS = f"""
SELECT GREATEST(0, extract(epoch FROM started_at - GREATEST(enqueued_at, run_at)))::float8 AS wait
FROM {
    _finished_jobs(
        "status IN ('SUCCESSFUL', 'FAILED') AND finished_at >= now() - interval '1 hour' "
        "AND attempts = 1 AND started_at IS NOT NULL"
    )
}
"""
LATENCY = f"""
WITH waits AS MATERIALIZED ({_WAITS})
SELECT count(*), COALESCE(sum(wait), 0),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY wait),
       ARRAY[{", ".join(f"count(*) FILTER (WHERE wait <= {bound})" for bound in LATENCY_BUCKETS)}]
FROM waits
"""

# Per task, the jobs that ran and finished in the last day, and in the last
# hour: how many, how many FAILED, the last attempt's run time (p50, p95, p99), the mean
# wait from due (enqueued, or run_after) to the first start, and the latest
# failure. One range read of the finished jobs' indexes per finished status:
# the cost follows the jobs of the last day, not the history.
TASK_STATISTICS = f"""
WITH recent AS (
    SELECT task_path, status, id, finished_at,
           finished_at >= now() - interval '1 hour' AS last_hour,
           -- The last attempt's run, for attempts that ran to an outcome (a job
           -- cancelled while it waited for a retry has none).
           CASE WHEN status <> 'CANCELLED'
                THEN extract(epoch FROM finished_at - last_attempted_at)::float8 END AS runtime,
           GREATEST(0, extract(epoch FROM started_at
                    - GREATEST(enqueued_at, COALESCE(run_after, enqueued_at))))::float8 AS wait
    -- A job cancelled before it ever started did not run.
    FROM {
    _finished_jobs(
        "status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED') "
        "AND finished_at >= now() - interval '1 day' AND started_at IS NOT NULL"
    )
}
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
# indexes, finished ones on the two indexes of finished jobs, each whole.
TOTALS_BY_STATUS = """
SELECT 'WAITING', count(*) FROM jobs_job WHERE status = 'WAITING'
UNION ALL
SELECT 'READY', count(*) FROM jobs_job WHERE status = 'READY'
UNION ALL
SELECT 'RUNNING', count(*) FROM jobs_job WHERE status = 'RUNNING'
UNION ALL
SELECT status, count(*) FROM (
    SELECT status FROM jobs_job
    WHERE retention IS NULL AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
    UNION ALL
    SELECT status FROM jobs_job
    WHERE retention IS NOT NULL AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
) AS finished
GROUP BY status
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

# `manage.py jobs tail` (jobs.job_events). The jobs enqueued since an id,
# oldest first, from the primary key: ids are UUIDv7, which grow with time.
TAIL_NEW_JOBS = """
SELECT id::text, task_path, queue, status, attempts, max_attempts, tags, enqueued_at, run_at
FROM jobs_job
WHERE id >= %(after)s::uuid
ORDER BY id
LIMIT %(limit)s
"""

# The jobs that run now, each with its attempt and worker, from their partial index.
TAIL_RUNNING_JOBS = """
SELECT id::text, task_path, queue, status, attempts, max_attempts, tags, last_attempted_at,
       worker_ids[cardinality(worker_ids)]
FROM jobs_job
WHERE status = 'RUNNING'
"""

# Jobs that finished or left RUNNING: how they ended, or when they run again.
TAIL_JOBS_BY_ID = """
SELECT id::text, task_path, queue, status, attempts, max_attempts, tags, last_attempted_at,
       finished_at, run_at, errors -> -1 ->> 'message', worker_ids[cardinality(worker_ids)]
FROM jobs_job
WHERE id = ANY(%(ids)s::uuid[])
"""
