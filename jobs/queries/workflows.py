"""
Workflows (jobs.workflows): the graph's insert, the move of dependants
when their parents finish, the parents' results, and a retry's resume.
"""

from .channels import READY_CHANNEL_OF_JOB, announce_finished

# Insert the jobs of one workflow and its edges, all in one statement. What
# the steps of one task share (every option of an enqueue of it) comes once
# per task in `tasks`. The nodes come as comma-separated columns, in the
# order of their calls ([args, kwargs], its limit keys third for a job under
# limits), zipped as ENQUEUE zips ids and calls: id, its task's position in
# `tasks` (from 1), parents left (WAITING when any), run_when and
# parent_results ("" for none), has_dependants. An edge is three numbers,
# the positions (from 1) of its parent and its child among the nodes, and
# its place among the child's parents; no foreign key holds it to the jobs (a
# finished parent may be deleted before its child runs, its outcome kept on
# the edge). READY jobs due before the workers' next poll wake their queues
# at commit, as an enqueue does (on the limited channel for jobs under
# limits, whose key rows ENSURE_LIMIT_KEYS made first); WAITING ones are not
# the claim's until ADVANCE_WORKFLOWS makes them READY, due at their
# run_after if that is later.
ENQUEUE_WORKFLOW = f"""
WITH task AS (
    SELECT position, t ->> 'task_path' AS task_path, t ->> 'queue' AS queue,
           (t ->> 'priority')::smallint AS priority,
           (t ->> 'run_after')::timestamptz AS run_after,
           (t ->> 'max_attempts')::int AS max_attempts,
           make_interval(secs => (t ->> 'timeout')::float8) AS timeout,
           t ->> 'unique_key' AS unique_key,
           ARRAY(SELECT jsonb_array_elements_text(t -> 'tags'))::varchar[] AS tags,
           COALESCE((t ->> 'meta')::jsonb, '{{}}') AS meta,
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
           task.max_attempts, task.timeout, statement_timestamp(), '{{}}', '[]',
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
       (SELECT count(pg_notify({READY_CHANNEL_OF_JOB}, queue))
        FROM (SELECT queue, min(limit_key) AS limit_key FROM job
              WHERE status = 'READY'
                AND run_at <= statement_timestamp() + make_interval(secs => %(poll_interval)s)
              GROUP BY queue, limit_key IS NULL) AS due)
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
    SELECT pg_notify({READY_CHANNEL_OF_JOB}, queue)
    FROM (SELECT queue, min(limit_key) AS limit_key FROM moved WHERE status = 'READY'
          GROUP BY queue, limit_key IS NULL) AS due
),
{announce_finished("moved", "status = 'CANCELLED'")}
SELECT ARRAY(SELECT id::text FROM moved WHERE status = 'CANCELLED'),
       ARRAY(SELECT id::text FROM moved WHERE status = 'READY' AND parent_results IS NOT NULL),
       (SELECT count(*) FROM moved WHERE status = 'READY'),
       (SELECT count(*) FROM woken) + (SELECT count(*) FROM announced)
"""

# Record how far a running attempt got (jobs.progress), fenced as COMPLETE
# is: an attempt that is no longer the job's (cancelled, rescued and run
# again) writes nothing. A finished attempt keeps its last report.
REPORT_PROGRESS = """
UPDATE jobs_job SET progress = %(value)s, progress_message = %(message)s
WHERE id = %(id)s AND status = 'RUNNING' AND attempts = %(attempt)s
RETURNING 1
"""
