"""
What Postgres's jsonb cannot hold, though Python's json writes it.

A NUL character (json writes it as \\u0000) and a lone surrogate (half of a
UTF-16 pair, such as "\\ud800", which Python strings may hold and UTF-8
cannot encode) are refused by Postgres, and with them the whole statement
that carries them: one such value in a batch of outcomes would fail every
row of the batch. They are caught where the value is made, and named.
"""

import re

# \u0000 in JSON text, not preceded by an escaped backslash.
ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def unstorable(json_text: str) -> str | None:
    """
    What in this JSON text (written with ensure_ascii=False) Postgres would
    refuse in jsonb, or None when it can store it all.
    """
    if "\\u0000" in json_text and ESCAPED_NUL.search(json_text):
        return "a NUL character (\\x00)"
    try:
        json_text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate (half of a UTF-16 pair, such as \\ud800)"
    return None


def storable_text(text: str) -> str:
    """Text with what jsonb cannot hold written out as escapes: for messages and tracebacks."""
    text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
