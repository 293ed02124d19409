"""Settings for worker subprocesses of a backend whose QUEUES is empty: any queue name goes."""

from project.settings import *  # noqa: F403

TASKS = {"default": {"BACKEND": "jobs.backend.PostgresBackend", "QUEUES": []}}
