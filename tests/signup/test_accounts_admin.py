"""The signup's deliveries and outbox in the admin: visible, linked to their jobs, read-only."""

import uuid

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from accounts.models import Channel, Delivery, OutboxMessage

pytestmark = pytest.mark.django_db


def test_deliveries_link_their_jobs_and_nothing_can_be_edited(admin_client):
    user = User.objects.create_user("ana", email="ana@example.com")
    job_id = uuid.uuid4()
    delivery = Delivery.objects.create(
        user=user, channel=Channel.EMAIL, recipient="ana@example.com", task_id=job_id
    )
    OutboxMessage.objects.create(
        channel=Channel.EMAIL,
        recipient="ana@example.com",
        subject="Welcome",
        body="Hello",
        idempotency_key="k1",
        message_id="m1",
        sent_at=timezone.now(),
    )
    listing = admin_client.get(reverse("admin:accounts_delivery_changelist")).content.decode()
    assert reverse("admin:jobs_job_change", args=[job_id]) in listing
    assert (
        "ana@example.com"
        in admin_client.get(reverse("admin:accounts_outboxmessage_changelist")).content.decode()
    )
    page = admin_client.get(reverse("admin:accounts_delivery_change", args=[delivery.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.get(reverse("admin:accounts_delivery_add")).status_code == 403
    delete = reverse("admin:accounts_delivery_delete", args=[delivery.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert Delivery.objects.count() == 1
