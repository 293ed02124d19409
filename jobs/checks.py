"""System checks of the schedules declared in settings.JOBS_SCHEDULES."""

from typing import Any

from django.core import checks

from .scheduler.declared import declaration_problems


@checks.register()
def check_declared_schedules(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A bad expression, task or time zone in code fails at start-up, not at the first tick."""
    return [
        checks.Error(
            problem,
            hint="Fix the declaration in settings.JOBS_SCHEDULES.",
            id="jobs.E101",
        )
        for problem in declaration_problems()
    ]
