"""
Sending one delivery so that retries and re-runs never send it twice.

What holds, for each delivery:

- Once it is recorded "sent", no attempt calls the provider again.
- At most one attempt talks to the provider at a time: the delivery row stays
  locked (SELECT ... FOR UPDATE) from before the call until "sent" is
  committed. A worker presumed dead that wakes up waits for that lock, then
  sees "sent" and stops.
- The one window left is a crash (or a lost database) after the provider took
  the message and before "sent" is committed. The lock dies with the
  connection, the job is rescued, and the next attempt sends again with the
  same idempotency key. A provider that honours the key (the local outbox
  does) returns the first message: exactly one message. A provider without
  one may deliver a second copy in that window, and only in that window: at
  least once, never more than once otherwise. E-mail keeps the same
  Message-ID on every attempt, so a copy sent twice is recognisably the same.
"""

import logging
from typing import Any

from django.db import transaction
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


def deliver(delivery_id: int, *, final: bool = False) -> dict[str, Any]:
    """
    Send the delivery unless it went out already, and say what became of it.

    A failed attempt is recorded, then its exception raised again so that the
    job retries; `final` (an inline send, which has no retry) marks the
    delivery failed instead of leaving it pending.
    """
    Delivery.objects.filter(id=delivery_id, status=DeliveryStatus.PENDING).update(
        attempts=F("attempts") + 1, last_attempted_at=timezone.now()
    )
    failure = None
    with transaction.atomic():
        try:
            delivery = (
                Delivery.objects.select_for_update(of=("self",))
                .select_related("user")
                .get(id=delivery_id)
            )
        except Delivery.DoesNotExist:
            raise DoNotRetry(f"Delivery {delivery_id} no longer exists.") from None
        if delivery.status != DeliveryStatus.PENDING:
            return summary(delivery)
        try:
            message_id = provider_for(delivery.channel).send(welcome_message(delivery))
        except Exception as error:
            failure = error
            delivery.last_error = f"{type(error).__name__}: {error}"
            if final or isinstance(error, ProviderRejected):
                delivery.status = DeliveryStatus.FAILED
        else:
            delivery.status = DeliveryStatus.SENT
            delivery.sent_at = timezone.now()
            delivery.provider_message_id = message_id
            delivery.last_error = ""
        delivery.save(update_fields=["status", "sent_at", "provider_message_id", "last_error"])
    if failure is not None:
        raise failure
    return summary(delivery)


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
