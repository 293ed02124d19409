"""
What a signup leaves behind: the user's phone number, one Delivery per channel,
the outbox where the local providers record what they "sent", and the counts
that rate-limit signups.
"""

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models


class Profile(models.Model):
    """
    What a signup knows about a user beyond Django's User: the phone number,
    and when all three welcome messages had finished, how many went out
    (accounts.tasks.record_welcome_outcome).
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    phone = models.CharField(max_length=16, help_text="E.164, e.g. +14155550123")
    welcome_finished_at = models.DateTimeField(null=True, blank=True)
    welcome_sent = models.PositiveSmallIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} {self.phone}"


class Channel(models.TextChoices):
    EMAIL = "email", "E-mail"
    SMS = "sms", "Text message"
    PUSH = "push", "App notification"


class DeliveryStatus(models.TextChoices):
    # Not sent yet: queued, being sent, or waiting for a retry.
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    # Given up on: the provider rejected the message, or an inline send failed.
    FAILED = "failed", "Failed"


class Delivery(models.Model):
    """
    One message to one recipient through one channel, and whether it went out.

    Created with the user, in the signup's transaction. The idempotency key is
    handed to the provider on every attempt, so a provider that honours it
    accepts the message once however often it is asked.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="deliveries"
    )
    channel = models.CharField(max_length=10, choices=Channel)
    recipient = models.CharField(max_length=254)
    status = models.CharField(max_length=10, choices=DeliveryStatus, default=DeliveryStatus.PENDING)
    # Attempts that reached the sending code, counted before the provider is
    # called: an attempt cut off by a crash is counted too.
    attempts = models.PositiveIntegerField(default=0)
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # The job that sends it (none when it was sent inline).
    task_id = models.UUIDField(null=True, blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["user", "id"]
        constraints = [
            models.UniqueConstraint("user", "channel", name="accounts_delivery_one_per_channel"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} to {self.recipient}: {self.status}"


class OutboxMessage(models.Model):
    """
    A message the local providers "sent": the record that tests and developers read.

    It stands for the provider's side, so it is written on a connection of its
    own and outlives a rollback of the sender's transaction, as a real
    provider's record would. One row per idempotency key: asking twice returns
    the first message.
    """

    channel = models.CharField(max_length=10, choices=Channel)
    recipient = models.CharField(max_length=254)
    subject = models.CharField(max_length=255, blank=True)
    body = models.TextField()
    idempotency_key = models.CharField(max_length=255, unique=True)
    message_id = models.CharField(max_length=64, unique=True)
    sent_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient} [{self.message_id}]"


class RateLimit(models.Model):
    """
    The recent events counted by one rate limit (accounts.limits): the
    signups from one client address, to one phone number, or of all numbers.

    One row per key, locked while a signup counts and records its event, so
    that two signups at the same instant cannot both take the last place.
    """

    key = models.CharField(max_length=200, primary_key=True)
    hits = ArrayField(models.DateTimeField(), default=list)
    # When the last hit leaves the window: from then on the row counts nothing.
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key}: {len(self.hits)} until {self.expires_at}"
