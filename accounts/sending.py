"""
Sending one delivery so that retries and re-runs never send it twice.

A send is three steps: count the attempt, call the provider, record what it
said. No transaction and no row lock spans the provider's round trip, so a
send can await it on an event loop (many at once per worker process) without
holding a database connection idle in a transaction. What holds, for each
delivery:

- "sent" is final: once it is recorded, no attempt calls the provider again
  (the attempt is counted only while the delivery is pending, and reads back
  what it counted), and no later write takes it back.
- Every attempt hands the provider the same idempotency key. Two attempts
  can overlap only where the queue has given up on the first one (its worker
  crashed or stopped heartbeating) while its call was still in flight, or
  when a worker crashes after the provider took the message and before "sent"
  is committed: the next attempt sends again with the same key. A provider
  that honours the key (the local outbox and the HTTP stand-in do) returns
  the first message: exactly one message. A provider without one may deliver
  a second copy in that window, and only in that window. E-mail keeps the
  same Message-ID on every attempt, so a copy sent twice is recognisably the
  same.
"""

import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.db.models import F
from django.utils import timezone

from jobs.exceptions import DoNotRetry

from .models import Channel, Delivery, DeliveryStatus
from .providers import Message, ProviderRejected, provider_for

logger = logging.getLogger("accounts.signup")

WELCOME_SUBJECT = "Welcome aboard"


def welcome_message(delivery: Delivery) -> Message:
    """The welcome message of a delivery's channel."""
    if delivery.channel == Channel.EMAIL:
        body = f"Hello,\n\nyour account {delivery.user.email} is ready. Thank you for signing up.\n"
    else:
        body = "Welcome aboard: your account is ready."
    return Message(
        channel=delivery.channel,
        recipient=delivery.recipient,
        subject=WELCOME_SUBJECT,
        body=body,
        idempotency_key=str(delivery.idempotency_key),
    )


async def adeliver(delivery_id: int, *, final: bool = False) -> dict[str, Any]:
    """
    Send the delivery unless it went out already, and say what became of it.

    A failed attempt is recorded, then its exception raised again so that the
    job retries; `final` (an inline send, which has no retry) marks the
    delivery failed instead of leaving it pending.
    """
    await Delivery.objects.filter(id=delivery_id, status=DeliveryStatus.PENDING).aupdate(
        attempts=F("attempts") + 1, last_attempted_at=timezone.now()
    )
    try:
        delivery = await Delivery.objects.select_related("user").aget(id=delivery_id)
    except Delivery.DoesNotExist:
        raise DoNotRetry(f"Delivery {delivery_id} no longer exists.") from None
    if delivery.status != DeliveryStatus.PENDING:
        return summary(delivery)
    try:
        message_id = await provider_for(delivery.channel).asend(welcome_message(delivery))
    except Exception as error:
        gives_up = final or isinstance(error, ProviderRejected)
        await record_failure(delivery, error, gives_up=gives_up)
        raise
    return summary(await record_sent(delivery, message_id))


def deliver(delivery_id: int, *, final: bool = False) -> dict[str, Any]:
    """adeliver() for synchronous callers."""
    return async_to_sync(adeliver)(delivery_id, final=final)


async def record_sent(delivery: Delivery, message_id: str) -> Delivery:
    """
    Record that the provider took the message. A failure another attempt
    recorded meanwhile is overwritten: the provider's word is the truth. If
    another attempt recorded "sent" first, its record stands.
    """
    delivery.status = DeliveryStatus.SENT
    delivery.sent_at = timezone.now()
    delivery.provider_message_id = message_id
    delivery.last_error = ""
    recorded = await (
        Delivery.objects.filter(id=delivery.id)
        .exclude(status=DeliveryStatus.SENT)
        .aupdate(
            status=delivery.status,
            sent_at=delivery.sent_at,
            provider_message_id=message_id,
            last_error="",
        )
    )
    if not recorded:
        await delivery.arefresh_from_db()
    return delivery


async def record_failure(delivery: Delivery, error: Exception, *, gives_up: bool) -> None:
    """Record why an attempt failed, on a delivery that no attempt has sent."""
    changes: dict[str, Any] = {"last_error": f"{type(error).__name__}: {error}"}
    if gives_up:
        changes["status"] = DeliveryStatus.FAILED
    await (
        Delivery.objects.filter(id=delivery.id)
        .exclude(status=DeliveryStatus.SENT)
        .aupdate(**changes)
    )


def deliver_inline(deliveries: list[Delivery]) -> None:
    """
    Send the deliveries one after the other in this process, the way signup
    used to: the caller waits for every provider. A failure is recorded on
    its delivery and does not stop the others.
    """
    for delivery in deliveries:
        try:
            deliver(delivery.id, final=True)
        except Exception:
            logger.exception("Inline %s delivery %s failed", delivery.channel, delivery.id)


def summary(delivery: Delivery) -> dict[str, Any]:
    """What a send task returns: no recipient, since job results are not private."""
    return {
        "delivery_id": delivery.id,
        "channel": delivery.channel,
        "status": delivery.status,
        "provider_message_id": delivery.provider_message_id,
    }
