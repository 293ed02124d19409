"""
The signup: one transaction for the user and its three jobs, each channel sent
once by a real worker whatever fails or crashes, and the endpoints that say so.
"""

import json
import signal
import threading
import uuid
from urllib.parse import urlencode

import pytest
from django.core import mail
from django.db import connections
from django.test import Client

from accounts.models import Delivery, OutboxMessage, Profile
from accounts.signup import SignupForm
from accounts.tasks import send_welcome_sms
from jobs.models import Job
from tests.conftest import fetch, wait_until
from tests.signup_providers import CountingSMSProvider

STRONG_PASSWORD = "correct-horse-battery-staple-42"

# The three channels of a signup in parallel: one job per executor at a time.
ONE_JOB_PER_EXECUTOR = ("--concurrency", "3", "--prefetch", "1")


# A signup's jobs: one per channel, and the follow-up that waits for them.
FOLLOW_UP = "accounts.tasks.record_welcome_outcome"
JOBS_PER_SIGNUP = 4


def signup_payload(**overrides) -> dict:
    payload = {
        "email": f"user-{uuid.uuid4().hex[:12]}@example.com",
        "phone": "+14155550123",
        "password": STRONG_PASSWORD,
    }
    return {**payload, **overrides}


def post_signup(client, payload: dict | None = None, path: str = "/api/v1/signup"):
    return client.post(
        path, json.dumps(signup_payload() if payload is None else payload), "application/json"
    )


def post_form(client, fields: dict):
    """Post the HTML form as a browser does: urlencoded."""
    return client.post("/signup/", urlencode(fields), "application/x-www-form-urlencoded")


def sign_up(client, **overrides) -> dict:
    response = post_signup(client, signup_payload(**overrides))
    assert response.status_code == 201, response.content
    return response.json()


def channels(client, user_id: int) -> dict[str, dict]:
    response = client.get(f"/api/v1/signup/{user_id}/communications")
    assert response.status_code == 200
    return {entry["channel"]: entry for entry in response.json()["communications"]}


def task_status(client, task_id: str) -> dict:
    response = client.get(f"/api/v1/tasks/{task_id}")
    assert response.status_code == 200
    return response.json()


def outbox_of(delivery: Delivery) -> list[OutboxMessage]:
    """What the local provider recorded for a delivery (e-mail's key is in its Message-ID)."""
    return list(OutboxMessage.objects.filter(idempotency_key__contains=delivery.idempotency_key))


def all_sent(user_id: int):
    def check():
        """all three deliveries were recorded as sent"""
        return Delivery.objects.filter(user_id=user_id, status="sent").count() == 3

    return check


# Enqueueing in the signup's transaction.


def test_signup_enqueues_three_jobs_in_the_transaction_that_creates_the_user(
    client, transactional_db
):
    body = sign_up(client)
    user_id = body["user_id"]
    jobs = {
        job.task_path.rsplit("_", 1)[1]: job for job in Job.objects.exclude(task_path=FOLLOW_UP)
    }
    assert set(jobs) == {"email", "sms", "push"}
    # And the follow-up, waiting for all three (accounts.tasks.record_welcome_outcome).
    follow_up = Job.objects.get(task_path=FOLLOW_UP)
    assert (follow_up.status, follow_up.parents_left, follow_up.kwargs) == (
        "WAITING",
        3,
        {"user_id": user_id},
    )
    assert {channel: str(job.id) for channel, job in jobs.items()} == body["task_ids"]
    deliveries = {d.channel: d for d in Delivery.objects.filter(user_id=user_id)}
    for channel, job in jobs.items():
        assert (job.queue, job.status, job.args) == (
            "communications",
            "READY",
            [deliveries[channel].id],
        )
        assert str(deliveries[channel].task_id) == str(job.id)
        assert job.kwargs == {"user_id": user_id}
    # The text message and the push notification go under their provider's
    # rate and one at a time per user (settings.SIGNUP_SEND_LIMITS).
    assert (jobs["sms"].limit_key, jobs["sms"].shared_limit_key) == (
        f"sms-per-user:{user_id}",
        "sms-provider",
    )
    assert (jobs["push"].limit_key, jobs["push"].shared_limit_key) == (
        f"push-per-user:{user_id}",
        "push-provider",
    )
    assert jobs["email"].limit_key is None
    # xmin is the id of the transaction that wrote a row: one for all of them.
    writers = fetch(
        "SELECT xmin::text FROM auth_user WHERE id = %s "
        "UNION SELECT xmin::text FROM accounts_profile WHERE user_id = %s "
        "UNION SELECT xmin::text FROM jobs_job",
        [user_id, user_id],
    )
    assert len(writers) == 1


def test_a_signup_that_fails_after_enqueueing_leaves_no_job_and_no_user(
    client, transactional_db, monkeypatch
):
    def fail(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Delivery.objects, "bulk_update", fail)
    client.raise_request_exception = True
    with pytest.raises(RuntimeError):
        post_signup(client)
    assert Job.objects.count() == 0
    assert fetch("SELECT count(*) FROM auth_user") == [(0,)]


@pytest.mark.django_db
def test_a_duplicate_email_answers_400_and_enqueues_nothing(client):
    first = sign_up(client, email="ada@example.com")
    response = post_signup(client, signup_payload(email="ADA@example.com"))
    assert response.status_code == 400
    assert response.json()["errors"]["email"] == [
        {"message": "An account with this e-mail address already exists.", "code": "duplicate"}
    ]
    assert Job.objects.count() == JOBS_PER_SIGNUP
    assert set(Job.objects.exclude(task_path=FOLLOW_UP).values_list("id", flat=True)) == {
        uuid.UUID(task_id) for task_id in first["task_ids"].values()
    }


def test_two_signups_racing_for_one_email_make_one_user_and_three_jobs(
    transactional_db, monkeypatch
):
    # Both pass the form's duplicate check, as two requests at the same instant
    # can: the unique username decides.
    monkeypatch.setattr(SignupForm, "clean_email", lambda form: form.cleaned_data["email"])
    barrier = threading.Barrier(2)
    statuses = []

    def sign_up_once():
        try:
            barrier.wait()
            statuses.append(post_signup(Client(), signup_payload(email="race@example.com")))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sign_up_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(response.status_code for response in statuses) == [201, 400]
    [refused] = [response for response in statuses if response.status_code == 400]
    assert refused.json()["errors"]["email"][0]["code"] == "duplicate"
    assert Job.objects.count() == JOBS_PER_SIGNUP


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("phone", "0612345678", "invalid"),
        ("phone", "+1415555012", "invalid"),
        ("phone", "+99912345678", "invalid"),
        ("email", "not-an-email", "invalid"),
        ("password", "12345678", "password_too_common"),
        ("password", "short", "password_too_short"),
    ],
)
def test_an_invalid_signup_answers_400_and_creates_nothing(client, field, value, code):
    response = post_signup(client, signup_payload(**{field: value}))
    assert response.status_code == 400
    assert code in [error["code"] for error in response.json()["errors"][field]]
    assert Job.objects.count() == 0
    assert Delivery.objects.count() == 0


@pytest.mark.django_db
def test_a_phone_number_is_stored_in_e164_form(client):
    body = sign_up(client, phone="+44 7911 123456")
    assert Profile.objects.get(user_id=body["user_id"]).phone == "+447911123456"
    [sms] = [entry for entry in body["communications"] if entry["channel"] == "sms"]
    assert sms["recipient"] == "+447911123456"


# Bad input: 400 with a field-level message, never 500.


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"email=a@example.com&phone=+14155550123", "__all__"),
        (b"", "__all__"),
        (b"\xff\xfe\x00garbage", "__all__"),
        (b"[]", "__all__"),
        (b'"a string"', "__all__"),
        (b"null", "__all__"),
        (b"[" * 10000 + b"]" * 10000, "__all__"),
        (b'{"a": "' + b"x" * 20000 + b'"}', "__all__"),
        (json.dumps({"phone": "+14155550123", "password": STRONG_PASSWORD}).encode(), "email"),
        (json.dumps({"email": "a@example.com", "password": STRONG_PASSWORD}).encode(), "phone"),
        (json.dumps({"email": "a@example.com", "phone": "+14155550123"}).encode(), "password"),
        (json.dumps(signup_payload(phone=14155550123)).encode(), "phone"),
        (json.dumps(signup_payload(email=["a@example.com"])).encode(), "email"),
        (json.dumps(signup_payload(password=None)).encode(), "password"),
        (json.dumps(signup_payload(password={"$gt": ""})).encode(), "password"),
        (json.dumps(signup_payload(email="a" * 200 + "@example.com")).encode(), "email"),
        (json.dumps(signup_payload(email="nul\u0000@example.com")).encode(), "email"),
        (json.dumps(signup_payload(phone="+1" * 5000)).encode(), "phone"),
    ],
)
def test_bad_input_answers_400_with_the_field_at_fault(client, body, field):
    response = client.post("/api/v1/signup", body, content_type="application/json")
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert errors[field][0]["message"]
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_a_body_declared_too_large_is_refused_before_it_is_read(client):
    response = client.generic(
        "POST",
        "/api/v1/signup",
        b"{}",
        content_type="application/json",
        CONTENT_LENGTH=str(10 * 1024 * 1024),
    )
    assert response.status_code == 400
    assert response.json()["errors"]["__all__"][0]["code"] == "too_large"


@pytest.mark.django_db
def test_the_inline_flag_is_refused_unless_a_setting_allows_it(client):
    response = post_signup(client, path="/api/v1/signup?inline=1")
    assert response.status_code == 400
    assert response.json()["errors"]["inline"][0]["code"] == "forbidden"
    assert Delivery.objects.count() == 0


# Sending inline, the old way, with the same code.


def test_inline_sending_sends_in_the_request_and_enqueues_nothing(
    client, transactional_db, settings
):
    settings.SIGNUP_ALLOW_INLINE_FLAG = True
    response = post_signup(client, path="/api/v1/signup?inline=1")
    assert response.status_code == 201
    body = response.json()
    assert body["inline"] is True
    assert body["task_ids"] == {"email": None, "sms": None, "push": None}
    assert Job.objects.count() == 0
    assert {entry["status"] for entry in body["communications"]} == {"sent"}
    [email] = mail.outbox
    deliveries = {d.channel: d for d in Delivery.objects.all()}
    assert email.extra_headers["Message-ID"] == deliveries["email"].provider_message_id
    for channel in ("sms", "push"):
        [message] = outbox_of(deliveries[channel])
        assert message.message_id == deliveries[channel].provider_message_id


def test_the_inline_setting_records_a_failed_send_and_still_signs_up(
    client, transactional_db, settings
):
    settings.SIGNUP_SEND_INLINE = True
    settings.SIGNUP_PROVIDERS = {
        **settings.SIGNUP_PROVIDERS,
        "push": "tests.signup_providers.RejectingPushProvider",
    }
    body = sign_up(client)
    report = {entry["channel"]: entry for entry in body["communications"]}
    assert {channel: entry["status"] for channel, entry in report.items()} == {
        "email": "sent",
        "sms": "sent",
        "push": "failed",
    }
    assert report["push"]["last_error"] == "ProviderRejected: no device registered for this user"
    assert Job.objects.count() == 0


def test_a_rerun_of_a_sent_delivery_does_not_call_the_provider_again(
    client, transactional_db, settings
):
    settings.SIGNUP_PROVIDERS = {
        **settings.SIGNUP_PROVIDERS,
        "sms": "tests.signup_providers.CountingSMSProvider",
    }
    CountingSMSProvider.calls.clear()
    body = sign_up(client)
    sms = Delivery.objects.get(user_id=body["user_id"], channel="sms")
    first = send_welcome_sms.call(sms.id)
    second = send_welcome_sms.call(sms.id)
    assert first == second
    assert first["status"] == "sent"
    assert CountingSMSProvider.calls == [str(sms.idempotency_key)]
    sms.refresh_from_db()
    assert sms.attempts == 1


# With a worker.


def test_with_a_worker_every_channel_is_sent_once_and_the_endpoints_follow(
    client, start_worker, signup_env
):
    body = sign_up(client, email="grace@example.com")
    user_id, task_ids = body["user_id"], body["task_ids"]
    ready = task_status(client, task_ids["email"])
    assert (ready["status"], ready["attempts"], ready["started_at"]) == ("READY", 0, None)
    assert {e["status"] for e in channels(client, user_id).values()} == {"queued"}

    # Sends that take a second, to see them RUNNING.
    start_worker(*ONE_JOB_PER_EXECUTOR, env={**signup_env, "SIGNUP_PROVIDER_DELAY": "1"})

    def running():
        """the e-mail job is RUNNING"""
        return task_status(client, task_ids["email"])["status"] == "RUNNING"

    wait_until(running, timeout=15, interval=0.01)
    assert channels(client, user_id)["email"]["status"] in ("sending", "sent")
    wait_until(all_sent(user_id), timeout=20)

    def successful():
        """every job is SUCCESSFUL"""
        return {task_status(client, t)["status"] for t in task_ids.values()} == {"SUCCESSFUL"}

    wait_until(successful, timeout=10)
    done = task_status(client, task_ids["sms"])
    assert done["attempts"] == 1
    assert done["errors"] == []
    assert done["started_at"] and done["finished_at"]
    assert done["return_value"]["status"] == "sent"
    report = channels(client, user_id)
    for channel, entry in report.items():
        delivery = Delivery.objects.get(user_id=user_id, channel=channel)
        [message] = outbox_of(delivery)
        assert (entry["status"], entry["attempts"], entry["task_status"]) == (
            "sent",
            1,
            "SUCCESSFUL",
        )
        assert entry["sent_at"]
        expected_id = message.idempotency_key if channel == "email" else message.message_id
        assert entry["provider_message_id"] == expected_id
    # The user who signed up (this client's session) sees the recipients.
    assert report["email"]["recipient"] == "grace@example.com"
    assert report["sms"]["recipient"] == "+14155550123"

    page = client.get(f"/signup/{user_id}/")
    assert page.status_code == 200
    assert b'http-equiv="refresh"' not in page.content
    assert page.content.count(b'class="sent"') == 3


def test_a_provider_that_fails_twice_then_succeeds_sends_one_message_in_3_attempts(
    client, start_worker, signup_env
):
    body = sign_up(client)
    env = {**signup_env, "SIGNUP_SMS_PROVIDER": "tests.signup_providers.FailsTwiceSMSProvider"}
    start_worker(*ONE_JOB_PER_EXECUTOR, env=env)
    wait_until(all_sent(body["user_id"]), timeout=20)

    sms = Delivery.objects.get(user_id=body["user_id"], channel="sms")
    assert (sms.status, sms.attempts) == ("sent", 3)
    assert len(outbox_of(sms)) == 1
    job = Job.objects.get(id=sms.task_id)
    assert job.attempts == 3
    assert [e["message"] for e in job.errors] == [
        "provider unavailable (call 1)",
        "provider unavailable (call 2)",
    ]
    # The other channels were not retried with it.
    for other in Delivery.objects.filter(user_id=body["user_id"]).exclude(channel="sms"):
        assert other.attempts == 1
        assert Job.objects.get(id=other.task_id).attempts == 1
        assert len(outbox_of(other)) == 1


def test_a_provider_that_rejects_fails_the_job_and_shows_its_traceback_to_staff_alone(
    client, admin_client, start_worker, signup_env
):
    body = sign_up(client)
    env = {**signup_env, "SIGNUP_PUSH_PROVIDER": "tests.signup_providers.RejectingPushProvider"}
    start_worker(*ONE_JOB_PER_EXECUTOR, env=env)
    push_task = body["task_ids"]["push"]

    def failed():
        """the push job FAILED"""
        return task_status(client, push_task)["status"] == "FAILED"

    wait_until(failed, timeout=20)
    users_view = task_status(client, push_task)
    assert users_view["attempts"] == 1
    [error] = users_view["errors"]
    assert error["exception_class_path"] == "accounts.providers.ProviderRejected"
    assert error["message"] == "no device registered for this user"
    assert "traceback" not in error
    assert "ProviderRejected" in task_status(admin_client, push_task)["errors"][0]["traceback"]

    def others_sent():
        """e-mail and text message were sent"""
        report = channels(client, body["user_id"])
        return report["email"]["status"] == report["sms"]["status"] == "sent"

    wait_until(others_sent, timeout=10)
    assert channels(client, body["user_id"])["push"]["status"] == "failed"


def test_a_worker_killed_after_the_providers_took_the_messages_sends_each_once(
    client, start_worker, signup_env
):
    body = sign_up(client)
    user_id = body["user_id"]
    deliveries = list(Delivery.objects.filter(user_id=user_id))
    hanging = {
        **signup_env,
        "SIGNUP_EMAIL_PROVIDER": "tests.signup_providers.HangingEmailProvider",
        "SIGNUP_SMS_PROVIDER": "tests.signup_providers.HangingSMSProvider",
        "SIGNUP_PUSH_PROVIDER": "tests.signup_providers.HangingPushProvider",
    }
    first = start_worker(*ONE_JOB_PER_EXECUTOR, env=hanging)

    def all_taken():
        """the providers took all three messages"""
        return all(outbox_of(delivery) for delivery in deliveries)

    wait_until(all_taken, timeout=20)
    assert Delivery.objects.filter(user_id=user_id, status="sent").count() == 0
    first.signal(signal.SIGKILL)
    first.wait()

    start_worker(*ONE_JOB_PER_EXECUTOR, env=signup_env)
    wait_until(all_sent(user_id), timeout=30)

    def jobs_written():
        """the worker wrote the three jobs' outcomes (after their tasks recorded the sends)"""
        task_ids = [delivery.task_id for delivery in deliveries]
        return not Job.objects.filter(id__in=task_ids, status="RUNNING").exists()

    wait_until(jobs_written)
    for delivery in Delivery.objects.filter(user_id=user_id):
        [message] = outbox_of(delivery)
        assert delivery.provider_message_id in (message.message_id, message.idempotency_key)
        assert delivery.attempts == 2
        job = Job.objects.get(id=delivery.task_id)
        assert (job.status, job.attempts) == ("SUCCESSFUL", 2)
        assert job.errors[0]["exception_class_path"] == "jobs.exceptions.WorkerLost"


# Lookups that find nothing.


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/tasks/{uuid.uuid4()}",
        "/api/v1/tasks/not-a-task-id",
        "/api/v1/tasks/12345",
        "/api/v1/signup/999999/communications",
    ],
)
def test_unknown_or_malformed_ids_answer_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["errors"]["__all__"][0]["code"] == "not_found"


# The HTML page.


@pytest.mark.django_db
def test_the_signup_page_works_without_javascript_and_shows_the_deliveries(client):
    page = client.get("/signup/")
    assert page.status_code == 200
    assert b'<form method="post"' in page.content
    assert b"<script" not in page.content

    invalid = post_form(client, {"email": "x", "phone": "123", "password": "a"})
    assert invalid.status_code == 400
    assert b"E.164" in invalid.content

    payload = signup_payload()
    response = post_form(client, payload)
    assert response.status_code == 302
    status_page = client.get(response["Location"])
    assert status_page.status_code == 200
    assert payload["email"].encode() in status_page.content
    assert status_page.content.count(b'class="queued"') == 3
    assert b'http-equiv="refresh"' in status_page.content
    assert Job.objects.count() == JOBS_PER_SIGNUP
