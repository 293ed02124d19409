"""The queue in the Django admin: jobs, workers and the dashboard."""

from . import jobs, workers  # noqa: F401
from .schedules import ScheduleAdmin  # noqa: F401
