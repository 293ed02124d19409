"""The queue in the Django admin: jobs, workers and the dashboard."""

from . import jobs  # noqa: F401
