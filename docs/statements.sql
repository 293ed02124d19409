-- The queue's statements as they run, rendered by jobs.queries.rendering.

-- jobs.queries.claim.CLAIMED_COLUMNS
job.id::text AS id, job.backend AS backend, job.task_path AS task_path,
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
          job.has_dependants AS has_dependants;

-- jobs.queries.claim._CLAIM
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
{start_attempt};

-- jobs.queries.claim.START_ATTEMPT
UPDATE jobs_job AS job
SET status = 'RUNNING',
    attempts = job.attempts + 1,
    started_at = COALESCE(job.started_at, statement_timestamp()),
    last_attempted_at = statement_timestamp(),
    worker_ids = array_append(job.worker_ids, %(worker_id)s)
FROM claimed
WHERE job.id = claimed.id
RETURNING {claimed_columns};

-- jobs.queries.claim.READY_QUEUES
RECURSIVE ready_queues(name) AS (
    SELECT min(queue) FROM jobs_job WHERE status = 'READY'
    UNION ALL
    SELECT (SELECT min(queue) FROM jobs_job WHERE status = 'READY' AND queue > ready_queues.name)
    FROM ready_queues
    WHERE ready_queues.name IS NOT NULL
);

-- jobs.queries.claim.CLAIM
WITH claimed AS (
    SELECT candidate.id, candidate.priority, candidate.run_at
    FROM unnest(%(queues)s::text[]) AS q(name)
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
RETURNING job.id::text AS id, job.backend AS backend, job.task_path AS task_path,
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
          job.has_dependants AS has_dependants;

-- jobs.queries.claim.CLAIM_EVERY_QUEUE
WITH RECURSIVE ready_queues(name) AS (
    SELECT min(queue) FROM jobs_job WHERE status = 'READY'
    UNION ALL
    SELECT (SELECT min(queue) FROM jobs_job WHERE status = 'READY' AND queue > ready_queues.name)
    FROM ready_queues
    WHERE ready_queues.name IS NOT NULL
),
claimed AS (
    SELECT candidate.id, candidate.priority, candidate.run_at
    FROM ready_queues AS q(name)
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
RETURNING job.id::text AS id, job.backend AS backend, job.task_path AS task_path,
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
          job.has_dependants AS has_dependants;

-- jobs.queries.claim._SECONDS_UNTIL_NEXT_DUE
{with_ready_queues}SELECT extract(epoch FROM min(next.run_at) - clock_timestamp())::float8
FROM {queues} AS q(name)
CROSS JOIN LATERAL (
    SELECT run_at FROM jobs_job
    WHERE status = 'READY' AND limit_key IS NULL AND queue = q.name
      AND NOT EXISTS (SELECT FROM jobs_paused_queue AS paused WHERE paused.queue = q.name)
    ORDER BY run_at
    LIMIT 1
) AS next;

-- jobs.queries.claim.SECONDS_UNTIL_NEXT_DUE
SELECT extract(epoch FROM min(next.run_at) - clock_timestamp())::float8
FROM unnest(%(queues)s::text[]) AS q(name)
CROSS JOIN LATERAL (
    SELECT run_at FROM jobs_job
    WHERE status = 'READY' AND limit_key IS NULL AND queue = q.name
      AND NOT EXISTS (SELECT FROM jobs_paused_queue AS paused WHERE paused.queue = q.name)
    ORDER BY run_at
    LIMIT 1
) AS next;

-- jobs.queries.claim.SECONDS_UNTIL_NEXT_DUE_EVERY_QUEUE
WITH RECURSIVE ready_queues(name) AS (
    SELECT min(queue) FROM jobs_job WHERE status = 'READY'
    UNION ALL
    SELECT (SELECT min(queue) FROM jobs_job WHERE status = 'READY' AND queue > ready_queues.name)
    FROM ready_queues
    WHERE ready_queues.name IS NOT NULL
)
SELECT extract(epoch FROM min(next.run_at) - clock_timestamp())::float8
FROM ready_queues AS q(name)
CROSS JOIN LATERAL (
    SELECT run_at FROM jobs_job
    WHERE status = 'READY' AND limit_key IS NULL AND queue = q.name
      AND NOT EXISTS (SELECT FROM jobs_paused_queue AS paused WHERE paused.queue = q.name)
    ORDER BY run_at
    LIMIT 1
) AS next;

-- jobs.queries.claim.NEVER_ANALYZED
SELECT reltuples < 0 FROM pg_class WHERE oid = 'jobs_job'::regclass;

-- jobs.queries.claim.ANALYZE
ANALYZE jobs_job;

-- jobs.queries.enqueue._ENQUEUE
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
FROM job;

-- jobs.queries.enqueue._ENQUEUE_ONE
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
          CASE WHEN %(notify)s THEN pg_notify('{ready_channel}', %(queue)s) END;

-- jobs.queries.enqueue.ENQUEUE
WITH job AS (
    INSERT INTO jobs_job (
        id, backend, task_path, queue, priority, args, kwargs, status, run_at, run_after,
        attempts, max_attempts, timeout, enqueued_at, worker_ids, errors, unique_key
    )
    SELECT
        new.id, %(backend)s, %(task_path)s, %(queue)s, %(priority)s,
        new.call -> 0, new.call -> 1, 'READY', COALESCE(%(run_after)s, statement_timestamp()),
        %(run_after)s, 0, %(max_attempts)s, %(timeout)s, statement_timestamp(), '{}', '[]',
        %(unique_key)s
    FROM ROWS FROM (
        unnest(string_to_array(%(ids)s::text, ',')::uuid[]),
        jsonb_array_elements(%(calls)s::jsonb)
    ) AS new(id, call)
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND status IN ('READY', 'RUNNING') DO NOTHING
    RETURNING 1
)
SELECT count(*), statement_timestamp(),
       CASE WHEN %(notify)s AND count(*) > 0 THEN pg_notify('jobs_ready', %(queue)s) END
FROM job;

-- jobs.queries.enqueue.ENQUEUE_LABELLED
WITH job AS (
    INSERT INTO jobs_job (
        id, backend, task_path, queue, priority, args, kwargs, status, run_at, run_after,
        attempts, max_attempts, timeout, enqueued_at, worker_ids, errors, unique_key, tags, meta, trace_context, retention
    )
    SELECT
        new.id, %(backend)s, %(task_path)s, %(queue)s, %(priority)s,
        new.call -> 0, new.call -> 1, 'READY', COALESCE(%(run_after)s, statement_timestamp()),
        %(run_after)s, 0, %(max_attempts)s, %(timeout)s, statement_timestamp(), '{}', '[]',
        %(unique_key)s, %(tags)s::varchar[], %(meta)s::jsonb, %(trace_context)s::jsonb, %(retention)s
    FROM ROWS FROM (
        unnest(string_to_array(%(ids)s::text, ',')::uuid[]),
        jsonb_array_elements(%(calls)s::jsonb)
    ) AS new(id, call)
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND status IN ('READY', 'RUNNING') DO NOTHING
    RETURNING 1
)
SELECT count(*), statement_timestamp(),
       CASE WHEN %(notify)s AND count(*) > 0 THEN pg_notify('jobs_ready', %(queue)s) END
FROM job;

-- jobs.queries.enqueue.ENQUEUE_ONE
INSERT INTO jobs_job (
    id, backend, task_path, queue, priority, args, kwargs, status, run_at, run_after,
    attempts, max_attempts, timeout, enqueued_at, worker_ids, errors, unique_key
)
VALUES (
    %(ids)s::uuid, %(backend)s, %(task_path)s, %(queue)s, %(priority)s,
    %(calls)s::jsonb -> 0 -> 0, %(calls)s::jsonb -> 0 -> 1, 'READY',
    COALESCE(%(run_after)s, statement_timestamp()), %(run_after)s,
    0, %(max_attempts)s, %(timeout)s, statement_timestamp(), '{}', '[]',
    %(unique_key)s
)
ON CONFLICT (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('READY', 'RUNNING') DO NOTHING
RETURNING 1, statement_timestamp(),
          CASE WHEN %(notify)s THEN pg_notify('jobs_ready', %(queue)s) END;

-- jobs.queries.enqueue.ENQUEUE_ONE_LABELLED
INSERT INTO jobs_job (
    id, backend, task_path, queue, priority, args, kwargs, status, run_at, run_after,
    attempts, max_attempts, timeout, enqueued_at, worker_ids, errors, unique_key, tags, meta, trace_context, retention
)
VALUES (
    %(ids)s::uuid, %(backend)s, %(task_path)s, %(queue)s, %(priority)s,
    %(calls)s::jsonb -> 0 -> 0, %(calls)s::jsonb -> 0 -> 1, 'READY',
    COALESCE(%(run_after)s, statement_timestamp()), %(run_after)s,
    0, %(max_attempts)s, %(timeout)s, statement_timestamp(), '{}', '[]',
    %(unique_key)s, %(tags)s::varchar[], %(meta)s::jsonb, %(trace_context)s::jsonb, %(retention)s
)
ON CONFLICT (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('READY', 'RUNNING') DO NOTHING
RETURNING 1, statement_timestamp(),
          CASE WHEN %(notify)s THEN pg_notify('jobs_ready', %(queue)s) END;

-- jobs.queries.enqueue.ENSURE_LIMIT_KEYS
WITH wanted AS (
    SELECT DISTINCT ON (row ->> 0) row ->> 0 AS key, row
    FROM jsonb_array_elements(%(limit_keys)s::jsonb) AS row
    ORDER BY row ->> 0
),
settled AS (
    SELECT wanted.key, wanted.row ->> 1 AS name,
        COALESCE(own.concurrency, every.concurrency, (wanted.row ->> 2)::int) AS concurrency,
        CASE WHEN own.rate IS NOT NULL THEN own.rate WHEN every.rate IS NOT NULL THEN every.rate ELSE (wanted.row ->> 3)::int END AS rate,
        CASE WHEN own.rate IS NOT NULL THEN own.period WHEN every.rate IS NOT NULL THEN every.period ELSE (wanted.row ->> 4)::float8 END AS period,
        CASE WHEN own.rate IS NOT NULL THEN own.burst WHEN every.rate IS NOT NULL THEN every.burst ELSE (wanted.row ->> 5)::int END AS burst
    FROM wanted
    LEFT JOIN jobs_limit_override AS own
        ON own.name = wanted.row ->> 1
       AND own.key = substr(wanted.key, length(wanted.row ->> 1) + 2)
    LEFT JOIN jobs_limit_override AS every
        ON every.name = wanted.row ->> 1 AND every.key = ''
),
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
SELECT (SELECT count(*) FROM made) + (SELECT count(*) FROM held) = (SELECT count(*) FROM wanted);

-- jobs.queries.enqueue.ENQUEUE_LIMITED
WITH job AS (
    INSERT INTO jobs_job (
        id, backend, task_path, queue, priority, args, kwargs, status, run_at, run_after,
        attempts, max_attempts, timeout, enqueued_at, worker_ids, errors, unique_key, tags, meta, trace_context, retention, limit_key, shared_limit_key
    )
    SELECT
        new.id, %(backend)s, %(task_path)s, %(queue)s, %(priority)s,
        new.call -> 0, new.call -> 1, 'READY', COALESCE(%(run_after)s, statement_timestamp()),
        %(run_after)s, 0, %(max_attempts)s, %(timeout)s, statement_timestamp(), '{}', '[]',
        %(unique_key)s, %(tags)s::varchar[], %(meta)s::jsonb, %(trace_context)s::jsonb, %(retention)s, new.call -> 2 ->> 0, new.call -> 2 ->> 1
    FROM ROWS FROM (
        unnest(string_to_array(%(ids)s::text, ',')::uuid[]),
        jsonb_array_elements(%(calls)s::jsonb)
    ) AS new(id, call)
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND status IN ('READY', 'RUNNING') DO NOTHING
    RETURNING 1
)
SELECT count(*), statement_timestamp(),
       CASE WHEN %(notify)s AND count(*) > 0 THEN pg_notify('jobs_limited_ready', %(queue)s) END
FROM job;

-- jobs.queries.enqueue.ENQUEUE_ONE_LIMITED
INSERT INTO jobs_job (
    id, backend, task_path, queue, priority, args, kwargs, status, run_at, run_after,
    attempts, max_attempts, timeout, enqueued_at, worker_ids, errors, unique_key, tags, meta, trace_context, retention, limit_key, shared_limit_key
)
VALUES (
    %(ids)s::uuid, %(backend)s, %(task_path)s, %(queue)s, %(priority)s,
    %(calls)s::jsonb -> 0 -> 0, %(calls)s::jsonb -> 0 -> 1, 'READY',
    COALESCE(%(run_after)s, statement_timestamp()), %(run_after)s,
    0, %(max_attempts)s, %(timeout)s, statement_timestamp(), '{}', '[]',
    %(unique_key)s, %(tags)s::varchar[], %(meta)s::jsonb, %(trace_context)s::jsonb, %(retention)s, %(calls)s::jsonb -> 0 -> 2 ->> 0, %(calls)s::jsonb -> 0 -> 2 ->> 1
)
ON CONFLICT (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('READY', 'RUNNING') DO NOTHING
RETURNING 1, statement_timestamp(),
          CASE WHEN %(notify)s THEN pg_notify('jobs_limited_ready', %(queue)s) END;

-- jobs.queries.enqueue.LIVE_JOB_BY_UNIQUE_KEY
SELECT id FROM jobs_job WHERE unique_key = %s AND status IN ('READY', 'RUNNING');

-- jobs.queries.enqueue._REPLACE_UNSTARTED
UPDATE jobs_job
SET args = %(calls)s::jsonb -> 0 -> 0, kwargs = %(calls)s::jsonb -> 0 -> 1,
    run_at = COALESCE(%(run_after)s, statement_timestamp()), run_after = %(run_after)s,
    limit_key = %(calls)s::jsonb -> 0 -> 2 ->> 0,
    shared_limit_key = %(calls)s::jsonb -> 0 -> 2 ->> 1
WHERE unique_key = %(unique_key)s AND status = 'READY' AND attempts = 0 AND snoozes IS NULL
RETURNING id::text, statement_timestamp(),
          CASE WHEN %(notify)s THEN pg_notify('{ready_channel}', queue) END;

-- jobs.queries.enqueue.REPLACE_UNSTARTED
UPDATE jobs_job
SET args = %(calls)s::jsonb -> 0 -> 0, kwargs = %(calls)s::jsonb -> 0 -> 1,
    run_at = COALESCE(%(run_after)s, statement_timestamp()), run_after = %(run_after)s,
    limit_key = %(calls)s::jsonb -> 0 -> 2 ->> 0,
    shared_limit_key = %(calls)s::jsonb -> 0 -> 2 ->> 1
WHERE unique_key = %(unique_key)s AND status = 'READY' AND attempts = 0 AND snoozes IS NULL
RETURNING id::text, statement_timestamp(),
          CASE WHEN %(notify)s THEN pg_notify('jobs_ready', queue) END;

-- jobs.queries.enqueue.REPLACE_UNSTARTED_LIMITED
UPDATE jobs_job
SET args = %(calls)s::jsonb -> 0 -> 0, kwargs = %(calls)s::jsonb -> 0 -> 1,
    run_at = COALESCE(%(run_after)s, statement_timestamp()), run_after = %(run_after)s,
    limit_key = %(calls)s::jsonb -> 0 -> 2 ->> 0,
    shared_limit_key = %(calls)s::jsonb -> 0 -> 2 ->> 1
WHERE unique_key = %(unique_key)s AND status = 'READY' AND attempts = 0 AND snoozes IS NULL
RETURNING id::text, statement_timestamp(),
          CASE WHEN %(notify)s THEN pg_notify('jobs_limited_ready', queue) END;

-- jobs.queries.enqueue.LOCK_UNIQUE_KEY
SELECT pg_advisory_xact_lock(hashtextextended('jobs.unique_key:' || %(key)s, 0));

-- jobs.queries.enqueue.JOB_HOLDING_UNIQUE_KEY
SELECT id::text FROM jobs_job
WHERE unique_key = %(key)s
  AND status = ANY(%(states)s::text[])
  AND (%(period)s::float8 IS NULL
       OR enqueued_at > statement_timestamp() - make_interval(secs => %(period)s::float8))
ORDER BY id DESC
LIMIT 1;

-- jobs.queries.finish._FREE_SLOTS
,
freed_keys AS (
    SELECT key, count(*)::int AS jobs{unspent}
    FROM {ended}, LATERAL (VALUES ({ended}.limit_key), ({ended}.shared_limit_key)) AS k(key)
    WHERE key IS NOT NULL
    GROUP BY key
),
locked_keys AS (
    SELECT counter.key, counter.running, counter.concurrency, counter.rate
    FROM jobs_limit_key AS counter
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
    FROM (
        SELECT DISTINCT {ended}.queue
        FROM {ended}
        JOIN freed_keys ON freed_keys.key IN ({ended}.limit_key, {ended}.shared_limit_key)
        JOIN locked_keys USING (key)
        WHERE {requeued}
           OR (locked_keys.running >= locked_keys.concurrency
               AND locked_keys.running - freed_keys.jobs < locked_keys.concurrency){refilled}
    ) AS queues
);

-- jobs.queries.finish._REFUND_TOKENS
,
        tokens = CASE WHEN counter.rate IS NULL THEN counter.tokens
                      ELSE LEAST(counter.burst, counter.tokens + freed_keys.unspent) END;

-- jobs.queries.finish._UNSPENT
,
           count(*) FILTER (WHERE NOT {ended}.begun)::int AS unspent;

-- jobs.queries.finish._REFILLED
OR (locked_keys.rate IS NOT NULL AND freed_keys.unspent > 0);

-- jobs.queries.finish._COMPLETE
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
{announced}{freeing}
SELECT done.id::text FROM done, (SELECT count(*) FROM announced) AS announcements{woken};

-- jobs.queries.finish.COMPLETE
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
    RETURNING job.id, job.status
),
announced AS (
    SELECT pg_notify('jobs_finished', string_agg(id::text, ','))
    FROM (
        SELECT id, (row_number() OVER () - 1) / 200 AS chunk
        FROM done WHERE true
    ) AS finished
    GROUP BY chunk
)
SELECT done.id::text FROM done, (SELECT count(*) FROM announced) AS announcements;

-- jobs.queries.finish.COMPLETE_LIMITED
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
    RETURNING job.id, job.status, job.queue, job.limit_key, job.shared_limit_key
),
announced AS (
    SELECT pg_notify('jobs_finished', string_agg(id::text, ','))
    FROM (
        SELECT id, (row_number() OVER () - 1) / 200 AS chunk
        FROM done WHERE true
    ) AS finished
    GROUP BY chunk
),
freed_keys AS (
    SELECT key, count(*)::int AS jobs
    FROM done, LATERAL (VALUES (done.limit_key), (done.shared_limit_key)) AS k(key)
    WHERE key IS NOT NULL
    GROUP BY key
),
locked_keys AS (
    SELECT counter.key, counter.running, counter.concurrency, counter.rate
    FROM jobs_limit_key AS counter
    WHERE counter.key IN (SELECT key FROM freed_keys)
    ORDER BY counter.key
    FOR NO KEY UPDATE
),
freed AS (
    UPDATE jobs_limit_key AS counter
    SET running = GREATEST(counter.running - freed_keys.jobs, 0)
    FROM freed_keys JOIN locked_keys USING (key)
    WHERE counter.key = freed_keys.key
),
woken_by_freed AS (
    SELECT pg_notify('jobs_limited_ready', queue)
    FROM (
        SELECT DISTINCT done.queue
        FROM done
        JOIN freed_keys ON freed_keys.key IN (done.limit_key, done.shared_limit_key)
        JOIN locked_keys USING (key)
        WHERE done.status = 'READY'
           OR (locked_keys.running >= locked_keys.concurrency
               AND locked_keys.running - freed_keys.jobs < locked_keys.concurrency)
    ) AS queues
)
SELECT done.id::text FROM done, (SELECT count(*) FROM announced) AS announcements, (SELECT count(*) FROM woken_by_freed) AS woken;

-- jobs.queries.finish._RELEASE
WITH released AS (
UPDATE jobs_job AS job
SET status = 'READY',
    attempts = job.attempts - 1,
    worker_ids = job.worker_ids[1:cardinality(job.worker_ids) - 1],
    started_at = CASE WHEN job.attempts = 1 THEN NULL ELSE job.started_at END,
    run_at = COALESCE(to_timestamp(given_back.run_at), job.run_at),
    snoozes = CASE WHEN given_back.snooze IS NULL THEN job.snoozes
                   ELSE COALESCE(job.snoozes, '[]') || jsonb_build_array(given_back.snooze::jsonb)
              END
FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(run_at)s::float8[], %(begun)s::bool[],
            %(snoozes)s::text[])
    AS given_back(id, attempt, run_at, begun, snooze)
WHERE job.id = given_back.id
  AND job.status = 'RUNNING'
  AND job.attempts = given_back.attempt
RETURNING job.id, job.queue, job.limit_key, job.shared_limit_key, given_back.begun
){freeing}
SELECT id FROM released{woken};

-- jobs.queries.finish.RELEASE
WITH released AS (
UPDATE jobs_job AS job
SET status = 'READY',
    attempts = job.attempts - 1,
    worker_ids = job.worker_ids[1:cardinality(job.worker_ids) - 1],
    started_at = CASE WHEN job.attempts = 1 THEN NULL ELSE job.started_at END,
    run_at = COALESCE(to_timestamp(given_back.run_at), job.run_at),
    snoozes = CASE WHEN given_back.snooze IS NULL THEN job.snoozes
                   ELSE COALESCE(job.snoozes, '[]') || jsonb_build_array(given_back.snooze::jsonb)
              END
FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(run_at)s::float8[], %(begun)s::bool[],
            %(snoozes)s::text[])
    AS given_back(id, attempt, run_at, begun, snooze)
WHERE job.id = given_back.id
  AND job.status = 'RUNNING'
  AND job.attempts = given_back.attempt
RETURNING job.id, job.queue, job.limit_key, job.shared_limit_key, given_back.begun
)
SELECT id FROM released;

-- jobs.queries.finish.RELEASE_LIMITED
WITH released AS (
UPDATE jobs_job AS job
SET status = 'READY',
    attempts = job.attempts - 1,
    worker_ids = job.worker_ids[1:cardinality(job.worker_ids) - 1],
    started_at = CASE WHEN job.attempts = 1 THEN NULL ELSE job.started_at END,
    run_at = COALESCE(to_timestamp(given_back.run_at), job.run_at),
    snoozes = CASE WHEN given_back.snooze IS NULL THEN job.snoozes
                   ELSE COALESCE(job.snoozes, '[]') || jsonb_build_array(given_back.snooze::jsonb)
              END
FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(run_at)s::float8[], %(begun)s::bool[],
            %(snoozes)s::text[])
    AS given_back(id, attempt, run_at, begun, snooze)
WHERE job.id = given_back.id
  AND job.status = 'RUNNING'
  AND job.attempts = given_back.attempt
RETURNING job.id, job.queue, job.limit_key, job.shared_limit_key, given_back.begun
),
freed_keys AS (
    SELECT key, count(*)::int AS jobs,
           count(*) FILTER (WHERE NOT released.begun)::int AS unspent
    FROM released, LATERAL (VALUES (released.limit_key), (released.shared_limit_key)) AS k(key)
    WHERE key IS NOT NULL
    GROUP BY key
),
locked_keys AS (
    SELECT counter.key, counter.running, counter.concurrency, counter.rate
    FROM jobs_limit_key AS counter
    WHERE counter.key IN (SELECT key FROM freed_keys)
    ORDER BY counter.key
    FOR NO KEY UPDATE
),
freed AS (
    UPDATE jobs_limit_key AS counter
    SET running = GREATEST(counter.running - freed_keys.jobs, 0),
        tokens = CASE WHEN counter.rate IS NULL THEN counter.tokens
                      ELSE LEAST(counter.burst, counter.tokens + freed_keys.unspent) END
    FROM freed_keys JOIN locked_keys USING (key)
    WHERE counter.key = freed_keys.key
),
woken_by_freed AS (
    SELECT pg_notify('jobs_limited_ready', queue)
    FROM (
        SELECT DISTINCT released.queue
        FROM released
        JOIN freed_keys ON freed_keys.key IN (released.limit_key, released.shared_limit_key)
        JOIN locked_keys USING (key)
        WHERE true
           OR (locked_keys.running >= locked_keys.concurrency
               AND locked_keys.running - freed_keys.jobs < locked_keys.concurrency)
           OR (locked_keys.rate IS NOT NULL AND freed_keys.unspent > 0)
    ) AS queues
)
SELECT id FROM released, (SELECT count(*) FROM woken_by_freed) AS woken;

-- jobs.queries.finish.PURGEABLE
SELECT id::text FROM jobs_job
WHERE queue = %(queue)s AND status = 'READY'
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- jobs.queries.finish.CANCEL
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
    RETURNING job.id, job.attempts, job.queue, job.limit_key, job.shared_limit_key,
              job.has_dependants, target.status AS was
),
stopped AS (
    SELECT * FROM cancelled WHERE was = 'RUNNING'
),
told AS (
    SELECT pg_notify('jobs_cancel', id::text || ':' || attempts) FROM stopped
),
announced AS (
    SELECT pg_notify('jobs_finished', string_agg(id::text, ','))
    FROM (
        SELECT id, (row_number() OVER () - 1) / 200 AS chunk
        FROM cancelled WHERE true
    ) AS finished
    GROUP BY chunk
),
freed_keys AS (
    SELECT key, count(*)::int AS jobs
    FROM stopped, LATERAL (VALUES (stopped.limit_key), (stopped.shared_limit_key)) AS k(key)
    WHERE key IS NOT NULL
    GROUP BY key
),
locked_keys AS (
    SELECT counter.key, counter.running, counter.concurrency, counter.rate
    FROM jobs_limit_key AS counter
    WHERE counter.key IN (SELECT key FROM freed_keys)
    ORDER BY counter.key
    FOR NO KEY UPDATE
),
freed AS (
    UPDATE jobs_limit_key AS counter
    SET running = GREATEST(counter.running - freed_keys.jobs, 0)
    FROM freed_keys JOIN locked_keys USING (key)
    WHERE counter.key = freed_keys.key
),
woken_by_freed AS (
    SELECT pg_notify('jobs_limited_ready', queue)
    FROM (
        SELECT DISTINCT stopped.queue
        FROM stopped
        JOIN freed_keys ON freed_keys.key IN (stopped.limit_key, stopped.shared_limit_key)
        JOIN locked_keys USING (key)
        WHERE false
           OR (locked_keys.running >= locked_keys.concurrency
               AND locked_keys.running - freed_keys.jobs < locked_keys.concurrency)
    ) AS queues
)
SELECT target.id::text, target.status, cancelled.id IS NOT NULL,
       COALESCE(cancelled.has_dependants, false),
       (SELECT count(*) FROM told) + (SELECT count(*) FROM woken_by_freed)
       + (SELECT count(*) FROM announced)
FROM target LEFT JOIN cancelled USING (id)
ORDER BY target.id;

-- jobs.queries.finish.RETRY
UPDATE jobs_job
SET status = 'READY',
    run_at = now(),
    finished_at = NULL,
    max_attempts = GREATEST(max_attempts, attempts + 1)
WHERE id = %(id)s AND status IN ('FAILED', 'CANCELLED')
RETURNING pg_notify(CASE WHEN limit_key IS NULL THEN 'jobs_ready' ELSE 'jobs_limited_ready' END, queue), has_dependants,
          parent_results IS NOT NULL AND run_when IS NOT NULL;

-- jobs.queries.finish.RUN_NOW
UPDATE jobs_job SET run_at = now()
WHERE id = %(id)s AND status = 'READY'
RETURNING pg_notify(CASE WHEN limit_key IS NULL THEN 'jobs_ready' ELSE 'jobs_limited_ready' END, queue);

-- jobs.queries.finish.RESCUE
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
    SELECT pg_notify('jobs_ready', queue)
    FROM (SELECT DISTINCT queue FROM rescued WHERE status = 'READY') AS queues
),
announced AS (
    SELECT pg_notify('jobs_finished', string_agg(id::text, ','))
    FROM (
        SELECT id, (row_number() OVER () - 1) / 200 AS chunk
        FROM rescued WHERE status = 'FAILED'
    ) AS finished
    GROUP BY chunk
),
freed_keys AS (
    SELECT key, count(*)::int AS jobs
    FROM rescued, LATERAL (VALUES (rescued.limit_key), (rescued.shared_limit_key)) AS k(key)
    WHERE key IS NOT NULL
    GROUP BY key
),
locked_keys AS (
    SELECT counter.key, counter.running, counter.concurrency, counter.rate
    FROM jobs_limit_key AS counter
    WHERE counter.key IN (SELECT key FROM freed_keys)
    ORDER BY counter.key
    FOR NO KEY UPDATE
),
freed AS (
    UPDATE jobs_limit_key AS counter
    SET running = GREATEST(counter.running - freed_keys.jobs, 0)
    FROM freed_keys JOIN locked_keys USING (key)
    WHERE counter.key = freed_keys.key
),
woken_by_freed AS (
    SELECT pg_notify('jobs_limited_ready', queue)
    FROM (
        SELECT DISTINCT rescued.queue
        FROM rescued
        JOIN freed_keys ON freed_keys.key IN (rescued.limit_key, rescued.shared_limit_key)
        JOIN locked_keys USING (key)
        WHERE rescued.status = 'READY'
           OR (locked_keys.running >= locked_keys.concurrency
               AND locked_keys.running - freed_keys.jobs < locked_keys.concurrency)
    ) AS queues
)
SELECT (SELECT count(*) FROM dead),
       (SELECT count(*) FROM rescued WHERE status = 'READY'),
       (SELECT count(*) FROM rescued WHERE status = 'FAILED'),
       (SELECT count(*) FROM woken) + (SELECT count(*) FROM woken_by_freed)
       + (SELECT count(*) FROM announced),
       ARRAY(SELECT id::text FROM rescued WHERE status = 'FAILED' AND has_dependants);

-- jobs.queries.finish._PRUNABLE
SELECT id::text FROM jobs_job
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
  AND {kept_by}
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- jobs.queries.finish._COUNT_PRUNABLE
SELECT count(*) FROM jobs_job
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
  AND {kept_by};

-- jobs.queries.finish.PRUNABLE['default']
SELECT id::text FROM jobs_job
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
  AND retention IS NULL
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- jobs.queries.finish.PRUNABLE['rule']
SELECT id::text FROM jobs_job
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
  AND retention = %(rule)s AND backend = %(backend)s
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- jobs.queries.finish.PRUNABLE['orphaned']
SELECT id::text FROM jobs_job
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
  AND retention IS NOT NULL AND retention <> ALL(%(rules)s::text[]) AND backend = %(backend)s
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- jobs.queries.finish.COUNT_PRUNABLE['default']
SELECT count(*) FROM jobs_job
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
  AND retention IS NULL;

-- jobs.queries.finish.COUNT_PRUNABLE['rule']
SELECT count(*) FROM jobs_job
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
  AND retention = %(rule)s AND backend = %(backend)s;

-- jobs.queries.finish.COUNT_PRUNABLE['orphaned']
SELECT count(*) FROM jobs_job
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
  AND retention IS NOT NULL AND retention <> ALL(%(rules)s::text[]) AND backend = %(backend)s;

-- jobs.queries.finish.DELETE_FINISHED
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
SELECT count(*) FROM gone;

-- jobs.queries.limit_values.SETTLED
settled AS (
    SELECT wanted.key, wanted.row ->> 1 AS name,
        COALESCE(own.concurrency, every.concurrency, (wanted.row ->> 2)::int) AS concurrency,
        CASE WHEN own.rate IS NOT NULL THEN own.rate WHEN every.rate IS NOT NULL THEN every.rate ELSE (wanted.row ->> 3)::int END AS rate,
        CASE WHEN own.rate IS NOT NULL THEN own.period WHEN every.rate IS NOT NULL THEN every.period ELSE (wanted.row ->> 4)::float8 END AS period,
        CASE WHEN own.rate IS NOT NULL THEN own.burst WHEN every.rate IS NOT NULL THEN every.burst ELSE (wanted.row ->> 5)::int END AS burst
    FROM wanted
    LEFT JOIN jobs_limit_override AS own
        ON own.name = wanted.row ->> 1
       AND own.key = substr(wanted.key, length(wanted.row ->> 1) + 2)
    LEFT JOIN jobs_limit_override AS every
        ON every.name = wanted.row ->> 1 AND every.key = ''
);

-- jobs.queries.limit_values.LOCK_LIMIT
SELECT pg_advisory_xact_lock(hashtext('jobs_limit:' || %(name)s));

-- jobs.queries.limit_values.KEYS_OF_LIMIT
SELECT key FROM jobs_limit_key WHERE name = %(name)s ORDER BY key;

-- jobs.queries.limit_values.SYNC_LIMIT_KEYS
WITH wanted AS (
    SELECT row ->> 0 AS key, row FROM jsonb_array_elements(%(limit_keys)s::jsonb) AS row
),
settled AS (
    SELECT wanted.key, wanted.row ->> 1 AS name,
        COALESCE(own.concurrency, every.concurrency, (wanted.row ->> 2)::int) AS concurrency,
        CASE WHEN own.rate IS NOT NULL THEN own.rate WHEN every.rate IS NOT NULL THEN every.rate ELSE (wanted.row ->> 3)::int END AS rate,
        CASE WHEN own.rate IS NOT NULL THEN own.period WHEN every.rate IS NOT NULL THEN every.period ELSE (wanted.row ->> 4)::float8 END AS period,
        CASE WHEN own.rate IS NOT NULL THEN own.burst WHEN every.rate IS NOT NULL THEN every.burst ELSE (wanted.row ->> 5)::int END AS burst
    FROM wanted
    LEFT JOIN jobs_limit_override AS own
        ON own.name = wanted.row ->> 1
       AND own.key = substr(wanted.key, length(wanted.row ->> 1) + 2)
    LEFT JOIN jobs_limit_override AS every
        ON every.name = wanted.row ->> 1 AND every.key = ''
),
changed AS (
    UPDATE jobs_limit_key AS counter
    SET concurrency = settled.concurrency, rate = settled.rate, period = settled.period,
        burst = settled.burst, tokens = LEAST(counter.tokens, COALESCE(settled.burst, 0))
    FROM settled
    WHERE counter.key = settled.key
      AND (counter.concurrency, counter.rate, counter.period, counter.burst)
          IS DISTINCT FROM (settled.concurrency, settled.rate, settled.period, settled.burst)
    RETURNING counter.key
),
notified AS (
    SELECT pg_notify('jobs_limited_ready', '') FROM (SELECT FROM changed LIMIT 1) AS any_row
)
SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM notified);

-- jobs.queries.limits.LIMITED_JOBS_WAIT
SELECT count(*) FROM (
    SELECT FROM jobs_job WHERE status = 'READY' AND limit_key IS NOT NULL LIMIT 1000
) AS waiting;

-- jobs.queries.limits.ROOM
LEAST(
    %(limit)s,
    COALESCE({row}.concurrency - {row}.running, %(limit)s),
    COALESCE(floor({tokens})::int, %(limit)s)
);

-- jobs.queries.limits.TOKENS
LEAST({row}.burst, {row}.tokens
    + extract(epoch FROM statement_timestamp() - {row}.refilled_at) * {row}.rate / {row}.period);

-- jobs.queries.limits._KEY_SCAN
WITH RECURSIVE {ready_queues}open_queues(name) AS (
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
),;

-- jobs.queries.limits._NEXT_KEY
SELECT limit_key FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NOT NULL AND queue = {queue}
          AND limit_key > {after}
        ORDER BY limit_key LIMIT 1;

-- jobs.queries.limits._KEY_HAS_ROOM
CASE WHEN %(skip)s = 0 THEN true ELSE EXISTS (
        SELECT FROM jobs_limit_key AS own WHERE own.key = next.key AND {has_room}
    ) END;

-- jobs.queries.limits._LIMITED_CLAIM
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
       NULL, NULL;

-- jobs.queries.limits._KEY_CANDIDATES
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
    ) AS candidate;

-- jobs.queries.limits.LIMITED_CLAIM
WITH RECURSIVE open_queues(name) AS (
    SELECT q.name FROM unnest(%(queues)s::text[]) AS q(name)
    WHERE q.name IS NOT NULL
      AND NOT EXISTS (SELECT FROM jobs_paused_queue AS paused WHERE paused.queue = q.name)
),
keys(queue, key, has_room, visited, skipped) AS (
    SELECT q.name, next.key, CASE WHEN %(skip)s = 0 THEN true ELSE EXISTS (
        SELECT FROM jobs_limit_key AS own WHERE own.key = next.key AND LEAST(
    %(limit)s,
    COALESCE(own.concurrency - own.running, %(limit)s),
    COALESCE(floor(LEAST(own.burst, own.tokens
    + extract(epoch FROM statement_timestamp() - own.refilled_at) * own.rate / own.period))::int, %(limit)s)
) > 0
    ) END, 0, 0
    FROM open_queues AS q
    LEFT JOIN LATERAL (SELECT limit_key FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NOT NULL AND queue = q.name
          AND limit_key > COALESCE(%(after)s::jsonb ->> q.name, '')
        ORDER BY limit_key LIMIT 1) AS next(key) ON true
    UNION ALL
    SELECT keys.queue, next.key, CASE WHEN %(skip)s = 0 THEN true ELSE EXISTS (
        SELECT FROM jobs_limit_key AS own WHERE own.key = next.key AND LEAST(
    %(limit)s,
    COALESCE(own.concurrency - own.running, %(limit)s),
    COALESCE(floor(LEAST(own.burst, own.tokens
    + extract(epoch FROM statement_timestamp() - own.refilled_at) * own.rate / own.period))::int, %(limit)s)
) > 0
    ) END,
           keys.visited + keys.has_room::int, keys.skipped + (NOT keys.has_room)::int
    FROM keys
    LEFT JOIN LATERAL (SELECT limit_key FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NOT NULL AND queue = keys.queue
          AND limit_key > keys.key
        ORDER BY limit_key LIMIT 1) AS next(key) ON true
    WHERE keys.key IS NOT NULL
      AND keys.visited + keys.has_room::int < %(visit)s
      AND keys.skipped + (NOT keys.has_room)::int <= %(skip)s
),
open_keys AS (
    SELECT keys.queue, own.key, own.served_at, LEAST(
    %(limit)s,
    COALESCE(own.concurrency - own.running, %(limit)s),
    COALESCE(floor(LEAST(own.burst, own.tokens
    + extract(epoch FROM statement_timestamp() - own.refilled_at) * own.rate / own.period))::int, %(limit)s)
) AS room
    FROM keys JOIN jobs_limit_key AS own ON own.key = keys.key
    WHERE keys.has_room AND LEAST(
    %(limit)s,
    COALESCE(own.concurrency - own.running, %(limit)s),
    COALESCE(floor(LEAST(own.burst, own.tokens
    + extract(epoch FROM statement_timestamp() - own.refilled_at) * own.rate / own.period))::int, %(limit)s)
) > 0
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
shares AS (
    SELECT open_keys.queue, open_keys.key, open_keys.room, open_keys.served_at, candidate.*
    FROM open_keys
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at, shared_limit_key
        FROM jobs_job
        WHERE status = 'READY' AND queue = open_keys.queue AND limit_key = open_keys.key
          AND run_at <= statement_timestamp()
        ORDER BY priority DESC, run_at, id
        LIMIT LEAST(open_keys.room, (SELECT share FROM key_share))
        FOR UPDATE SKIP LOCKED
    ) AS candidate
),
-- A batch that the shares left short (keys with fewer due jobs than their
-- share) takes the rest of the room of the keys that gave their whole share;
-- a full one reads nothing more (the condition is checked once, first).
topped_up AS (
    SELECT open_keys.queue, open_keys.key, open_keys.room, open_keys.served_at, candidate.*
    FROM open_keys
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at, shared_limit_key
        FROM jobs_job
        WHERE status = 'READY' AND queue = open_keys.queue AND limit_key = open_keys.key
          AND run_at <= statement_timestamp()
          AND id NOT IN (SELECT shares.id FROM shares
                         WHERE shares.queue = open_keys.queue AND shares.key = open_keys.key)
        ORDER BY priority DESC, run_at, id
        LIMIT open_keys.room - (SELECT share FROM key_share)
        FOR UPDATE SKIP LOCKED
    ) AS candidate
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
           LEAST(
    %(limit)s,
    COALESCE(shared.concurrency - shared.running, %(limit)s),
    COALESCE(floor(LEAST(shared.burst, shared.tokens
    + extract(epoch FROM statement_timestamp() - shared.refilled_at) * shared.rate / shared.period))::int, %(limit)s)
) - (SELECT count(*) FROM limited WHERE limited.own_key = shared.key) AS room
    FROM jobs_limit_key AS shared
    WHERE shared.key IN (SELECT shared_limit_key FROM limited)
      AND LEAST(
    %(limit)s,
    COALESCE(shared.concurrency - shared.running, %(limit)s),
    COALESCE(floor(LEAST(shared.burst, shared.tokens
    + extract(epoch FROM statement_timestamp() - shared.refilled_at) * shared.rate / shared.period))::int, %(limit)s)
) > 0
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
RETURNING job.id::text AS id, job.backend AS backend, job.task_path AS task_path,
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
          job.has_dependants AS has_dependants, job.limit_key, job.shared_limit_key
),
counted AS (
    UPDATE jobs_limit_key AS counter
    SET running = counter.running + used.jobs,
        tokens = CASE WHEN counter.rate IS NULL THEN counter.tokens
                      ELSE LEAST(counter.burst, counter.tokens
    + extract(epoch FROM statement_timestamp() - counter.refilled_at) * counter.rate / counter.period) - used.jobs END,
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
           (SELECT COALESCE(jsonb_object_agg(queue, COALESCE(key, '')), '{}')
            FROM (SELECT DISTINCT ON (queue) queue, key FROM keys
                  ORDER BY queue, visited + skipped DESC) AS last),
           'limited', (SELECT count(*) FROM started WHERE limited),
           'keys', (SELECT count(*) FROM keys WHERE key IS NOT NULL),
           'full', (SELECT count(*) FROM keys WHERE key IS NOT NULL)
                   - (SELECT count(*) FROM open_keys)
       )::text,
       NULL, NULL;

-- jobs.queries.limits.LIMITED_CLAIM_EVERY_QUEUE
WITH RECURSIVE ready_queues(name) AS (
    SELECT min(queue) FROM jobs_job WHERE status = 'READY'
    UNION ALL
    SELECT (SELECT min(queue) FROM jobs_job WHERE status = 'READY' AND queue > ready_queues.name)
    FROM ready_queues
    WHERE ready_queues.name IS NOT NULL
),
open_queues(name) AS (
    SELECT q.name FROM ready_queues AS q(name)
    WHERE q.name IS NOT NULL
      AND NOT EXISTS (SELECT FROM jobs_paused_queue AS paused WHERE paused.queue = q.name)
),
keys(queue, key, has_room, visited, skipped) AS (
    SELECT q.name, next.key, CASE WHEN %(skip)s = 0 THEN true ELSE EXISTS (
        SELECT FROM jobs_limit_key AS own WHERE own.key = next.key AND LEAST(
    %(limit)s,
    COALESCE(own.concurrency - own.running, %(limit)s),
    COALESCE(floor(LEAST(own.burst, own.tokens
    + extract(epoch FROM statement_timestamp() - own.refilled_at) * own.rate / own.period))::int, %(limit)s)
) > 0
    ) END, 0, 0
    FROM open_queues AS q
    LEFT JOIN LATERAL (SELECT limit_key FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NOT NULL AND queue = q.name
          AND limit_key > COALESCE(%(after)s::jsonb ->> q.name, '')
        ORDER BY limit_key LIMIT 1) AS next(key) ON true
    UNION ALL
    SELECT keys.queue, next.key, CASE WHEN %(skip)s = 0 THEN true ELSE EXISTS (
        SELECT FROM jobs_limit_key AS own WHERE own.key = next.key AND LEAST(
    %(limit)s,
    COALESCE(own.concurrency - own.running, %(limit)s),
    COALESCE(floor(LEAST(own.burst, own.tokens
    + extract(epoch FROM statement_timestamp() - own.refilled_at) * own.rate / own.period))::int, %(limit)s)
) > 0
    ) END,
           keys.visited + keys.has_room::int, keys.skipped + (NOT keys.has_room)::int
    FROM keys
    LEFT JOIN LATERAL (SELECT limit_key FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NOT NULL AND queue = keys.queue
          AND limit_key > keys.key
        ORDER BY limit_key LIMIT 1) AS next(key) ON true
    WHERE keys.key IS NOT NULL
      AND keys.visited + keys.has_room::int < %(visit)s
      AND keys.skipped + (NOT keys.has_room)::int <= %(skip)s
),
open_keys AS (
    SELECT keys.queue, own.key, own.served_at, LEAST(
    %(limit)s,
    COALESCE(own.concurrency - own.running, %(limit)s),
    COALESCE(floor(LEAST(own.burst, own.tokens
    + extract(epoch FROM statement_timestamp() - own.refilled_at) * own.rate / own.period))::int, %(limit)s)
) AS room
    FROM keys JOIN jobs_limit_key AS own ON own.key = keys.key
    WHERE keys.has_room AND LEAST(
    %(limit)s,
    COALESCE(own.concurrency - own.running, %(limit)s),
    COALESCE(floor(LEAST(own.burst, own.tokens
    + extract(epoch FROM statement_timestamp() - own.refilled_at) * own.rate / own.period))::int, %(limit)s)
) > 0
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
shares AS (
    SELECT open_keys.queue, open_keys.key, open_keys.room, open_keys.served_at, candidate.*
    FROM open_keys
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at, shared_limit_key
        FROM jobs_job
        WHERE status = 'READY' AND queue = open_keys.queue AND limit_key = open_keys.key
          AND run_at <= statement_timestamp()
        ORDER BY priority DESC, run_at, id
        LIMIT LEAST(open_keys.room, (SELECT share FROM key_share))
        FOR UPDATE SKIP LOCKED
    ) AS candidate
),
-- A batch that the shares left short (keys with fewer due jobs than their
-- share) takes the rest of the room of the keys that gave their whole share;
-- a full one reads nothing more (the condition is checked once, first).
topped_up AS (
    SELECT open_keys.queue, open_keys.key, open_keys.room, open_keys.served_at, candidate.*
    FROM open_keys
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at, shared_limit_key
        FROM jobs_job
        WHERE status = 'READY' AND queue = open_keys.queue AND limit_key = open_keys.key
          AND run_at <= statement_timestamp()
          AND id NOT IN (SELECT shares.id FROM shares
                         WHERE shares.queue = open_keys.queue AND shares.key = open_keys.key)
        ORDER BY priority DESC, run_at, id
        LIMIT open_keys.room - (SELECT share FROM key_share)
        FOR UPDATE SKIP LOCKED
    ) AS candidate
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
           LEAST(
    %(limit)s,
    COALESCE(shared.concurrency - shared.running, %(limit)s),
    COALESCE(floor(LEAST(shared.burst, shared.tokens
    + extract(epoch FROM statement_timestamp() - shared.refilled_at) * shared.rate / shared.period))::int, %(limit)s)
) - (SELECT count(*) FROM limited WHERE limited.own_key = shared.key) AS room
    FROM jobs_limit_key AS shared
    WHERE shared.key IN (SELECT shared_limit_key FROM limited)
      AND LEAST(
    %(limit)s,
    COALESCE(shared.concurrency - shared.running, %(limit)s),
    COALESCE(floor(LEAST(shared.burst, shared.tokens
    + extract(epoch FROM statement_timestamp() - shared.refilled_at) * shared.rate / shared.period))::int, %(limit)s)
) > 0
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
RETURNING job.id::text AS id, job.backend AS backend, job.task_path AS task_path,
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
          job.has_dependants AS has_dependants, job.limit_key, job.shared_limit_key
),
counted AS (
    UPDATE jobs_limit_key AS counter
    SET running = counter.running + used.jobs,
        tokens = CASE WHEN counter.rate IS NULL THEN counter.tokens
                      ELSE LEAST(counter.burst, counter.tokens
    + extract(epoch FROM statement_timestamp() - counter.refilled_at) * counter.rate / counter.period) - used.jobs END,
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
           (SELECT COALESCE(jsonb_object_agg(queue, COALESCE(key, '')), '{}')
            FROM (SELECT DISTINCT ON (queue) queue, key FROM keys
                  ORDER BY queue, visited + skipped DESC) AS last),
           'limited', (SELECT count(*) FROM started WHERE limited),
           'keys', (SELECT count(*) FROM keys WHERE key IS NOT NULL),
           'full', (SELECT count(*) FROM keys WHERE key IS NOT NULL)
                   - (SELECT count(*) FROM open_keys)
       )::text,
       NULL, NULL;

-- jobs.queries.limits._LIMITED_SECONDS_UNTIL_NEXT_DUE
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
FROM waits;

-- jobs.queries.limits.TOKEN_DUE
COALESCE({row}.refilled_at + make_interval(secs =>
    (1 - {row}.tokens) * {row}.period / {row}.rate), '-infinity');

-- jobs.queries.limits.LIMITED_SECONDS_UNTIL_NEXT_DUE
WITH RECURSIVE open_queues(name) AS (
    SELECT q.name FROM unnest(%(queues)s::text[]) AS q(name)
    WHERE q.name IS NOT NULL
      AND NOT EXISTS (SELECT FROM jobs_paused_queue AS paused WHERE paused.queue = q.name)
),
keys(queue, key, has_room, visited, skipped) AS (
    SELECT q.name, next.key, CASE WHEN %(skip)s = 0 THEN true ELSE EXISTS (
        SELECT FROM jobs_limit_key AS own WHERE own.key = next.key AND COALESCE(own.concurrency > own.running, true)
    ) END, 0, 0
    FROM open_queues AS q
    LEFT JOIN LATERAL (SELECT limit_key FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NOT NULL AND queue = q.name
          AND limit_key > ''
        ORDER BY limit_key LIMIT 1) AS next(key) ON true
    UNION ALL
    SELECT keys.queue, next.key, CASE WHEN %(skip)s = 0 THEN true ELSE EXISTS (
        SELECT FROM jobs_limit_key AS own WHERE own.key = next.key AND COALESCE(own.concurrency > own.running, true)
    ) END,
           keys.visited + keys.has_room::int, keys.skipped + (NOT keys.has_room)::int
    FROM keys
    LEFT JOIN LATERAL (SELECT limit_key FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NOT NULL AND queue = keys.queue
          AND limit_key > keys.key
        ORDER BY limit_key LIMIT 1) AS next(key) ON true
    WHERE keys.key IS NOT NULL
      AND keys.visited + keys.has_room::int < %(visit)s
      AND keys.skipped + (NOT keys.has_room)::int <= %(skip)s
),
waits(limited, due_at) AS (
    SELECT true, GREATEST(first.run_at, COALESCE(own.refilled_at + make_interval(secs =>
    (1 - own.tokens) * own.period / own.rate), '-infinity'), COALESCE(shared.refilled_at + make_interval(secs =>
    (1 - shared.tokens) * shared.period / shared.rate), '-infinity'))
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
FROM waits;

-- jobs.queries.limits.LIMITED_SECONDS_UNTIL_NEXT_DUE_EVERY_QUEUE
WITH RECURSIVE ready_queues(name) AS (
    SELECT min(queue) FROM jobs_job WHERE status = 'READY'
    UNION ALL
    SELECT (SELECT min(queue) FROM jobs_job WHERE status = 'READY' AND queue > ready_queues.name)
    FROM ready_queues
    WHERE ready_queues.name IS NOT NULL
),
open_queues(name) AS (
    SELECT q.name FROM ready_queues AS q(name)
    WHERE q.name IS NOT NULL
      AND NOT EXISTS (SELECT FROM jobs_paused_queue AS paused WHERE paused.queue = q.name)
),
keys(queue, key, has_room, visited, skipped) AS (
    SELECT q.name, next.key, CASE WHEN %(skip)s = 0 THEN true ELSE EXISTS (
        SELECT FROM jobs_limit_key AS own WHERE own.key = next.key AND COALESCE(own.concurrency > own.running, true)
    ) END, 0, 0
    FROM open_queues AS q
    LEFT JOIN LATERAL (SELECT limit_key FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NOT NULL AND queue = q.name
          AND limit_key > ''
        ORDER BY limit_key LIMIT 1) AS next(key) ON true
    UNION ALL
    SELECT keys.queue, next.key, CASE WHEN %(skip)s = 0 THEN true ELSE EXISTS (
        SELECT FROM jobs_limit_key AS own WHERE own.key = next.key AND COALESCE(own.concurrency > own.running, true)
    ) END,
           keys.visited + keys.has_room::int, keys.skipped + (NOT keys.has_room)::int
    FROM keys
    LEFT JOIN LATERAL (SELECT limit_key FROM jobs_job
        WHERE status = 'READY' AND limit_key IS NOT NULL AND queue = keys.queue
          AND limit_key > keys.key
        ORDER BY limit_key LIMIT 1) AS next(key) ON true
    WHERE keys.key IS NOT NULL
      AND keys.visited + keys.has_room::int < %(visit)s
      AND keys.skipped + (NOT keys.has_room)::int <= %(skip)s
),
waits(limited, due_at) AS (
    SELECT true, GREATEST(first.run_at, COALESCE(own.refilled_at + make_interval(secs =>
    (1 - own.tokens) * own.period / own.rate), '-infinity'), COALESCE(shared.refilled_at + make_interval(secs =>
    (1 - shared.tokens) * shared.period / shared.rate), '-infinity'))
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
FROM waits;

-- jobs.queries.limits._RUNNING_BY_KEY
SELECT key, count(*)::int AS jobs
FROM jobs_job, LATERAL (VALUES (limit_key), (shared_limit_key)) AS k(key)
WHERE status = 'RUNNING' AND key IS NOT NULL
GROUP BY key;

-- jobs.queries.limits.MISCOUNTED_LIMIT_KEYS
WITH actual AS (
SELECT key, count(*)::int AS jobs
FROM jobs_job, LATERAL (VALUES (limit_key), (shared_limit_key)) AS k(key)
WHERE status = 'RUNNING' AND key IS NOT NULL
GROUP BY key
)
SELECT counter.key FROM jobs_limit_key AS counter
WHERE counter.running > 0
  AND counter.running <> COALESCE((SELECT jobs FROM actual WHERE actual.key = counter.key), 0)
UNION
SELECT counter.key FROM actual JOIN jobs_limit_key AS counter USING (key)
WHERE counter.running <> actual.jobs;

-- jobs.queries.limits.LOCK_LIMIT_KEYS
SELECT key FROM jobs_limit_key WHERE key = ANY(%(keys)s::text[]) ORDER BY key FOR NO KEY UPDATE;

-- jobs.queries.limits.RECOUNT_LIMIT_KEYS
WITH actual AS (
SELECT key, count(*)::int AS jobs
FROM jobs_job, LATERAL (VALUES (limit_key), (shared_limit_key)) AS k(key)
WHERE status = 'RUNNING' AND key IS NOT NULL
GROUP BY key
)
UPDATE jobs_limit_key AS counter
SET running = COALESCE((SELECT jobs FROM actual WHERE actual.key = counter.key), 0)
WHERE counter.key = ANY(%(keys)s::text[])
  AND counter.running <> COALESCE((SELECT jobs FROM actual WHERE actual.key = counter.key), 0)
RETURNING counter.key;

-- jobs.queries.limits.IDLE_LIMIT_KEYS
SELECT key FROM jobs_limit_key AS idle
WHERE key > %(after)s AND running = 0
  AND (rate IS NULL OR LEAST(idle.burst, idle.tokens
    + extract(epoch FROM statement_timestamp() - idle.refilled_at) * idle.rate / idle.period) >= burst)
ORDER BY key
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- jobs.queries.limits.PRUNE_LIMIT_KEYS
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
WHERE key = ANY(%(keys)s::text[]) AND key NOT IN (SELECT key FROM live WHERE key IS NOT NULL);

-- jobs.queries.limits.LIMIT_KEYS_OF_JOBS
SELECT task_path, queue, limit_key, shared_limit_key FROM jobs_job
WHERE id = ANY(%(ids)s::uuid[]) AND limit_key IS NOT NULL;

-- jobs.queries.observe.JOB_STATUS
SELECT status FROM jobs_job WHERE id = %s;

-- jobs.queries.observe.PLAN
EXPLAIN (FORMAT JSON) {query};

-- jobs.queries.observe.RECENT_WORKFLOWS
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
ORDER BY recent.id DESC;

-- jobs.queries.observe.RECENT_TASK_PATHS
SELECT DISTINCT task_path
FROM (SELECT task_path FROM jobs_job ORDER BY id DESC LIMIT %s) AS recent;

-- jobs.queries.observe.RECENT_TAGS
SELECT DISTINCT unnest(tags)
FROM (SELECT tags FROM jobs_job ORDER BY id DESC LIMIT %s) AS recent;

-- jobs.queries.observe.RUNNING_JOBS_OF_WORKER
SELECT count(*) FROM jobs_job
WHERE status = 'RUNNING' AND worker_ids[cardinality(worker_ids)] = jobs_worker.id;

-- jobs.queries.observe.LIVE_COUNTS
SELECT queue, 'READY',
       count(*) FILTER (WHERE run_at <= now()), count(*) FILTER (WHERE run_at > now())
FROM jobs_job WHERE status = 'READY' GROUP BY queue
UNION ALL
SELECT queue, 'RUNNING', count(*), 0
FROM jobs_job WHERE status = 'RUNNING' GROUP BY queue;

-- jobs.queries.observe.OLDEST_READY
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
WHERE oldest.run_at IS NOT NULL;

-- jobs.queries.observe.LIMIT_OVERRIDES
SELECT name, key, concurrency, rate, period, burst, changed_by, changed_at
FROM jobs_limit_override ORDER BY name, key;

-- jobs.queries.observe.LIMIT_KEYS_IN_USE
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
       LEAST(counter.burst, counter.tokens
    + extract(epoch FROM now() - counter.refilled_at) * counter.rate / counter.period),
       COALESCE(waiting.jobs, 0)
FROM keys
JOIN jobs_limit_key AS counter USING (key)
LEFT JOIN waiting USING (key)
ORDER BY counter.name, COALESCE(waiting.jobs, 0) DESC, counter.key;

-- jobs.queries.observe.LIMIT_KEY_VERDICTS
SELECT counter.key, counter.name, counter.concurrency, counter.running, counter.rate,
       counter.period, bucket.tokens,
       LEAST(
    %(limit)s,
    COALESCE(counter.concurrency - counter.running, %(limit)s),
    COALESCE(floor(NULL::float8)::int, %(limit)s)
) < 1,
       COALESCE(floor(bucket.tokens) < 1, false),
       CASE WHEN counter.rate IS NOT NULL THEN extract(epoch FROM
           GREATEST(COALESCE(counter.refilled_at + make_interval(secs =>
    (1 - counter.tokens) * counter.period / counter.rate), '-infinity'), statement_timestamp())
           - statement_timestamp())::float8 END
FROM jobs_limit_key AS counter
CROSS JOIN LATERAL (SELECT LEAST(counter.burst, counter.tokens
    + extract(epoch FROM statement_timestamp() - counter.refilled_at) * counter.rate / counter.period)) AS bucket(tokens)
WHERE counter.key = ANY(%(keys)s::text[]);

-- jobs.queries.observe._RETENTION_RULES
(
    WITH RECURSIVE rule(name) AS (
        SELECT min(retention) FROM jobs_job
        WHERE retention IS NOT NULL AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
        UNION ALL
        SELECT (SELECT min(retention) FROM jobs_job
                WHERE retention > rule.name AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED'))
        FROM rule WHERE rule.name IS NOT NULL
    )
    SELECT name FROM rule WHERE name IS NOT NULL
) AS rule;

-- jobs.queries.observe.FINISHED_BY_MINUTE
SELECT queue, status, date_trunc('minute', finished_at), count(*)
FROM (
    SELECT * FROM jobs_job WHERE retention IS NULL AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED') AND finished_at >= date_trunc('minute', now()) - interval '59 minutes'
    UNION ALL
    SELECT job.* FROM (
    WITH RECURSIVE rule(name) AS (
        SELECT min(retention) FROM jobs_job
        WHERE retention IS NOT NULL AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
        UNION ALL
        SELECT (SELECT min(retention) FROM jobs_job
                WHERE retention > rule.name AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED'))
        FROM rule WHERE rule.name IS NOT NULL
    )
    SELECT name FROM rule WHERE name IS NOT NULL
) AS rule
    CROSS JOIN LATERAL (
        SELECT * FROM jobs_job WHERE retention = rule.name AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED') AND finished_at >= date_trunc('minute', now()) - interval '59 minutes' OFFSET 0
    ) AS job
) AS job
GROUP BY 1, 2, 3;

-- jobs.queries.observe.MINUTES_OF_LAST_HOUR
SELECT date_trunc('minute', now()) - interval '59 minutes' + m * interval '1 minute'
FROM generate_series(0, 59) AS m;

-- jobs.queries.observe._WAITS
SELECT GREATEST(0, extract(epoch FROM started_at - GREATEST(enqueued_at, run_at)))::float8 AS wait
FROM (
    SELECT * FROM jobs_job WHERE retention IS NULL AND status IN ('SUCCESSFUL', 'FAILED') AND finished_at >= now() - interval '1 hour' AND attempts = 1 AND started_at IS NOT NULL
    UNION ALL
    SELECT job.* FROM (
    WITH RECURSIVE rule(name) AS (
        SELECT min(retention) FROM jobs_job
        WHERE retention IS NOT NULL AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
        UNION ALL
        SELECT (SELECT min(retention) FROM jobs_job
                WHERE retention > rule.name AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED'))
        FROM rule WHERE rule.name IS NOT NULL
    )
    SELECT name FROM rule WHERE name IS NOT NULL
) AS rule
    CROSS JOIN LATERAL (
        SELECT * FROM jobs_job WHERE retention = rule.name AND status IN ('SUCCESSFUL', 'FAILED') AND finished_at >= now() - interval '1 hour' AND attempts = 1 AND started_at IS NOT NULL OFFSET 0
    ) AS job
) AS job;

-- jobs.queries.observe.LATENCY
WITH waits AS MATERIALIZED (
SELECT GREATEST(0, extract(epoch FROM started_at - GREATEST(enqueued_at, run_at)))::float8 AS wait
FROM (
    SELECT * FROM jobs_job WHERE retention IS NULL AND status IN ('SUCCESSFUL', 'FAILED') AND finished_at >= now() - interval '1 hour' AND attempts = 1 AND started_at IS NOT NULL
    UNION ALL
    SELECT job.* FROM (
    WITH RECURSIVE rule(name) AS (
        SELECT min(retention) FROM jobs_job
        WHERE retention IS NOT NULL AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
        UNION ALL
        SELECT (SELECT min(retention) FROM jobs_job
                WHERE retention > rule.name AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED'))
        FROM rule WHERE rule.name IS NOT NULL
    )
    SELECT name FROM rule WHERE name IS NOT NULL
) AS rule
    CROSS JOIN LATERAL (
        SELECT * FROM jobs_job WHERE retention = rule.name AND status IN ('SUCCESSFUL', 'FAILED') AND finished_at >= now() - interval '1 hour' AND attempts = 1 AND started_at IS NOT NULL OFFSET 0
    ) AS job
) AS job
)
SELECT count(*), COALESCE(sum(wait), 0),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY wait),
       ARRAY[count(*) FILTER (WHERE wait <= 0.01), count(*) FILTER (WHERE wait <= 0.05), count(*) FILTER (WHERE wait <= 0.1), count(*) FILTER (WHERE wait <= 0.25), count(*) FILTER (WHERE wait <= 0.5), count(*) FILTER (WHERE wait <= 1.0), count(*) FILTER (WHERE wait <= 2.5), count(*) FILTER (WHERE wait <= 5.0), count(*) FILTER (WHERE wait <= 10.0), count(*) FILTER (WHERE wait <= 30.0), count(*) FILTER (WHERE wait <= 60.0), count(*) FILTER (WHERE wait <= 300.0), count(*) FILTER (WHERE wait <= 3600.0)]
FROM waits;

-- jobs.queries.observe.TASK_STATISTICS
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
    FROM (
    SELECT * FROM jobs_job WHERE retention IS NULL AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED') AND finished_at >= now() - interval '1 day' AND started_at IS NOT NULL
    UNION ALL
    SELECT job.* FROM (
    WITH RECURSIVE rule(name) AS (
        SELECT min(retention) FROM jobs_job
        WHERE retention IS NOT NULL AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
        UNION ALL
        SELECT (SELECT min(retention) FROM jobs_job
                WHERE retention > rule.name AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED'))
        FROM rule WHERE rule.name IS NOT NULL
    )
    SELECT name FROM rule WHERE name IS NOT NULL
) AS rule
    CROSS JOIN LATERAL (
        SELECT * FROM jobs_job WHERE retention = rule.name AND status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED') AND finished_at >= now() - interval '1 day' AND started_at IS NOT NULL OFFSET 0
    ) AS job
) AS job
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
ORDER BY count(*) DESC, task_path;

-- jobs.queries.observe.TOTALS_BY_STATUS
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
GROUP BY status;

-- jobs.queries.observe.WORKERS
SELECT w.id, w.hostname, w.pid, w.queues, w.concurrency, w.started_at, w.last_heartbeat,
       extract(epoch FROM now() - w.last_heartbeat)::float8,
       (SELECT count(*) FROM jobs_job AS j
        WHERE j.status = 'RUNNING' AND j.worker_ids[cardinality(j.worker_ids)] = w.id)
FROM jobs_worker AS w
ORDER BY w.started_at, w.id;

-- jobs.queries.observe.TAIL_NEW_JOBS
SELECT id::text, task_path, queue, status, attempts, max_attempts, tags, enqueued_at, run_at
FROM jobs_job
WHERE id >= %(after)s::uuid
ORDER BY id
LIMIT %(limit)s;

-- jobs.queries.observe.TAIL_RUNNING_JOBS
SELECT id::text, task_path, queue, status, attempts, max_attempts, tags, last_attempted_at,
       worker_ids[cardinality(worker_ids)]
FROM jobs_job
WHERE status = 'RUNNING';

-- jobs.queries.observe.TAIL_JOBS_BY_ID
SELECT id::text, task_path, queue, status, attempts, max_attempts, tags, last_attempted_at,
       finished_at, run_at, errors -> -1 ->> 'message', worker_ids[cardinality(worker_ids)]
FROM jobs_job
WHERE id = ANY(%(ids)s::uuid[]);

-- jobs.queries.schedules.CLAIM_SCHEDULES
SELECT *, COALESCE(%(now)s, statement_timestamp()) AS claimed_at
FROM jobs_schedule
WHERE enabled AND next_run_at <= COALESCE(%(now)s, statement_timestamp())
ORDER BY next_run_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- jobs.queries.schedules.ADVANCE_SCHEDULES
UPDATE jobs_schedule AS schedule
SET next_run_at = advance.next_run_at,
    last_run_at = COALESCE(advance.last_run_at, schedule.last_run_at)
FROM unnest(%(ids)s::bigint[], %(next_run_at)s::timestamptz[], %(last_run_at)s::timestamptz[])
    AS advance(id, next_run_at, last_run_at)
WHERE schedule.id = advance.id;

-- jobs.queries.schedules.SCHEDULER_SESSION
SELECT set_config('idle_in_transaction_session_timeout', '5s', false),
       set_config('statement_timeout', '5s', false);

-- jobs.queries.schedules.SECONDS_UNTIL_NEXT_TICK
SELECT extract(epoch FROM min(next_run_at) - clock_timestamp())::float8
FROM jobs_schedule
WHERE enabled;

-- jobs.queries.schedules.NOTIFY_SCHEDULERS
SELECT pg_notify('jobs_schedules', '');

-- jobs.queries.schedules.LOCK_SCHEDULE_SYNC
SELECT pg_advisory_xact_lock(1785684595);

-- jobs.queries.workers.REGISTER_WORKER
INSERT INTO jobs_worker (id, hostname, pid, queues, concurrency, started_at, last_heartbeat)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s, now(), now());

-- jobs.queries.workers.HEARTBEAT
UPDATE jobs_worker SET last_heartbeat = now() WHERE id = %(id)s RETURNING id;

-- jobs.queries.workers.UNREGISTER_WORKER
DELETE FROM jobs_worker WHERE id = %(id)s;

-- jobs.queries.workers.PAUSE_QUEUE
WITH paused AS (
    INSERT INTO jobs_paused_queue (queue, paused_at, paused_by)
    VALUES (%(queue)s, now(), %(by)s)
    ON CONFLICT (queue) DO NOTHING
    RETURNING queue
)
SELECT (SELECT count(*) FROM paused) > 0, pg_notify('jobs_pause', %(queue)s);

-- jobs.queries.workers.PAUSED_QUEUES
SELECT queue FROM jobs_paused_queue ORDER BY queue;

-- jobs.queries.workers.RESUME_QUEUE
WITH resumed AS (
    DELETE FROM jobs_paused_queue WHERE queue = %(queue)s RETURNING queue
)
SELECT count(*) > 0,
       CASE WHEN count(*) > 0 THEN pg_notify('jobs_ready', %(queue)s) END,
       CASE WHEN count(*) > 0 THEN pg_notify('jobs_limited_ready', %(queue)s) END
FROM resumed;

-- jobs.queries.workflows.ENQUEUE_WORKFLOW
WITH task AS (
    SELECT position, t ->> 'task_path' AS task_path, t ->> 'queue' AS queue,
           (t ->> 'priority')::smallint AS priority,
           (t ->> 'run_after')::timestamptz AS run_after,
           (t ->> 'max_attempts')::int AS max_attempts,
           make_interval(secs => (t ->> 'timeout')::float8) AS timeout,
           t ->> 'unique_key' AS unique_key,
           ARRAY(SELECT jsonb_array_elements_text(t -> 'tags'))::varchar[] AS tags,
           COALESCE((t ->> 'meta')::jsonb, '{}') AS meta,
           (t ->> 'trace_context')::jsonb AS trace_context, t ->> 'retention' AS retention
    FROM jsonb_array_elements(%(tasks)s::jsonb) WITH ORDINALITY AS tasks(t, position)
),
ids AS (SELECT string_to_array(%(ids)s::text, ',')::uuid[] AS of_node),
job AS (
    INSERT INTO jobs_job (
        id, backend, task_path, queue, priority, args, kwargs, status, run_at, run_after,
        attempts, max_attempts, timeout, enqueued_at, worker_ids, errors, unique_key, tags,
        meta, trace_context, workflow_id, parents_left, parents_failed, run_when,
        parent_results, has_dependants, limit_key, shared_limit_key, retention, workflow_name
    )
    SELECT new.id, %(backend)s, task.task_path, task.queue, task.priority,
           call -> 0, call -> 1,
           CASE WHEN new.parents_left > 0 THEN 'WAITING' ELSE 'READY' END,
           COALESCE(task.run_after, statement_timestamp()), task.run_after, 0,
           task.max_attempts, task.timeout, statement_timestamp(), '{}', '[]',
           task.unique_key, task.tags, task.meta, task.trace_context, %(workflow_id)s::uuid,
           new.parents_left, 0, NULLIF(new.run_when, ''), NULLIF(new.parent_results, ''),
           new.has_dependants, call -> 2 ->> 0, call -> 2 ->> 1, task.retention,
           %(workflow_name)s
    FROM ROWS FROM (
        unnest((SELECT of_node FROM ids)),
        unnest(string_to_array(%(tasks_of)s::text, ',')::int[]),
        unnest(string_to_array(%(parents_left)s::text, ',')::int[]),
        unnest(string_to_array(%(run_when)s::text, ',')),
        unnest(string_to_array(%(parent_results)s::text, ',')),
        unnest(string_to_array(%(has_dependants)s::text, ',')::boolean[]),
        jsonb_array_elements(%(calls)s::jsonb)
    ) AS new(id, task, parents_left, run_when, parent_results, has_dependants, call)
    JOIN task ON task.position = new.task
    RETURNING queue, status, run_at, limit_key
),
edge AS (
    INSERT INTO jobs_dependency (parent_id, child_id, position)
    SELECT ids.of_node[edge.parent], ids.of_node[edge.child], edge.position
    FROM ids, ROWS FROM (
        unnest(string_to_array(%(edge_parents)s::text, ',')::int[]),
        unnest(string_to_array(%(edge_children)s::text, ',')::int[]),
        unnest(string_to_array(%(edge_positions)s::text, ',')::int[])
    ) AS edge(parent, child, position)
)
SELECT statement_timestamp(),
       (SELECT count(pg_notify(CASE WHEN limit_key IS NULL THEN 'jobs_ready' ELSE 'jobs_limited_ready' END, queue))
        FROM (SELECT queue, min(limit_key) AS limit_key FROM job
              WHERE status = 'READY'
                AND run_at <= statement_timestamp() + make_interval(secs => %(poll_interval)s)
              GROUP BY queue, limit_key IS NULL) AS due);

-- jobs.queries.workflows._PARENTS
jobs_dependency AS edge
            LEFT JOIN jobs_job AS job_parent ON job_parent.id = edge.parent_id
            CROSS JOIN LATERAL (SELECT
                edge.parent_id AS id,
                COALESCE(job_parent.status, edge.parent_outcome ->> 'status') AS status,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome -> 'return_value'
                     ELSE job_parent.return_value END AS return_value,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome ->> 'error'
                     ELSE job_parent.errors -> -1 ->> 'message' END AS error
            ) AS parent
            WHERE edge.child_id = job.id;

-- jobs.queries.workflows._RESOLVED_ARGS
jsonb_build_array(CASE job.parent_results
            WHEN 'one' THEN (SELECT parent.return_value FROM jobs_dependency AS edge
            LEFT JOIN jobs_job AS job_parent ON job_parent.id = edge.parent_id
            CROSS JOIN LATERAL (SELECT
                edge.parent_id AS id,
                COALESCE(job_parent.status, edge.parent_outcome ->> 'status') AS status,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome -> 'return_value'
                     ELSE job_parent.return_value END AS return_value,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome ->> 'error'
                     ELSE job_parent.errors -> -1 ->> 'message' END AS error
            ) AS parent
            WHERE edge.child_id = job.id
                             ORDER BY edge.position LIMIT 1)
            WHEN 'all' THEN (SELECT COALESCE(jsonb_agg(parent.return_value
                                                       ORDER BY edge.position), '[]')
                             FROM jobs_dependency AS edge
            LEFT JOIN jobs_job AS job_parent ON job_parent.id = edge.parent_id
            CROSS JOIN LATERAL (SELECT
                edge.parent_id AS id,
                COALESCE(job_parent.status, edge.parent_outcome ->> 'status') AS status,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome -> 'return_value'
                     ELSE job_parent.return_value END AS return_value,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome ->> 'error'
                     ELSE job_parent.errors -> -1 ->> 'message' END AS error
            ) AS parent
            WHERE edge.child_id = job.id)
            ELSE (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                      'id', parent.id, 'status', parent.status,
                      'return_value', parent.return_value,
                      'error', parent.error
                  ) ORDER BY edge.position), '[]')
                  FROM jobs_dependency AS edge
            LEFT JOIN jobs_job AS job_parent ON job_parent.id = edge.parent_id
            CROSS JOIN LATERAL (SELECT
                edge.parent_id AS id,
                COALESCE(job_parent.status, edge.parent_outcome ->> 'status') AS status,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome -> 'return_value'
                     ELSE job_parent.return_value END AS return_value,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome ->> 'error'
                     ELSE job_parent.errors -> -1 ->> 'message' END AS error
            ) AS parent
            WHERE edge.child_id = job.id)
        END) || job.args;

-- jobs.queries.workflows.RESOLVE_PARENT_RESULTS
UPDATE jobs_job AS job
SET args = jsonb_build_array(CASE job.parent_results
            WHEN 'one' THEN (SELECT parent.return_value FROM jobs_dependency AS edge
            LEFT JOIN jobs_job AS job_parent ON job_parent.id = edge.parent_id
            CROSS JOIN LATERAL (SELECT
                edge.parent_id AS id,
                COALESCE(job_parent.status, edge.parent_outcome ->> 'status') AS status,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome -> 'return_value'
                     ELSE job_parent.return_value END AS return_value,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome ->> 'error'
                     ELSE job_parent.errors -> -1 ->> 'message' END AS error
            ) AS parent
            WHERE edge.child_id = job.id
                             ORDER BY edge.position LIMIT 1)
            WHEN 'all' THEN (SELECT COALESCE(jsonb_agg(parent.return_value
                                                       ORDER BY edge.position), '[]')
                             FROM jobs_dependency AS edge
            LEFT JOIN jobs_job AS job_parent ON job_parent.id = edge.parent_id
            CROSS JOIN LATERAL (SELECT
                edge.parent_id AS id,
                COALESCE(job_parent.status, edge.parent_outcome ->> 'status') AS status,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome -> 'return_value'
                     ELSE job_parent.return_value END AS return_value,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome ->> 'error'
                     ELSE job_parent.errors -> -1 ->> 'message' END AS error
            ) AS parent
            WHERE edge.child_id = job.id)
            ELSE (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                      'id', parent.id, 'status', parent.status,
                      'return_value', parent.return_value,
                      'error', parent.error
                  ) ORDER BY edge.position), '[]')
                  FROM jobs_dependency AS edge
            LEFT JOIN jobs_job AS job_parent ON job_parent.id = edge.parent_id
            CROSS JOIN LATERAL (SELECT
                edge.parent_id AS id,
                COALESCE(job_parent.status, edge.parent_outcome ->> 'status') AS status,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome -> 'return_value'
                     ELSE job_parent.return_value END AS return_value,
                CASE WHEN job_parent.id IS NULL THEN edge.parent_outcome ->> 'error'
                     ELSE job_parent.errors -> -1 ->> 'message' END AS error
            ) AS parent
            WHERE edge.child_id = job.id)
        END) || job.args, parent_results = NULL
WHERE job.id = ANY(%(ids)s::uuid[]) AND job.parent_results IS NOT NULL;

-- jobs.queries.workflows.LOCK_RESUMED
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
found AS (
    SELECT DISTINCT id, restored FROM resumed
),
-- Locked by their latest versions. A dependant that was WAITING in this
-- statement's snapshot and is CANCELLED now (an operator cancelled it
-- meanwhile) stays cancelled; one made READY meanwhile is left alone; one
-- that was CANCELLED and is WAITING now (another parent's retry restored it
-- meanwhile) is counted again, as the others are.
locked AS (
    SELECT job.id, job.status FROM jobs_job AS job LEFT JOIN found ON found.id = job.id
    WHERE (found.id IS NOT NULL AND job.status IN ('WAITING', 'CANCELLED')
           AND NOT (job.status = 'CANCELLED' AND NOT found.restored))
       OR (job.id = %(id)s AND %(recount_retried)s)
    ORDER BY job.id
    FOR UPDATE OF job
)
SELECT ARRAY(SELECT id::text FROM locked),
       ARRAY(SELECT id::text FROM locked WHERE status = 'CANCELLED');

-- jobs.queries.workflows.RECOUNT_DEPENDANTS
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
RETURNING job.id::text, job.status, job.queue, job.limit_key;

-- jobs.queries.workflows.ADVANCE_WORKFLOWS
WITH finished AS (
    -- Each job by its primary key, whatever the statistics say: in a busy
    -- run, before ANALYZE catches up, the planner would rather scan every
    -- finished job for these ids (OFFSET 0 keeps it from flattening the
    -- lookup into that scan). Each id once, as `= ANY` would count it.
    SELECT job.id, job.status
    FROM (SELECT DISTINCT unnest(%(ids)s::uuid[])) AS finished_id(id)
    CROSS JOIN LATERAL (SELECT id, status FROM jobs_job WHERE id = finished_id.id OFFSET 0) AS job
    WHERE job.status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')
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
    -- that finish parents of the same children never deadlock), whatever
    -- their status: a child CANCELLED in this statement's snapshot may be
    -- WAITING again by the time its lock is granted (a retry of another
    -- parent restored it, counting this parent as unfinished), and is moved
    -- then, by its latest version.
    SELECT child.id, child.status, child.run_when, counts.failed_parent,
           child.parents_left - counts.done AS parents_left,
           child.parents_failed + counts.failed AS parents_failed
    FROM jobs_job AS child JOIN counts ON counts.child_id = child.id
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
    WHERE status = 'WAITING'
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
    SELECT pg_notify(CASE WHEN limit_key IS NULL THEN 'jobs_ready' ELSE 'jobs_limited_ready' END, queue)
    FROM (SELECT queue, min(limit_key) AS limit_key FROM moved WHERE status = 'READY'
          GROUP BY queue, limit_key IS NULL) AS due
),
announced AS (
    SELECT pg_notify('jobs_finished', string_agg(id::text, ','))
    FROM (
        SELECT id, (row_number() OVER () - 1) / 200 AS chunk
        FROM moved WHERE status = 'CANCELLED'
    ) AS finished
    GROUP BY chunk
)
SELECT ARRAY(SELECT id::text FROM moved WHERE status = 'CANCELLED'),
       ARRAY(SELECT id::text FROM moved WHERE status = 'READY' AND parent_results IS NOT NULL),
       (SELECT count(*) FROM moved WHERE status = 'READY'),
       (SELECT count(*) FROM woken) + (SELECT count(*) FROM announced);

-- jobs.queries.workflows.REPORT_PROGRESS
UPDATE jobs_job SET progress = %(value)s, progress_message = %(message)s
WHERE id = %(id)s AND status = 'RUNNING' AND attempts = %(attempt)s
RETURNING 1;
