"""
A Postgres job queue behind Django's Tasks framework.

Jobs are rows of `jobs_job`; `runworker` claims them with
`SELECT ... FOR UPDATE SKIP LOCKED`. See README.md for the tour.
"""
