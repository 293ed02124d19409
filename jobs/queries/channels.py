"""
The NOTIFY channels through which the queue wakes its workers, the code
waiting for a result and the schedulers, and what each payload carries.
"""

# Channel of the NOTIFY sent when a job becomes due now; the payload is its queue.
READY_CHANNEL = "jobs_ready"
# The same for a job under a limit (jobs.limits), or a slot of one that frees:
# a worker with limits runs LIMITED_CLAIM only while such jobs may start. An
# empty payload is every queue: a limit's values changed.
LIMITED_READY_CHANNEL = "jobs_limited_ready"

# Channel of the NOTIFY sent when jobs finish, whatever ends them (an
# outcome, a cancel, a rescue that gives up, a workflow's cancel of what
# would not run), and when an attempt fails and its job waits for a retry;
# the payload is their ids, comma-separated, at most
# WAITER_CHUNK of them per notification (Postgres caps a payload at 8000 bytes).
FINISHED_CHANNEL = "jobs_finished"
WAITER_CHUNK = 200


def announce_finished(source: str, where: str = "true") -> str:
    """
    A CTE named `announced` that sends FINISHED_CHANNEL the ids of the rows
    of `source` (a CTE with an `id` column) that `where` keeps; the statement
    must read it (`SELECT count(*) FROM announced`) for Postgres to run it.
    No row, no notification.
    """
    return f"""announced AS (
    SELECT pg_notify('{FINISHED_CHANNEL}', string_agg(id::text, ','))
    FROM (
        SELECT id, (row_number() OVER () - 1) / {WAITER_CHUNK} AS chunk
        FROM {source} WHERE {where}
    ) AS finished
    GROUP BY chunk
)"""


# Channel of the NOTIFY that tells workers a queue was paused; the payload is
# the queue. Each gives back the jobs of that queue it holds and has not
# started. Resuming notifies READY_CHANNEL, which wakes them to claim.
PAUSE_CHANNEL = "jobs_pause"

# Channel of the NOTIFY that asks workers to stop running a cancelled job;
# the payload is "<job id>:<attempt>", the attempt that ran when it was
# cancelled (a worker reads a payload of the id alone, from an older
# version, as the latest attempt it holds).
CANCEL_CHANNEL = "jobs_cancel"

# The channel that announces a job of jobs_job due now.
READY_CHANNEL_OF_JOB = (
    f"CASE WHEN limit_key IS NULL THEN '{READY_CHANNEL}' ELSE '{LIMITED_READY_CHANNEL}' END"
)

# Channel of the NOTIFY sent when a schedule is saved or deleted: it wakes every
# runscheduler to re-read when the next tick is due.
SCHEDULES_CHANNEL = "jobs_schedules"
