"""
The providers that carry a message to its recipient, one per channel.

`SIGNUP_PROVIDERS` names a class per channel. The defaults send e-mail through
Django's e-mail framework (whatever `MAILERS` says: the console by default,
SMTP in production) and record text messages and app notifications in the local
outbox. HTTPProvider posts each message to an HTTP API (`SIGNUP_PROVIDER_URL`);
this project serves a stand-in for one (accounts.provider_standin). A real SMS
or push provider is a subclass of Provider whose atransmit() (or, for a
blocking client library, transmit()) calls its API with the message's
idempotency key.

`SIGNUP_PROVIDER_DELAY` (seconds, "0.3-1.0" for a range) makes every send wait
that long first, to stand in for a real provider's round trip when measuring.
"""

import asyncio
import random
import weakref
from dataclasses import asdict, dataclass
from functools import cache

import httpx
from asgiref.sync import sync_to_async
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
    """
    Sends messages of one channel. A provider overrides atransmit(), or
    transmit() when its client library blocks (it then runs in a thread, and
    ties one up for the whole round trip).
    """

    async def asend(self, message: Message) -> str:
        """Send the message and return the provider's id for it."""
        low, high = provider_delay()
        if high > 0:
            await asyncio.sleep(random.uniform(low, high))
        return await self.atransmit(message)

    async def atransmit(self, message: Message) -> str:
        """
        Hand the message over and return the provider's message id.

        Pass message.idempotency_key to the provider's API when it takes one:
        then a send repeated after a crash is not delivered twice.
        """
        return await sync_to_async(self.transmit, thread_sensitive=False)(message)

    def transmit(self, message: Message) -> str:
        """atransmit() for a blocking client library."""
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


class HTTPProvider(Provider):
    """
    Posts the message as JSON to `SIGNUP_PROVIDER_URL`, its idempotency key in
    the Idempotency-Key header, and takes the message id from the answer's
    "id". A 4xx answer (but 429) rejects the message for good; a 429, a 5xx,
    a timeout or a lost connection is a failure that another attempt may get
    past.
    """

    async def atransmit(self, message: Message) -> str:
        try:
            response = await http_client().post(
                settings.SIGNUP_PROVIDER_URL,
                json=asdict(message),
                headers={"Idempotency-Key": message.idempotency_key},
            )
        except httpx.HTTPError as error:
            raise ProviderError(f"{type(error).__name__}: {error}") from error
        if response.status_code == 429 or response.status_code >= 500:
            raise ProviderError(f"the provider answered {response.status_code}")
        if response.status_code >= 400:
            raise ProviderRejected(f"the provider answered {response.status_code}: {response.text}")
        return response.json()["id"]


# One client per event loop (a worker's executor runs one for its whole life),
# so that sends share its pool of connections; a client cannot cross loops.
_http_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def http_client() -> httpx.AsyncClient:
    """The running event loop's HTTP client."""
    loop = asyncio.get_running_loop()
    client = _http_clients.get(loop)
    if client is None:
        timeout = getattr(settings, "SIGNUP_PROVIDER_TIMEOUT", 10)
        client = _http_clients[loop] = httpx.AsyncClient(timeout=timeout)
    return client


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
