"""How the job admin writes values: cut text, JSON, and moments to the millisecond."""

import json
from datetime import UTC, datetime

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString


def cut(text: str, length: int) -> str:
    """The text, ending in "…" where it was longer than `length`."""
    return text if len(text) <= length else text[: length - 1] + "…"


def pretty_json(value: object) -> SafeString:
    return format_html(
        '<pre class="jobs-json">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False)
    )


def when(moment: datetime) -> str:
    """A moment in the current time zone, to the millisecond: attempts are that close."""
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S.%f}"[:-3]


def moment(value: object) -> datetime | None:
    """The time of an error entry: epoch seconds, or a datetime already."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    return value if isinstance(value, datetime) else None
