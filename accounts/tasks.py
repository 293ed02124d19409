"""
The signup's three communications, one task per channel.

Each channel is its own job, so a text message provider that is down retries
the text message alone and never re-sends the e-mail that already went out.
The sends are coroutines: a worker with async slots (`runworker --async-slots
N`) has up to N of them waiting on providers at once in each executor process.
"""

from typing import Any

from django.tasks import task
from django.utils import timezone

from .models import Channel, Profile
from .sending import adeliver

# Five attempts spread over about half a minute with the default backoff; an
# attempt that hangs on a provider is killed after 30 s and counts as failed.
SEND_OPTIONS = {"queue_name": "communications", "max_attempts": 5, "timeout": 30}


# Each takes the user's id too, though the delivery knows its user: it keys
# the limits of settings.SIGNUP_SEND_LIMITS (one send per user at a time), which
# read it from the job's arguments when it is enqueued. Jobs enqueued without
# it share one key, and run one at a time.


@task(**SEND_OPTIONS)
async def send_welcome_email(delivery_id: int, user_id: int | None = None) -> dict[str, Any]:
    return await adeliver(delivery_id)


@task(**SEND_OPTIONS)
async def send_welcome_sms(delivery_id: int, user_id: int | None = None) -> dict[str, Any]:
    return await adeliver(delivery_id)


@task(**SEND_OPTIONS)
async def send_welcome_push(delivery_id: int, user_id: int | None = None) -> dict[str, Any]:
    return await adeliver(delivery_id)


@task(queue_name="communications", max_attempts=5)
def record_welcome_outcome(outcomes: list[dict[str, Any]], user_id: int) -> int:
    """
    The signup's follow-up, run once when its three messages have all
    finished, sent or given up on (the on_finish callback of the signup's
    batch): records how many went out.
    """
    sent = sum(1 for outcome in outcomes if outcome["status"] == "SUCCESSFUL")
    Profile.objects.filter(user_id=user_id).update(
        welcome_finished_at=timezone.now(), welcome_sent=sent
    )
    return sent


SEND_TASKS = {
    Channel.EMAIL: send_welcome_email,
    Channel.SMS: send_welcome_sms,
    Channel.PUSH: send_welcome_push,
}
