"""
Job ids as ranges of the primary key, and jobs found by what a person types.

Job ids are UUIDv7: their first 48 bits are the enqueue time in milliseconds,
so "enqueued since" and "ids starting with" are both primary key ranges, which
an index answers on any size of table.
"""

import re
import string
import uuid
from datetime import datetime
from typing import Any

from django.db.models import QuerySet


def uuid7_floor(moment: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of a moment: job ids at or above it were enqueued since."""
    return uuid.UUID(int=int(moment.timestamp() * 1000) << 80)


_ID_PREFIX = re.compile(r"^[0-9a-f]{8}[0-9a-f-]*$", re.IGNORECASE)


def task_id_range(term: str) -> tuple[uuid.UUID, uuid.UUID | None] | None:
    """
    The range of ids a task id or id prefix covers, or None if the term is no id.

    At least the first eight hex digits are needed: shorter terms are read as
    task names ("add" and "cafe" are hex too).
    """
    if not _ID_PREFIX.match(term):
        return None
    digits = term.replace("-", "").lower()
    if len(digits) > 32:
        return None
    shift = 4 * (32 - len(digits))
    low = int(digits, 16) << shift
    high = (int(digits, 16) + 1) << shift
    return uuid.UUID(int=low), uuid.UUID(int=high) if high < 2**128 else None


def job_named(jobs: QuerySet, term: str) -> Any:
    """
    The job of `jobs` that a person names: by its id, its first 8 or more hex
    digits, or the admin's short id ("01a2524f…c3d4": jobs enqueued within a
    minute share their first 8 digits, and the last 4 tell them apart). A
    LookupError says why none is.
    """
    prefix, _, suffix = term.replace("...", "…").partition("…")
    ids = task_id_range(prefix)
    if ids is None or not all(digit in string.hexdigits for digit in suffix):
        raise LookupError(f"{term!r} is not a job id, nor the first 8 digits of one.")
    low, high = ids
    found = jobs.filter(id__gte=low)
    if high is not None:
        found = found.filter(id__lt=high)
    if suffix:
        found = found.filter(id__endswith=suffix.lower())
    matches = list(found.order_by("id")[:2])
    if not matches:
        raise LookupError(f"No job with id {term}.")
    if len(matches) > 1:
        raise LookupError(f"More than one job's id begins with {term}: give more of it.")
    return matches[0]
