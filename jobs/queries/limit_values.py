"""
The values a limit key runs with: its settings' (jobs.limits, per key), under
the runtime overrides of jobs_limit_override (jobs.limit_overrides).

Every key row holds its values, so the claim reads them and nothing else.
They are written in three places, all through SETTLED: when a key row is made
(queries.enqueue.ENSURE_LIMIT_KEYS), when a worker starts, and when an override
is set or removed (both SYNC_LIMIT_KEYS).
"""

from .channels import LIMITED_READY_CHANNEL

# A rate's columns in a key row (jobs.limits.Limit.row): position and type.
RATE_COLUMNS = ((3, "rate", "int"), (4, "period", "float8"), (5, "burst", "int"))

# `settled`: each row of the CTE `wanted` (key, row: [key, limit name,
# concurrency, rate, period, burst] from the settings) with the values it
# runs with. An override of the key beats one of every key of its limit
# (key ""), which beats the settings; a rate is overridden with its period
# and burst, a concurrency alone. A key's text is its row's key without
# "<limit name>:"; an unkeyed limit's one row matches the "" override.
SETTLED = """settled AS (
    SELECT wanted.key, wanted.row ->> 1 AS name,
        COALESCE(own.concurrency, every.concurrency, (wanted.row ->> 2)::int) AS concurrency,
        {rate}
    FROM wanted
    LEFT JOIN jobs_limit_override AS own
        ON own.name = wanted.row ->> 1
       AND own.key = substr(wanted.key, length(wanted.row ->> 1) + 2)
    LEFT JOIN jobs_limit_override AS every
        ON every.name = wanted.row ->> 1 AND every.key = ''
)""".format(
    rate=",\n        ".join(
        f"CASE WHEN own.rate IS NOT NULL THEN own.{column} "
        f"WHEN every.rate IS NOT NULL THEN every.{column} "
        f"ELSE (wanted.row ->> {index})::{kind} END AS {column}"
        for index, column, kind in (
            (3, "rate", "int"),
            (4, "period", "float8"),
            (5, "burst", "int"),
        )
    )
)

# Changes of one limit's overrides go one at a time: two at once (one key's,
# every key's) would each rewrite the key rows with values computed without
# the other. Taken by a change before it rewrites the rows, held to its
# commit. A worker's sync takes none: the heartbeat after a change settles
# what a sync that raced it wrote (RECENTLY_CHANGED).
LOCK_LIMIT = """
SELECT pg_advisory_xact_lock(hashtext('jobs_limit:' || %(name)s))
"""

# The key rows of one limit, for a worker or an override to bring up to date.
KEYS_OF_LIMIT = """
SELECT key FROM jobs_limit_key WHERE name = %(name)s ORDER BY key
"""

# Bring key rows to the values they should run with (`limit_keys` as
# ENSURE_LIMIT_KEYS takes them); a bucket keeps at most its new burst. Rows
# are locked in key order, as every statement that locks several does. When
# a row changed, the workers of every queue are told (LIMITED_READY_CHANNEL,
# an empty payload): a key given more room has its waiting jobs started at
# once, not at the next poll.
SYNC_LIMIT_KEYS = f"""
WITH wanted AS (
    SELECT row ->> 0 AS key, row FROM jsonb_array_elements(%(limit_keys)s::jsonb) AS row
),
{SETTLED},
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
    SELECT pg_notify('{LIMITED_READY_CHANNEL}', '') FROM (SELECT FROM changed LIMIT 1) AS any_row
)
SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM notified)
"""
