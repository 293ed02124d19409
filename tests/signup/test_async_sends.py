"""
The signup's sends as coroutines: a worker's async slots wait on an HTTP
provider (the project's stand-in) many at once, and the
HTTP provider's answers become sent, retried or failed deliveries.
"""

import json
import uuid

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction

from accounts.models import Delivery, OutboxMessage
from accounts.providers import HTTPProvider, Message, ProviderError, ProviderRejected
from jobs.limit_overrides import set_override
from tests.conftest import most_at_once, wait_until
from tests.signup.test_signup import sign_up
from tests.tcp_proxy import free_port

HTTP_PROVIDER = "accounts.providers.HTTPProvider"
# Longer than the stand-in's default 0.2 s: a process's async jobs reach the
# database through one thread (Django's sync_to_async), so 60 sends start over
# up to 0.3 s on a loaded machine, and "all at once" needs each to outlast that.
LATENCY = 0.5


@pytest.fixture
def standin(settings, live_server) -> str:
    """The provider stand-in, served by a live server in this process; its URL."""
    settings.SIGNUP_PROVIDER_STANDIN = True
    settings.SIGNUP_PROVIDER_STANDIN_LATENCY = LATENCY
    settings.SIGNUP_PROVIDER_URL = f"{live_server.url}/provider/messages"
    return settings.SIGNUP_PROVIDER_URL


def sent(signups: int):
    def check():
        """every delivery of the signups was recorded as sent"""
        return Delivery.objects.filter(status="sent").count() == 3 * signups

    return check


def test_one_worker_process_sends_as_many_at_once_as_it_has_async_slots(
    client, start_worker, signup_env, standin, settings
):
    signups = 20
    settings.SIGNUP_RATE_LIMITS = {"address": None, "phone": None, "texts": None}
    env = {
        **signup_env,
        "SIGNUP_SMS_PROVIDER": HTTP_PROVIDER,
        "SIGNUP_PUSH_PROVIDER": HTTP_PROVIDER,
        "SIGNUP_PROVIDER_URL": standin,
    }
    # The providers' rate limits (10 and 100 a second) would spread the sends out.
    for limit in ("sms-provider", "push-provider"):
        set_override(limit, rate="1000/s")
    # One process, one thread: every send waits on the event loop's slots.
    start_worker("--concurrency", "1", "--threads", "1", "--async-slots", str(3 * signups), env=env)
    # A first signup pays what comes once (imports, connections, the HTTP client).
    sign_up(client)
    wait_until(sent(1), timeout=30)
    # The others' jobs are claimed together, as from a backlog.
    with transaction.atomic():
        user_ids = [sign_up(client)["user_id"] for _ in range(signups)]
    wait_until(sent(1 + signups), timeout=30)
    http_sends = Delivery.objects.filter(user_id__in=user_ids, channel__in=["sms", "push"])
    intervals = [
        (delivery.last_attempted_at.timestamp(), delivery.sent_at.timestamp())
        for delivery in http_sends
    ]
    assert all(end - start >= LATENCY for start, end in intervals)
    # 40 messages of 0.5 s each: 20 s one at a time. All 40 were in flight
    # at one instant, and all were sent within a tenth of those 20 s.
    assert most_at_once(intervals) == 2 * signups
    first_start = min(start for start, _ in intervals)
    last_end = max(end for _, end in intervals)
    assert last_end - first_start < 4 * LATENCY
    for delivery in http_sends:
        [message] = OutboxMessage.objects.filter(idempotency_key=delivery.idempotency_key)
        assert (delivery.attempts, delivery.provider_message_id) == (1, message.message_id)


def message(channel: str = "sms") -> Message:
    return Message(
        channel=channel,
        recipient="+14155550123",
        subject="Welcome aboard",
        body="Welcome aboard: your account is ready.",
        idempotency_key=str(uuid.uuid4()),
    )


def test_the_standin_keeps_one_message_per_idempotency_key(standin, transactional_db):
    sent = message()
    first = async_to_sync(HTTPProvider().asend)(sent)
    again = async_to_sync(HTTPProvider().asend)(sent)
    assert first == again
    [recorded] = OutboxMessage.objects.filter(idempotency_key=sent.idempotency_key)
    assert (recorded.message_id, recorded.recipient) == (first, sent.recipient)


def test_a_message_the_provider_refuses_is_rejected_for_good(standin, transactional_db):
    with pytest.raises(ProviderRejected, match="answered 400"):
        async_to_sync(HTTPProvider().asend)(message(channel="fax"))
    assert not OutboxMessage.objects.exists()


def test_a_provider_that_cannot_be_reached_is_a_failure_to_retry(settings):
    settings.SIGNUP_PROVIDER_URL = f"http://127.0.0.1:{free_port()}/provider/messages"
    with pytest.raises(ProviderError, match="ConnectError") as raised:
        async_to_sync(HTTPProvider().asend)(message())
    assert not isinstance(raised.value, ProviderRejected)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("not json", {"HTTP_IDEMPOTENCY_KEY": "k"}),
        (json.dumps(["a list"]), {"HTTP_IDEMPOTENCY_KEY": "k"}),
        (json.dumps({"channel": "sms", "recipient": "+1"}), {"HTTP_IDEMPOTENCY_KEY": "k"}),
        (json.dumps({"channel": "sms", "recipient": "+1", "subject": "", "body": "b"}), {}),
    ],
)
def test_the_standin_answers_400_to_a_message_it_cannot_take(client, settings, body, headers):
    settings.SIGNUP_PROVIDER_STANDIN = True
    response = client.post("/provider/messages", body, "application/json", **headers)
    assert response.status_code == 400
    assert "error" in response.json()
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_the_standin_is_not_served_unless_its_setting_is_on(client, settings):
    settings.SIGNUP_PROVIDER_STANDIN = False
    response = client.post("/provider/messages", "{}", "application/json")
    assert response.status_code == 404
