"""The queue in the Django admin: jobs, workers, limits changed at runtime and the dashboard."""

from . import jobs, limits, workers  # noqa: F401
from .schedules import ScheduleAdmin  # noqa: F401
