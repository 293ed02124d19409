"""
Signing up: the form that validates, the transaction that creates the user and
enqueues its communications, and the report of where those communications are.
"""

from collections.abc import Sequence
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
from jobs.workflows import batch, step

from . import limits
from .models import Channel, Delivery, DeliveryStatus, Profile
from .sending import deliver_inline
from .tasks import SEND_TASKS, record_welcome_outcome

DUPLICATE_EMAIL = "An account with this e-mail address already exists."

NOT_UNICODE = (
    "This is not valid Unicode text: it contains an unpaired surrogate or bytes that are not UTF-8."
)

# Text messages go to mobile numbers only: a premium-rate or other number that
# charges for what it receives is how SMS pumping earns its money.
# FIXED_LINE_OR_MOBILE is what a country whose numbers do not tell (the US,
# Canada) has.
TEXTABLE_NUMBER_TYPES = (
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
)


def is_unicode(value: str) -> bool:
    """Whether value is text that can be stored and sent: no lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class UnicodeTextMixin:
    """
    Refuses a lone surrogate, which JSON's "\\ud800" can carry, before any
    other check: the database, the password hasher and the page would each
    fail on it with a 500.
    """

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and not is_unicode(value):
            raise ValidationError(NOT_UNICODE, code="invalid_unicode")
        return super().to_python(value)


class UnicodeCharField(UnicodeTextMixin, forms.CharField):
    pass


class UnicodeEmailField(UnicodeTextMixin, forms.EmailField):
    pass


class SignupForm(forms.Form):
    """
    E-mail, phone number and password, checked with Django's own validators.

    The e-mail address is the username (lower-cased), which is what makes it
    unique: Django's User does not constrain `email` itself.
    """

    email = UnicodeEmailField(max_length=150)
    phone = UnicodeCharField(
        max_length=32,
        help_text="A mobile number in international (E.164) form, e.g. +14155550123.",
    )
    password = UnicodeCharField(widget=forms.PasswordInput, strip=False, max_length=4096)

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"])
        if User.objects.filter(username=email.lower()).exists():
            raise ValidationError(DUPLICATE_EMAIL, code="duplicate")
        return email

    def clean_phone(self) -> str:
        """A mobile number in E.164 form; the country code is required."""
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
        if phonenumbers.number_type(number) not in TEXTABLE_NUMBER_TYPES:
            raise ValidationError(
                "Enter a mobile number: text messages are not sent to premium-rate, "
                "toll-free, shared-cost, VoIP, pager or landline numbers.",
                code="not_mobile",
            )
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

    def save(
        self, *, inline: bool = False, rate_limits: Sequence[limits.Limit] = ()
    ) -> "Signup | None":
        """
        Create the user and its three deliveries, and enqueue the sending, in
        one transaction: if anything fails, no job exists and nothing is sent.
        None, with the error on the form, when the address was taken meanwhile.

        The signup counts against `rate_limits` in that transaction: beyond
        one it raises RateLimited, and nothing is created, enqueued or sent.

        With `inline`, nothing is enqueued: the messages are sent here, after
        the commit, the way signup used to, for comparison.
        """
        data = self.cleaned_data
        user = User(
            username=User.normalize_username(data["email"].lower()),
            email=User.objects.normalize_email(data["email"]),
        )
        # Hashed before the transaction: it takes a good part of a second, and
        # the rate limits' rows stay locked until the commit.
        user.set_password(data["password"])
        try:
            with transaction.atomic():
                limits.take(rate_limits)
                user.save()
                Profile.objects.create(user=user, phone=data["phone"])
                deliveries = Delivery.objects.bulk_create(
                    [
                        Delivery(user=user, channel=Channel.EMAIL, recipient=user.email),
                        Delivery(user=user, channel=Channel.SMS, recipient=data["phone"]),
                        Delivery(user=user, channel=Channel.PUSH, recipient=f"user:{user.id}"),
                    ]
                )
                if not inline:
                    # One job per channel, and a follow-up once all three
                    # have finished (jobs.workflows).
                    sends = batch(
                        [
                            step(SEND_TASKS[delivery.channel], delivery.id, user_id=user.id)
                            for delivery in deliveries
                        ],
                        on_finish=step(record_welcome_outcome, user_id=user.id),
                    ).enqueue(name=f"welcome messages of user {user.id}")
                    channel_jobs = sends.results[: len(deliveries)]
                    for delivery, result in zip(deliveries, channel_jobs, strict=True):
                        delivery.task_id = result.id
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


def communications(user: User) -> list[dict[str, Any]]:
    """
    Each channel's delivery with its job's state, for the user and staff alone
    (the views' may_see()): recipients, provider ids and errors are theirs.
    """
    deliveries = list(user.deliveries.order_by("id"))
    jobs = Job.objects.using(default_task_backend.database).in_bulk(
        [delivery.task_id for delivery in deliveries if delivery.task_id]
    )
    report = []
    for delivery in deliveries:
        job = jobs.get(delivery.task_id)
        report.append(
            {
                "channel": delivery.channel,
                "recipient": delivery.recipient,
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
