"""
The local outbox: where the default providers record the messages they "send".

Each message is written on a database connection of its own, in autocommit,
never in the sender's transaction: like a real provider's records, it survives
when the sender crashes before recording "sent". The idempotency key is unique,
so a second send with the same key returns the first message's id.
"""

import uuid
from collections.abc import Sequence

from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone

from .models import Channel

RECORD = """
    INSERT INTO accounts_outboxmessage
        (channel, recipient, subject, body, idempotency_key, message_id, sent_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING message_id
"""

EXISTING = "SELECT message_id FROM accounts_outboxmessage WHERE idempotency_key = %s"


def record(*, channel: str, recipient: str, subject: str, body: str, idempotency_key: str) -> str:
    """Record one message, once per idempotency key; return its message id."""
    connection = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                RECORD,
                [
                    channel,
                    recipient,
                    subject,
                    body,
                    idempotency_key,
                    f"local-{uuid.uuid4().hex}",
                    timezone.now(),
                ],
            )
            row = cursor.fetchone()
            if row is None:
                cursor.execute(EXISTING, [idempotency_key])
                row = cursor.fetchone()
        return row[0]
    finally:
        connection.close()


class OutboxEmailBackend(BaseEmailBackend):
    """
    An e-mail backend that records messages in the outbox, once per Message-ID.

    `DJANGO_EMAIL_BACKEND=accounts.outbox.OutboxEmailBackend` makes e-mail as
    inspectable as the local text and push providers.
    """

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        for message in email_messages:
            mime = message.message()
            record(
                channel=Channel.EMAIL,
                recipient=", ".join(message.recipients()),
                subject=message.subject,
                body=message.body,
                idempotency_key=mime["Message-ID"],
            )
        return len(email_messages)
