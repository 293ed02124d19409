"""
Periodic tasks: the `jobs_schedule` table turned into jobs, one per tick.

`timing` is the arithmetic of ticks (cron expressions and intervals, time zones
and DST), `declared` syncs the schedules declared in settings into the table,
and `runner` is the loop of `manage.py runscheduler`.
"""
