"""
The providers that carry a message to its recipient, one per channel.

`SIGNUP_PROVIDERS` names a class per channel. The defaults send e-mail through
Django's e-mail framework (whatever `MAILERS` says: the console by default,
SMTP in production) and record text messages and app notifications in the local
outbox. A real SMS or push provider is a subclass of Provider whose transmit()
calls its API with the message's idempotency key.

`SIGNUP_PROVIDER_DELAY` (seconds, "0.3-1.0" for a range) makes every send wait
that long first, to stand in for a real provider's round trip when measuring.
"""

import random
import time
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.core.mail import DNS_NAME, EmailMessage
from django.utils.module_loading import import_string

from jobs.exceptions import DoNotRetry

from . import outbox


class ProviderError(Exception):
    """The provider did not take the message this time; another attempt may work."""


class ProviderRejected(ProviderError, DoNotRetry):
    """
    The provider refused the message for good (an unknown number, say).

    A DoNotRetry too: the job fails at once rather than asking again.
    """


@dataclass(frozen=True, slots=True)
class Message:
    channel: str
    recipient: str
    subject: str
    body: str
    # The same on every attempt at the same delivery.
    idempotency_key: str


class Provider:
    """Sends messages of one channel; transmit() is what a real provider overrides."""

    def send(self, message: Message) -> str:
        """Send the message and return the provider's id for it."""
        low, high = provider_delay()
        if high > 0:
            time.sleep(random.uniform(low, high))
        return self.transmit(message)

    def transmit(self, message: Message) -> str:
        """
        Hand the message over and return the provider's message id.

        Pass message.idempotency_key to the provider's API when it takes one:
        then a send repeated after a crash is not delivered twice.
        """
        raise NotImplementedError


class LocalProvider(Provider):
    """Records the message in the local outbox (accounts.OutboxMessage)."""

    def transmit(self, message: Message) -> str:
        return outbox.record(
            channel=message.channel,
            recipient=message.recipient,
            subject=message.subject,
            body=message.body,
            idempotency_key=message.idempotency_key,
        )


class LocalSMSProvider(LocalProvider):
    pass


class LocalPushProvider(LocalProvider):
    pass


class EmailProvider(Provider):
    """
    Sends through Django's e-mail framework.

    SMTP has no idempotency key; the Message-ID header is derived from it
    instead, so a copy sent twice is recognisably the same message.
    """

    def transmit(self, message: Message) -> str:
        message_id = f"<signup-{message.idempotency_key}@{DNS_NAME}>"
        EmailMessage(
            subject=message.subject,
            body=message.body,
            to=[message.recipient],
            headers={"Message-ID": message_id},
        ).send()
        return message_id


def provider_delay() -> tuple[float, float]:
    """SIGNUP_PROVIDER_DELAY as (low, high) seconds: "0.5", "0.3-1.0", 0.5 or (0.3, 1.0)."""
    value = getattr(settings, "SIGNUP_PROVIDER_DELAY", 0)
    if isinstance(value, str):
        low, _, high = value.partition("-")
        value = (float(low), float(high or low))
    if isinstance(value, int | float):
        value = (value, value)
    low, high = (float(bound) for bound in value)
    return low, high


@cache
def _provider_class(path: str) -> type[Provider]:
    return import_string(path)


def provider_for(channel: str) -> Provider:
    """The provider that SIGNUP_PROVIDERS names for the channel."""
    return _provider_class(settings.SIGNUP_PROVIDERS[channel])()
