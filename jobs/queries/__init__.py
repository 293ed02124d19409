"""
The queue's SQL, by statement family: one module each, written out beside the
invariants it keeps. Every statement is one round trip; docs/statements.sql
holds each as it runs (tests/queries/test_rendered.py keeps it so).
"""

from . import (
    channels,
    claim,
    enqueue,
    finish,
    limit_values,
    limits,
    observe,
    schedules,
    workers,
    workflows,
)

__all__ = [
    "channels",
    "claim",
    "enqueue",
    "finish",
    "limit_values",
    "limits",
    "observe",
    "schedules",
    "workers",
    "workflows",
]
