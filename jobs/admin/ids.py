"""
Job ids as ranges of the primary key.

Job ids are UUIDv7: their first 48 bits are the enqueue time in milliseconds,
so "enqueued since" and "ids starting with" are both primary key ranges, which
an index answers on any size of table.
"""

import re
import uuid
from datetime import datetime


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
