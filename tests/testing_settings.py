"""
A project's test settings that run its tasks with jobs.testing.ImmediateBackend,
set before any task module is imported.
"""

from project.settings import *  # noqa: F403
from project.settings import TASKS

TASKS = {"default": {**TASKS["default"], "BACKEND": "jobs.testing.ImmediateBackend"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
