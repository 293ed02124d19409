"""
The end of a run and every other change of a job's status, run only by
jobs.transitions: completion, give-back, rescue, cancel, retry, run now and
the deletes of purge, prune and the admin.
"""

from .channels import (
    CANCEL_CHANNEL,
    LIMITED_READY_CHANNEL,
    READY_CHANNEL,
    READY_CHANNEL_OF_JOB,
    announce_finished,
)

# Free the slots of the jobs in `{ended}` (a CTE of ended runs, with their
# limit keys and queue): each key row's `running` goes down by its jobs there.
# The rows are locked in key order before they are written, so two statements
# that free the same keys never deadlock.
#
# Their queues are woken only where a job may now start that could not
# before: a job of theirs that is READY again (`requeued`: a retry, a
# give-back, a rescue), a key that was at its concurrency and is below it now
# (its locked row is its latest version), or a bucket that got a token back. A key
# without a concurrency (fair shares only, or a rate alone) wakes no one when
# its jobs end: otherwise every batch of outcomes would wake the workers,
# their own included, for nothing that waited.
_FREE_SLOTS = """,
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
)"""


# A run given back before it began (RELEASE, `begun` false) returns the token
# its claim took as well as its slot: a give-back of a job that never started
# spends nothing of the rate. One that began (stopped at shutdown past the
# grace, or by the worker's lapsed lease) may have done its work: its token
# stays spent, only its slot is freed.
_REFUND_TOKENS = """,
        tokens = CASE WHEN counter.rate IS NULL THEN counter.tokens
                      ELSE LEAST(counter.burst, counter.tokens + freed_keys.unspent) END"""
# The runs of `{ended}` that never began, whose tokens go back.
_UNSPENT = """,
           count(*) FILTER (WHERE NOT {ended}.begun)::int AS unspent"""
_REFILLED = """
           OR (locked_keys.rate IS NOT NULL AND freed_keys.unspent > 0)"""


def _freeing(ended: str, *, requeued: str = "false", refund: bool = False) -> str:
    return _FREE_SLOTS.format(
        ended=ended,
        requeued=requeued,
        ready_channel=LIMITED_READY_CHANNEL,
        unspent=_UNSPENT.format(ended=ended) if refund else "",
        refund=_REFUND_TOKENS if refund else "",
        refilled=_REFILLED if refund else "",
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
# for a result wakes at once instead of polling; so are those whose attempt
# failed and that wait for their retry, for `jobs tail` to tell (a waiter
# reads them still READY and waits on).
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
{announced}{freeing}
SELECT done.id::text FROM done, (SELECT count(*) FROM announced) AS announcements{woken}
"""
_COMPLETE_PARTS = {"announced": announce_finished("done")}
COMPLETE = _COMPLETE.format(limit_columns="", freeing="", woken="", **_COMPLETE_PARTS)
# COMPLETE for a worker whose backend has limits: the runs that ended free
# their keys' slots, in the transaction that writes their outcomes.
COMPLETE_LIMITED = _COMPLETE.format(
    limit_columns=", job.queue, job.limit_key, job.shared_limit_key",
    freeing=_freeing("done", requeued="done.status = 'READY'"),
    woken=", (SELECT count(*) FROM woken_by_freed) AS woken",
    **_COMPLETE_PARTS,
)

# Give back claimed jobs that this worker will not run or report (shutdown,
# a skip, an executor killed before it reached them or before it reported
# them, a task that does not load here yet, a task that snoozed): READY
# again, the attempt not spent, due at once or, with run_at (epoch seconds),
# then; a snooze adds its entry to the job's snoozes. Under limits,
# their slots go back to their keys, and the tokens of those that never began
# (`begun`, one flag per job).
# Fenced like COMPLETE, so only this worker's current attempt is undone.
_RELEASE = """
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
SELECT id FROM released{woken}
"""
RELEASE = _RELEASE.format(freeing="", woken="")
RELEASE_LIMITED = _RELEASE.format(
    freeing=_freeing("released", requeued="true", refund=True),
    woken=", (SELECT count(*) FROM woken_by_freed) AS woken",
)

# The READY jobs of a queue to purge, a batch at a time, locked for
# jobs.transitions.purge, which cancels them (their dependants move as for any
# cancel) and deletes them. A row a worker claims meanwhile is RUNNING by the
# time this reaches it, or skipped, and is left to finish. In no order: SKIP
# LOCKED never waits, so it cannot deadlock, and an order would sort the
# whole backlog for each batch; the cancel and the delete lock in id order.
PURGEABLE = """
SELECT id::text FROM jobs_job
WHERE queue = %(queue)s AND status = 'READY'
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

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
    RETURNING job.id, job.attempts, job.queue, job.limit_key, job.shared_limit_key,
              job.has_dependants, target.status AS was
),
stopped AS (
    SELECT * FROM cancelled WHERE was = 'RUNNING'
),
told AS (
    SELECT pg_notify('{CANCEL_CHANNEL}', id::text || ':' || attempts) FROM stopped
),
{announce_finished("cancelled")}{_freeing("stopped")}
SELECT target.id::text, target.status, cancelled.id IS NOT NULL,
       COALESCE(cancelled.has_dependants, false),
       (SELECT count(*) FROM told) + (SELECT count(*) FROM woken_by_freed)
       + (SELECT count(*) FROM announced)
FROM target LEFT JOIN cancelled USING (id)
ORDER BY target.id
"""

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
RETURNING pg_notify({READY_CHANNEL_OF_JOB}, queue), has_dependants,
          parent_results IS NOT NULL AND run_when IS NOT NULL
"""

# Make a scheduled READY job due now.
RUN_NOW = f"""
UPDATE jobs_job SET run_at = now()
WHERE id = %(id)s AND status = 'READY'
RETURNING pg_notify({READY_CHANNEL_OF_JOB}, queue)
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
),
{announce_finished("rescued", "status = 'FAILED'")}{
    _freeing("rescued", requeued="rescued.status = 'READY'")
}
SELECT (SELECT count(*) FROM dead),
       (SELECT count(*) FROM rescued WHERE status = 'READY'),
       (SELECT count(*) FROM rescued WHERE status = 'FAILED'),
       (SELECT count(*) FROM woken) + (SELECT count(*) FROM woken_by_freed)
       + (SELECT count(*) FROM announced),
       ARRAY(SELECT id::text FROM rescued WHERE status = 'FAILED' AND has_dependants)
"""

# Finished jobs older than their retention, one small batch at a time, locked
# for jobs.transitions.prune, which deletes them (DELETE_FINISHED): SKIP
# LOCKED and a LIMIT keep every batch short, so pruning never holds locks
# that the claim or the admin would wait on. In no order, for the same reason
# as PURGEABLE: an order would sort every expired job at each heartbeat.
#
# Each read keeps to the jobs of one retention (jobs.retention): those under
# no RETAIN rule, on jobs_job_finished_idx; one rule's, on a range of
# jobs_job_retained_idx; those of rules no longer in RETAIN, the rest of
# that index (a read of every retained job, which the worker makes seldom).
# So the jobs a longer rule keeps are never read by a shorter one's prune.
# A rule is its backend's: another backend on the same database may have
# one of the same name, or none that this one knows.
_PRUNABLE_BY = {
    "default": "retention IS NULL",
    "rule": "retention = %(rule)s AND backend = %(backend)s",
    "orphaned": (
        "retention IS NOT NULL AND retention <> ALL(%(rules)s::text[]) AND backend = %(backend)s"
    ),
}
_PRUNABLE = """
SELECT id::text FROM jobs_job
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
  AND {kept_by}
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""
_COUNT_PRUNABLE = """
SELECT count(*) FROM jobs_job
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
  AND {kept_by}
"""
PRUNABLE = {kind: _PRUNABLE.format(kept_by=where) for kind, where in _PRUNABLE_BY.items()}
COUNT_PRUNABLE = {
    kind: _COUNT_PRUNABLE.format(kept_by=where) for kind, where in _PRUNABLE_BY.items()
}

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


def complete_statement(*, limited: bool) -> str:
    """COMPLETE, or COMPLETE_LIMITED when one of the jobs is under a limit."""
    return COMPLETE_LIMITED if limited else COMPLETE


def release_statement(*, limited: bool) -> str:
    """RELEASE, or RELEASE_LIMITED when one of the jobs is under a limit."""
    return RELEASE_LIMITED if limited else RELEASE
