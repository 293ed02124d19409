"""
The queue's tables, a module each: the jobs and the edges between them, the
schedules, the workers and the queues they pause, and the limits' keys.

The worker reads and writes them with the hand-written SQL of jobs/queries/; the
models are for migrations, the admin and everything that is not the hot path.
"""

from .job import EITHER_FINISHED_INDEX, FINISHED_STATUSES, Dependency, Job, JobStatus
from .limit_key import LimitKey
from .limit_override import LimitChange, LimitOverride
from .schedule import CatchUp, Schedule, default_time_zone, notify_schedulers
from .worker import PausedQueue, Worker

__all__ = [
    "EITHER_FINISHED_INDEX",
    "FINISHED_STATUSES",
    "CatchUp",
    "Dependency",
    "Job",
    "JobStatus",
    "LimitChange",
    "LimitKey",
    "LimitOverride",
    "PausedQueue",
    "Schedule",
    "Worker",
    "default_time_zone",
    "notify_schedulers",
]
