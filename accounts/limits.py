"""
Rate limits on signups, against a client that signs up over and over to make
the site send text messages (SMS pumping).

A limit allows `count` events per sliding window of `seconds`. The times of a
key's recent events are one row of accounts_ratelimit, in Postgres, so that a
limit holds across the web server's processes and hosts. A signup records its
event in its own transaction, with the row locked: two signups at the same
instant cannot both take the last place, and a signup that rolls back (a
duplicate e-mail address) counts for nothing.
"""

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.http import HttpRequest
from django.utils import timezone

from .models import RateLimit

# Expired rows deleted by each signup: enough to keep up, never a long delete.
PRUNE_BATCH = 100


@dataclass(frozen=True, slots=True)
class Limit:
    key: str
    count: int
    seconds: int


class RateLimited(Exception):
    """A limit has no room: try again in `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many signups; try again in {retry_after} s.")
        self.retry_after = retry_after


def client_address(request: HttpRequest) -> str:
    """
    The address a limit counts the client by: REMOTE_ADDR, or behind
    TRUSTED_PROXIES proxies the X-Forwarded-For entry the outermost of them
    added (the ones to its left are whatever the client sent). An IPv6 client
    is counted by its /64, since it is given a whole one to pick from.
    """
    address = request.META.get("REMOTE_ADDR", "")
    proxies = settings.TRUSTED_PROXIES
    forwarded = [
        entry.strip()
        for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if entry.strip()
    ]
    if proxies and forwarded:
        address = forwarded[max(len(forwarded) - proxies, 0)]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def lockout_address(request: HttpRequest) -> str | None:
    """
    The client address, as the login lockout (django-axes, AXES_CLIENT_IP_CALLABLE)
    keeps it in an inet column: an IPv6 client's /64 by its first address.
    None (one shared address for the lockout) when the request has none to
    give, such as an empty REMOTE_ADDR, rather than a failed insert.
    """
    try:
        network = ipaddress.ip_network(client_address(request), strict=False)
    except ValueError:
        return None
    return str(network.network_address)


def signup_limits(address: str, phone: str) -> list[Limit]:
    """The limits a signup from address to phone counts against (SIGNUP_RATE_LIMITS)."""
    rates = settings.SIGNUP_RATE_LIMITS
    keys = {
        "address": f"signup:address:{address}",
        "phone": f"signup:phone:{phone}",
        "texts": "signup:texts",
    }
    return [Limit(key, *rates[name]) for name, key in keys.items() if rates.get(name)]


def retry_after(limits: Sequence[Limit]) -> int | None:
    """
    Seconds until every limit has room, or None if they all have it now.

    A read without locks, for refusing early: a refused signup should not
    cost the password hashing that precedes take().
    """
    rows = RateLimit.objects.filter(key__in=[limit.key for limit in limits])
    return _wait(limits, {row.key: row.hits for row in rows}, timezone.now())


def take(limits: Sequence[Limit]) -> None:
    """
    Record one event under each limit, or raise RateLimited and record none.

    Call it in the signup's transaction: the rows stay locked until it ends,
    and a rollback takes the events back.
    """
    if not limits:
        return
    now = timezone.now()
    _prune(now)
    windows = {limit.key: timedelta(seconds=limit.seconds) for limit in limits}
    keys = sorted(windows)
    # Created, then locked, in one order (by key) in every transaction, so
    # that two signups with keys in common wait for each other, never in a
    # cycle. A row that existed may be pruned by another signup between the
    # two (it counted nothing): it is missing from the lock, and made again,
    # due to expire only after its window, so no prune takes it this time.
    rows: dict[str, RateLimit] = {}
    while len(rows) < len(keys):
        RateLimit.objects.bulk_create(
            [RateLimit(key=key, expires_at=now + windows[key]) for key in keys],
            ignore_conflicts=True,
        )
        locked = RateLimit.objects.select_for_update().filter(key__in=keys).order_by("key")
        rows = {row.key: row for row in locked}
    wait = _wait(limits, {key: row.hits for key, row in rows.items()}, now)
    if wait is not None:
        raise RateLimited(wait)
    for key, row in rows.items():
        window = windows[key]
        row.hits = [hit for hit in row.hits if hit > now - window] + [now]
        row.expires_at = now + window
        row.save(update_fields=["hits", "expires_at"])


def _wait(limits: Sequence[Limit], hits: dict[str, list[datetime]], now: datetime) -> int | None:
    waits = []
    for limit in limits:
        recent = sorted(
            hit for hit in hits.get(limit.key, []) if hit > now - timedelta(seconds=limit.seconds)
        )
        if limit.count < 1:
            waits.append(limit.seconds)
        elif len(recent) >= limit.count:
            # Room comes back when the count-th most recent event leaves the window.
            frees_at = recent[-limit.count] + timedelta(seconds=limit.seconds)
            waits.append((frees_at - now).total_seconds())
    return max(1, math.ceil(max(waits))) if waits else None


def _prune(now: datetime) -> None:
    """Delete rows that count nothing any more, skipping those another signup holds."""
    table = RateLimit._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE key IN ("
            f" SELECT key FROM {table} WHERE expires_at < %s"
            " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)",
            [now, PRUNE_BATCH],
        )
