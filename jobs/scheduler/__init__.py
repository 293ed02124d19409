"""
Periodic tasks: the `jobs_schedule` table turned into jobs, one per tick.

`declared` syncs the schedules declared in settings into the table, and
`runner` is the loop of `manage.py runscheduler`. When a schedule ticks, and
whether it could run, is jobs.schedules', below the models that use it too.
"""
