"""
The test suite's settings: the project's, with DEBUG's defaults (plain HTTP, a
development secret key), as on a development machine.

DJANGO_DEBUG is set in the environment rather than here so that the worker,
scheduler and manage.py subprocesses the tests start, which inherit it, get the
same. pytest-django still runs each test with DEBUG off.
"""

import os

os.environ["DJANGO_DEBUG"] = "1"

from project.settings import *  # noqa: F403
