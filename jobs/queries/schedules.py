"""
The scheduler's statements (jobs.scheduler): claiming due schedules,
advancing them, and bounding a pass that stalls.
"""

from .channels import SCHEDULES_CHANNEL

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

# Wake every runscheduler when the transaction commits: a schedule was saved
# or deleted.
NOTIFY_SCHEDULERS = f"SELECT pg_notify('{SCHEDULES_CHANNEL}', '')"

# Taken by the sync of declared schedules, so that schedulers that start
# together sync one after the other, never half each.
SCHEDULE_SYNC_LOCK = 0x6A6F6273  # "jobs"
LOCK_SCHEDULE_SYNC = f"SELECT pg_advisory_xact_lock({SCHEDULE_SYNC_LOCK})"
