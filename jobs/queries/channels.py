"""
The NOTIFY channels through which the queue wakes its workers, the code
waiting for a result and the schedulers, and what each payload carries.
"""

# Channel of the NOTIFY sent when a job becomes due now; the payload is its queue.
READY_CHANNEL = "jobs_ready"
# The same for a job under a limit (jobs.limits), or a slot of one that frees:
# a worker with limits runs LIMITED_CLAIM only while such jobs may start.
LIMITED_READY_CHANNEL = "jobs_limited_ready"

# Channel of the NOTIFY sent when jobs finish; the payload is their ids,
# comma-separated, at most WAITER_CHUNK of them per notification (Postgres
# caps a payload at 8000 bytes).
FINISHED_CHANNEL = "jobs_finished"
WAITER_CHUNK = 200

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
