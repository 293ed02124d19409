"""
What one call of a task may carry, checked before anything is written: its
arguments as the JSON the queue stores (encode_calls), and the options
stored beside them (tags, meta, the text columns, limit keys), each refused
with an error that names what is wrong.
"""

import json
from collections.abc import Callable, Sequence
from typing import Any

from django.tasks.base import Task
from django.tasks.exceptions import InvalidTask

from .jsonb import unstorable
from .limits import KEY_LENGTH, JobLimits
from .models import Job


def encode_calls(task: Task, calls: list[tuple[list[Any], dict[str, Any]]]) -> str:
    """
    The JSON text of the calls, [[args, kwargs], ...]; or a TypeError that
    names the first argument that is not JSON or holds a key that is not a
    string, or a ValueError that names the first one that jsonb cannot hold
    (see jobs.jsonb).

    Arguments are stored as jsonb, never pickled: what goes in must be JSON,
    and must come back as it went in.
    """
    try:
        text = dumps(calls)
    except (TypeError, ValueError):
        pass
    else:
        if unstorable(text) is None and _keys_are_text(calls, text):
            return text
    for args, kwargs in calls:
        for name in kwargs:
            if not isinstance(name, str):
                raise TypeError(
                    f"keyword argument {name!r} of {task.module_path} is not named by a "
                    "string: JSON object keys are strings."
                )
        named = [(f"argument {index}", value) for index, value in enumerate(args)]
        named += [(f"keyword argument {name!r}", value) for name, value in kwargs.items()]
        named += [(f"keyword argument name {name!r}", name) for name in kwargs]
        for label, value in named:
            _check_argument(f"{label} of {task.module_path}", value)
    # Each argument alone is fine, so all of them are.
    return dumps(calls)


def _check_argument(label: str, value: Any) -> None:
    """A TypeError or ValueError, in the words of encode_calls, for what value cannot be."""
    try:
        reason = unstorable(dumps(value, default=_unsupported))
    except (TypeError, ValueError) as error:
        # Django's own backends say "Unsupported type" (normalize_json), and
        # code written against them looks for those words.
        raise TypeError(
            f"{error}. Task arguments must be JSON: {label} is not JSON serializable; "
            "pass ids or plain data instead."
        ) from None
    if reason:
        raise ValueError(f"{label} holds {reason}, which Postgres cannot store in jsonb.")
    if (key := _key_not_text(value)) is not _NO_KEY:
        raise TypeError(
            f"{label} has key {key!r}, which is not a string: JSON object keys are strings, "
            f"so it would come back as {dumps(key)!r}. Give the keys as strings."
        )


def _unsupported(value: Any) -> Any:
    """json.dumps's default: refuse the value in Django's words."""
    raise TypeError(f"Unsupported type: {type(value)}")


_NO_KEY = object()


def _key_not_text(value: Any) -> Any:
    """The first key of a dict within value that is not a string, else _NO_KEY."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return key
            if (found := _key_not_text(item)) is not _NO_KEY:
                return found
    elif isinstance(value, list | tuple):
        for item in value:
            if (found := _key_not_text(item)) is not _NO_KEY:
                return found
    return _NO_KEY


def _keys_are_text(calls: list[tuple[list[Any], dict[str, Any]]], text: str) -> bool:
    """
    Whether every key of the calls' dicts is a string, as JSON gives it back
    (json.dumps writes an int, float, bool or None key as text, silently).

    Each call's kwargs writes one "{" of the calls' JSON: with no other (no
    dict among the arguments, no brace in their text), only the kwargs'
    names are looked at. The common call costs a count, not a walk.
    """
    if text.count("{") != len(calls):
        return all(_key_not_text(call) is _NO_KEY for call in calls)
    for _, kwargs in calls:
        for name in kwargs:
            if not isinstance(name, str):
                return False
    return True


# The Job columns that hold a task's names, by the option that sets each.
TEXT_COLUMNS = {"unique_key": "unique_key", "queue_name": "queue", "task_path": "task_path"}


def check_column_text(name: str, value: str) -> None:
    """An InvalidTask naming `name` when its column cannot hold `value`."""
    if not isinstance(value, str):
        raise InvalidTask(f"{name} must be a string, not {type(value).__name__}.")
    limit = Job._meta.get_field(TEXT_COLUMNS[name]).max_length
    if len(value) > limit:
        raise InvalidTask(f"{name} is {len(value)} characters long; at most {limit} fit.")
    if reason := unstorable(dumps(value)):
        raise InvalidTask(f"{name} holds {reason}, which Postgres cannot store.")


def as_tags(tags: object) -> tuple[str, ...]:
    """Tags as a tuple; a string (which would become its letters) is refused."""
    if isinstance(tags, str | bytes) or not isinstance(tags, list | tuple):
        raise InvalidTask(f"tags is a list of strings, not {type(tags).__name__}.")
    return tuple(tags)


def check_tags_and_meta(tags: Sequence[str], meta: dict[str, Any] | None) -> None:
    """An InvalidTask saying which tag, or what of meta, a job cannot hold."""
    limit = Job._meta.get_field("tags").base_field.max_length
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise InvalidTask(f"A tag is a non-empty string, not {tag!r}.")
        if len(tag) > limit:
            raise InvalidTask(f"A tag is {len(tag)} characters long; at most {limit} fit.")
        if reason := unstorable(dumps(tag)):
            raise InvalidTask(f"Tag {tag!r} holds {reason}, which Postgres cannot store.")
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise InvalidTask(f"meta is a dict of JSON values, not {type(meta).__name__}.")
    try:
        text = dumps(meta)
    except (TypeError, ValueError) as error:
        raise InvalidTask(f"meta is not JSON: {error}.") from None
    if reason := unstorable(text):
        raise InvalidTask(f"meta holds {reason}, which Postgres cannot store in jsonb.")


def limited_calls(encoded: str, keys: list[list[str | None]]) -> str:
    """The calls' JSON with each call's [own key, shared key] third, as ENQUEUE_LIMITED reads it."""
    calls = json.loads(encoded)
    for call, call_keys in zip(calls, keys, strict=True):
        call.append(call_keys)
    return dumps(calls)


def limit_key_rows(limits: JobLimits, keys: list[list[str | None]]) -> list[list[Any]]:
    """The key rows that the calls count against, for queries.enqueue.ENSURE_LIMIT_KEYS."""
    rows = {}
    for own, shared in keys:
        if len(own) > KEY_LENGTH:
            raise InvalidTask(
                f"Limit key {own[:40]!r}... is {len(own)} characters; at most {KEY_LENGTH} fit."
            )
        if reason := unstorable(dumps(own)):
            raise InvalidTask(
                f"Limit key {own[:40]!r} holds {reason}, which Postgres cannot store."
            )
        rows.setdefault(own, limits.own.row(own))
        if shared is not None:
            rows.setdefault(shared, limits.shared.row(shared))
    return list(rows.values())


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """Compact JSON, as the queue stores it (NaN refused, text as it is)."""
    return json.dumps(
        value, allow_nan=False, separators=(",", ":"), ensure_ascii=False, default=default
    )
