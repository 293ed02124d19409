"""
The workers' rows and the paused queues.
"""

from .channels import LIMITED_READY_CHANNEL, PAUSE_CHANNEL, READY_CHANNEL

REGISTER_WORKER = """
INSERT INTO jobs_worker (id, hostname, pid, queues, concurrency, started_at, last_heartbeat)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s, now(), now())
"""

# Returns no row when the worker's row is gone: another worker declared it dead
# and rescued its jobs, so it must stop (its fenced writes would be refused).
HEARTBEAT = """
UPDATE jobs_worker SET last_heartbeat = now() WHERE id = %(id)s RETURNING id
"""

UNREGISTER_WORKER = """
DELETE FROM jobs_worker WHERE id = %(id)s
"""

# Pause a queue: the row is what the claim reads (see _CLAIM). Pausing a
# paused queue keeps its first pause's time and author. Returns whether this
# call paused it.
PAUSE_QUEUE = f"""
WITH paused AS (
    INSERT INTO jobs_paused_queue (queue, paused_at, paused_by)
    VALUES (%(queue)s, now(), %(by)s)
    ON CONFLICT (queue) DO NOTHING
    RETURNING queue
)
SELECT (SELECT count(*) FROM paused) > 0, pg_notify('{PAUSE_CHANNEL}', %(queue)s)
"""

PAUSED_QUEUES = "SELECT queue FROM jobs_paused_queue ORDER BY queue"

# Resume a queue; returns whether it was paused. The NOTIFY, sent only then,
# wakes the workers of the queue as an enqueue does.
RESUME_QUEUE = f"""
WITH resumed AS (
    DELETE FROM jobs_paused_queue WHERE queue = %(queue)s RETURNING queue
)
SELECT count(*) > 0,
       CASE WHEN count(*) > 0 THEN pg_notify('{READY_CHANNEL}', %(queue)s) END,
       CASE WHEN count(*) > 0 THEN pg_notify('{LIMITED_READY_CHANNEL}', %(queue)s) END
FROM resumed
"""
