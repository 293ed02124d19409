"""
Signing up: the form that validates, the transaction that creates the user and
enqueues its communications, and the report of where those communications are.
"""

from dataclasses import dataclass
from typing import Any

import phonenumbers
from django import forms
from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.tasks import default_task_backend

from jobs.models import Job, JobStatus

from .models import Channel, Delivery, DeliveryStatus, Profile
from .sending import deliver_inline
from .tasks import SEND_TASKS

DUPLICATE_EMAIL = "An account with this e-mail address already exists."


class SignupForm(forms.Form):
    """
    E-mail, phone number and password, checked with Django's own validators.

    The e-mail address is the username (lower-cased), which is what makes it
    unique: Django's User does not constrain `email` itself.
    """

    email = forms.EmailField(max_length=150)
    phone = forms.CharField(
        max_length=32,
        help_text="In international (E.164) form, e.g. +14155550123.",
    )
    password = forms.CharField(widget=forms.PasswordInput, strip=False, max_length=4096)

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"])
        if User.objects.filter(username=email.lower()).exists():
            raise ValidationError(DUPLICATE_EMAIL, code="duplicate")
        return email

    def clean_phone(self) -> str:
        """The number in E.164 form; the country code is required."""
        invalid = ValidationError(
            "Enter a valid phone number in E.164 form, with its country code, e.g. +14155550123.",
            code="invalid",
        )
        try:
            number = phonenumbers.parse(self.cleaned_data["phone"], None)
        except phonenumbers.NumberParseException:
            raise invalid from None
        if not phonenumbers.is_valid_number(number):
            raise invalid
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        email, password = cleaned.get("email"), cleaned.get("password")
        if password:
            user = User(username=(email or "").lower(), email=email or "")
            try:
                password_validation.validate_password(password, user)
            except ValidationError as error:
                self.add_error("password", error)
        return cleaned

    def save(self, *, inline: bool = False) -> "Signup | None":
        """
        Create the user and its three deliveries, and enqueue the sending, in
        one transaction: if anything fails, no job exists and nothing is sent.
        None, with the error on the form, when the address was taken meanwhile.

        With `inline`, nothing is enqueued: the messages are sent here, after
        the commit, the way signup used to, for comparison.
        """
        data = self.cleaned_data
        try:
            with transaction.atomic():
                user = User.objects.create_user(
                    username=data["email"].lower(), email=data["email"], password=data["password"]
                )
                Profile.objects.create(user=user, phone=data["phone"])
                deliveries = Delivery.objects.bulk_create(
                    [
                        Delivery(user=user, channel=Channel.EMAIL, recipient=user.email),
                        Delivery(user=user, channel=Channel.SMS, recipient=data["phone"]),
                        Delivery(user=user, channel=Channel.PUSH, recipient=f"user:{user.id}"),
                    ]
                )
                if not inline:
                    for delivery in deliveries:
                        delivery.task_id = SEND_TASKS[delivery.channel].enqueue(delivery.id).id
                    Delivery.objects.bulk_update(deliveries, ["task_id"])
        except IntegrityError:
            # Another signup took the address between clean_email() and here.
            self.add_error("email", ValidationError(DUPLICATE_EMAIL, code="duplicate"))
            return None
        if inline:
            deliver_inline(deliveries)
        return Signup(user=user, deliveries=deliveries)


@dataclass(frozen=True)
class Signup:
    user: User
    deliveries: list[Delivery]


def send_inline(flag: str | None) -> bool:
    """
    Whether to send inline: SIGNUP_SEND_INLINE, or the `?inline=1` query flag
    where SIGNUP_ALLOW_INLINE_FLAG permits it (the benchmark's switch).
    Raises ValidationError for a flag that is not permitted.
    """
    if settings.SIGNUP_SEND_INLINE:
        return True
    if flag in (None, "", "0"):
        return False
    if flag != "1":
        raise ValidationError("inline must be 1 or 0.", code="invalid")
    if not settings.SIGNUP_ALLOW_INLINE_FLAG:
        raise ValidationError(
            "Inline sending is not enabled here (SIGNUP_ALLOW_INLINE_FLAG).", code="forbidden"
        )
    return True


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str) -> str:
    return f"{number[:3]}{'*' * max(len(number) - 5, 0)}{number[-2:]}"


def delivery_state(delivery: Delivery, job: Job | None) -> str:
    """
    Where a delivery is: sent, failed, or while pending what its job says
    (queued, sending, retrying). A job that failed, was cancelled or ran out
    of attempts without recording "sent" means the message did not go out.
    """
    if delivery.status != DeliveryStatus.PENDING:
        return delivery.status
    if job is None:
        return "pending"
    if job.status == JobStatus.RUNNING:
        return "sending"
    if job.status == JobStatus.READY:
        return "retrying" if job.attempts else "queued"
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return "failed"
    return "pending"


FINISHED_STATES = ("sent", "failed")


def communications(user: User, *, reveal: bool) -> list[dict[str, Any]]:
    """Each channel's delivery with its job's state; recipients masked unless `reveal`."""
    deliveries = list(user.deliveries.order_by("id"))
    jobs = Job.objects.using(default_task_backend.database).in_bulk(
        [delivery.task_id for delivery in deliveries if delivery.task_id]
    )
    report = []
    for delivery in deliveries:
        job = jobs.get(delivery.task_id)
        recipient = delivery.recipient
        if not reveal and delivery.channel == Channel.EMAIL:
            recipient = mask_email(recipient)
        elif not reveal and delivery.channel == Channel.SMS:
            recipient = mask_phone(recipient)
        report.append(
            {
                "channel": delivery.channel,
                "recipient": recipient,
                "status": delivery_state(delivery, job),
                "attempts": delivery.attempts,
                "last_attempted_at": delivery.last_attempted_at,
                "sent_at": delivery.sent_at,
                "provider_message_id": delivery.provider_message_id,
                "last_error": delivery.last_error,
                "task_id": str(delivery.task_id) if delivery.task_id else None,
                "task_status": job.status if job else None,
            }
        )
    return report
