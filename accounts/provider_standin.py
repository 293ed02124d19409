"""
A stand-in for a messaging provider's HTTP API, for HTTPProvider to talk to.

`POST /provider/messages` takes a message as JSON (channel, recipient,
subject, body) with an Idempotency-Key header, waits
`SIGNUP_PROVIDER_STANDIN_LATENCY` seconds (0.2: a real provider's round
trip), records it in the local outbox once per key, and answers
`{"id": message id}`. It is served only where `SIGNUP_PROVIDER_STANDIN` is on
(with DEBUG, by default): anyone who can reach it can write to the outbox.
"""

import asyncio
import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import outbox
from .models import Channel

FIELDS = ("channel", "recipient", "subject", "body")


@csrf_exempt
@require_POST
async def messages(request: HttpRequest) -> JsonResponse:
    if not settings.SIGNUP_PROVIDER_STANDIN:
        raise Http404("The provider stand-in is off (SIGNUP_PROVIDER_STANDIN).")
    key = request.headers.get("Idempotency-Key", "")
    try:
        message = json.loads(request.body)
    except ValueError:
        message = None
    if not isinstance(message, dict) or not all(
        isinstance(message.get(field), str) for field in FIELDS
    ):
        wanted = f"a JSON object with {', '.join(FIELDS)} as text"
        return JsonResponse({"error": wanted}, status=400)
    if message["channel"] not in Channel.values or not key:
        return JsonResponse({"error": "a known channel and an Idempotency-Key header"}, status=400)
    await asyncio.sleep(settings.SIGNUP_PROVIDER_STANDIN_LATENCY)
    message_id = await sync_to_async(outbox.record, thread_sensitive=False)(
        **{field: message[field] for field in FIELDS}, idempotency_key=key
    )
    return JsonResponse({"id": message_id})
