"""
The signup against abuse: text that is not Unicode, SMS pumping (many signups
from one client or to one number, premium-rate numbers, posts from other
sites), and callers reading signups and jobs that are not theirs.
"""

import json
import re
import subprocess
import sys
import uuid
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import Client
from django.utils import timezone

from accounts.models import Delivery, RateLimit
from accounts.reports import send_signup_report
from jobs.models import Job
from tests.conftest import BASE_DIR, wait_until
from tests.signup.test_signup import JOBS_PER_SIGNUP, STRONG_PASSWORD, post_form, signup_payload

NO_LIMITS = {"address": None, "phone": None, "texts": None}


def post_json(
    client: Client, payload: dict, address: str = "127.0.0.1", **headers: str
) -> HttpResponse:
    return client.post(
        "/api/v1/signup",
        json.dumps(payload),
        "application/json",
        REMOTE_ADDR=address,
        **headers,
    )


def nothing_created() -> bool:
    return not User.objects.exists() and not Job.objects.exists()


def phone(n: int) -> str:
    return f"+1415555{n:04d}"


# Text that is not Unicode.


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("password", "correct-horse\ud800battery-staple"),
        ("password", "\udfff"),
        ("email", "ada\udc00@example.com"),
        ("phone", "+1415555\ud8000123"),
    ],
)
def test_a_lone_surrogate_in_any_field_of_the_api_answers_400(client, field, value):
    response = post_json(client, signup_payload(**{field: value}))
    assert response.status_code == 400, response.content
    [error] = response.json()["errors"][field]
    assert error["code"] == "invalid_unicode"
    assert "not valid Unicode" in error["message"]
    assert nothing_created()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "encoded"),
    [
        # The UTF-8 form of a surrogate, which UTF-8 forbids.
        ("password", b"correct-horse%ED%A0%80battery-staple"),
        # Latin-1, not UTF-8, raw and percent-encoded.
        ("password", b"correct-horse-battery-stapl\xe9"),
        ("email", b"ad%E9@example.com"),
        ("phone", b"%FF%2B14155550123"),
    ],
)
def test_bytes_that_are_not_utf8_in_any_field_of_the_form_answer_400(client, field, encoded):
    fields = {name: value for name, value in signup_payload().items() if name != field}
    body = f"{urlencode(fields)}&{field}=".encode() + encoded
    response = client.post("/signup/", body, "application/x-www-form-urlencoded")
    assert response.status_code == 400, response.content
    assert b"not valid Unicode" in response.content
    assert nothing_created()


@pytest.mark.django_db
def test_the_form_takes_urlencoded_bodies_alone(client):
    response = client.post("/signup/", signup_payload())  # multipart/form-data
    assert response.status_code == 415
    assert b"application/x-www-form-urlencoded" in response.content
    assert nothing_created()


# Numbers that are not mobile.


@pytest.mark.django_db
@pytest.mark.parametrize(
    "number",
    [
        "+19005550123",  # US premium rate
        "+41900123456",  # Swiss premium rate
        "+18005550123",  # US toll free
        "+442079460958",  # London landline
    ],
)
def test_a_number_that_is_not_mobile_is_refused(client, number):
    response = post_json(client, signup_payload(phone=number))
    assert response.status_code == 400
    assert response.json()["errors"]["phone"][0]["code"] == "not_mobile"
    assert nothing_created()


# Posts from other sites' pages.


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content_type", "headers", "status", "code"),
    [
        ("text/plain", {"HTTP_ORIGIN": "https://pump.example"}, 403, "cross_origin"),
        ("application/json", {"HTTP_ORIGIN": "https://pump.example"}, 403, "cross_origin"),
        ("application/json", {"HTTP_ORIGIN": "null"}, 403, "cross_origin"),
        ("text/plain", {"HTTP_SEC_FETCH_SITE": "cross-site"}, 403, "cross_origin"),
        ("application/json", {"HTTP_SEC_FETCH_SITE": "same-site"}, 403, "cross_origin"),
        ("text/plain", {}, 415, "unsupported_media_type"),
        ("application/x-www-form-urlencoded", {}, 415, "unsupported_media_type"),
    ],
)
def test_a_cross_origin_or_non_json_post_to_the_api_is_refused(
    client, content_type, headers, status, code
):
    response = client.post("/api/v1/signup", json.dumps(signup_payload()), content_type, **headers)
    assert response.status_code == status
    assert response.json()["errors"]["__all__"][0]["code"] == code
    assert nothing_created()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, an app: no Origin, no Sec-Fetch-Site
        {"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "same-origin"},
        {"HTTP_SEC_FETCH_SITE": "none"},
    ],
)
def test_a_same_origin_or_non_browser_json_post_is_accepted(client, headers):
    assert post_json(client, signup_payload(), **headers).status_code == 201


# Rate limits.


@pytest.mark.django_db
def test_200_signups_from_one_client_create_the_limit_and_another_client_is_not_affected(
    client, settings
):
    settings.SIGNUP_RATE_LIMITS = {**NO_LIMITS, "address": (5, 60)}
    statuses = []
    for n in range(200):
        response = post_json(client, signup_payload(phone=phone(n)), "203.0.113.7")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert 1 <= int(response["Retry-After"]) <= 60
            assert response.json()["errors"]["__all__"][0]["code"] == "rate_limited"
    assert statuses == [201] * 5 + [429] * 195
    assert User.objects.count() == 5
    assert Job.objects.count() == 5 * JOBS_PER_SIGNUP
    assert Delivery.objects.count() == 15

    other = post_json(Client(), signup_payload(phone=phone(999)), "198.51.100.9")
    assert other.status_code == 201
    assert User.objects.count() == 6


@pytest.mark.django_db
def test_signups_to_one_number_are_limited_whatever_the_address(client, settings):
    settings.SIGNUP_RATE_LIMITS = {**NO_LIMITS, "phone": (2, 3600)}
    statuses = [
        post_json(client, signup_payload(phone="+1 415 555 0123"), f"192.0.2.{n}").status_code
        for n in range(1, 6)
    ]
    assert statuses == [201, 201, 429, 429, 429]
    assert post_json(client, signup_payload(phone=phone(7)), "192.0.2.9").status_code == 201
    assert Job.objects.count() == 3 * JOBS_PER_SIGNUP


@pytest.mark.django_db
def test_texts_have_a_ceiling_over_all_numbers_and_addresses(client, settings):
    settings.SIGNUP_RATE_LIMITS = {**NO_LIMITS, "texts": (3, 60)}
    statuses = [
        post_json(client, signup_payload(phone=phone(n)), f"192.0.2.{n}").status_code
        for n in range(1, 6)
    ]
    assert statuses == [201, 201, 201, 429, 429]
    assert User.objects.count() == 3


@pytest.mark.django_db
def test_the_html_form_is_limited_too_and_says_when_to_come_back(client, settings):
    settings.SIGNUP_RATE_LIMITS = {**NO_LIMITS, "address": (1, 600)}
    assert post_form(client, signup_payload()).status_code == 302
    refused = post_form(client, signup_payload(phone=phone(1)))
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 600
    # In words a person reads ("10 minutes"), not a count of seconds.
    assert re.search(r"Too many signups.*try again in (10|9)\s+minutes", refused.content.decode())
    assert User.objects.count() == 1
    assert Job.objects.count() == JOBS_PER_SIGNUP


@pytest.mark.django_db
def test_a_limit_has_room_again_once_its_oldest_signup_leaves_the_window(client, settings):
    settings.SIGNUP_RATE_LIMITS = {**NO_LIMITS, "address": (2, 60)}
    now = timezone.now()
    key = "signup:address:192.0.2.1"
    RateLimit.objects.create(
        key=key, hits=[now - timedelta(seconds=45), now - timedelta(seconds=30)], expires_at=now
    )
    refused = post_json(client, signup_payload(), "192.0.2.1")
    assert refused.status_code == 429
    assert 14 <= int(refused["Retry-After"]) <= 16
    RateLimit.objects.filter(key=key).update(
        hits=[now - timedelta(seconds=90), now - timedelta(seconds=30)]
    )
    assert post_json(client, signup_payload(), "192.0.2.1").status_code == 201


@pytest.mark.django_db
def test_a_signup_refused_for_its_email_counts_for_nothing(client, settings):
    settings.SIGNUP_RATE_LIMITS = {**NO_LIMITS, "address": (2, 60)}
    assert post_json(client, signup_payload(email="ada@example.com")).status_code == 201
    for _ in range(3):
        assert post_json(client, signup_payload(email="ada@example.com")).status_code == 400
    assert post_json(client, signup_payload(phone=phone(1))).status_code == 201
    assert post_json(client, signup_payload(phone=phone(2))).status_code == 429


@pytest.mark.django_db
def test_x_forwarded_for_counts_only_behind_trusted_proxies(client, settings):
    settings.SIGNUP_RATE_LIMITS = {**NO_LIMITS, "address": (1, 60)}

    def sign_up_via_proxy(forwarded_for: str, n: int) -> int:
        payload = signup_payload(phone=phone(n))
        return post_json(client, payload, "10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded_for)

    # Not trusted: the header is the client's own to vary, the proxy is the client.
    assert sign_up_via_proxy("192.0.2.1", 1).status_code == 201
    assert sign_up_via_proxy("192.0.2.2", 2).status_code == 429
    settings.TRUSTED_PROXIES = 1
    # Trusted: the entry the proxy added, whatever the client put before it.
    assert sign_up_via_proxy("6.6.6.6, 198.51.100.1", 3).status_code == 201
    assert sign_up_via_proxy("7.7.7.7, 198.51.100.1", 4).status_code == 429
    assert sign_up_via_proxy("198.51.100.2", 5).status_code == 201


@pytest.mark.django_db
def test_an_ipv6_client_is_counted_by_its_64(client, settings):
    settings.SIGNUP_RATE_LIMITS = {**NO_LIMITS, "address": (1, 60)}
    assert post_json(client, signup_payload(), "2001:db8:1:2::1").status_code == 201
    another_in_the_64 = post_json(client, signup_payload(phone=phone(1)), "2001:db8:1:2:ffff::9")
    assert another_in_the_64.status_code == 429
    next_64 = post_json(client, signup_payload(phone=phone(2)), "2001:db8:1:3::1")
    assert next_64.status_code == 201


# Signups from several processes at once, each with its own connection: the
# limit is kept in Postgres, so it holds across them.
RACER = """
import json, os, sys, time
from pathlib import Path

import django

django.setup()
from django.conf import settings
from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()
settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
number, count, go = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
client = Client()
client.get("/signup/")  # everything imported and connected before the go
Path(f"{go}.ready-{number}").touch()
while not go.exists():
    time.sleep(0.001)
statuses = []
for n in range(count):
    payload = {
        "email": f"racer-{number}-{n}@example.com",
        "phone": f"+1415555{number:02d}{n:02d}",
        "password": sys.argv[4],
    }
    response = client.post(
        "/api/v1/signup", json.dumps(payload), "application/json", REMOTE_ADDR="203.0.113.50"
    )
    statuses.append(response.status_code)
print(json.dumps(statuses))
"""


def test_signups_racing_from_several_processes_create_no_more_than_the_limit(worker_env, tmp_path):
    env = {
        **worker_env,
        "SIGNUP_LIMIT_PER_ADDRESS": "7/600",
        "SIGNUP_LIMIT_PER_PHONE": "off",
        "SIGNUP_LIMIT_TEXTS": "off",
    }
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(number), "10", str(go), STRONG_PASSWORD],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(4)
    ]
    try:

        def all_ready() -> bool:
            """every process is ready to sign up"""
            for process in processes:
                if process.poll() is not None:
                    raise AssertionError(process.stderr.read())
            return all(tmp_path.joinpath(f"go.ready-{n}").exists() for n in range(4))

        wait_until(all_ready, timeout=60)
        go.touch()
        statuses = []
        for process in processes:
            output, errors = process.communicate(timeout=120)
            assert process.returncode == 0, errors
            statuses += json.loads(output)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert sorted(statuses) == [201] * 7 + [429] * 33
    assert User.objects.count() == 7
    assert Job.objects.count() == 7 * JOBS_PER_SIGNUP


# Who may see a signup and its jobs.


def other_callers() -> dict[str, Client]:
    """An anonymous caller, a user who signed up in their own session, a logged-in user."""
    signed_up_elsewhere = Client()
    response = post_json(signed_up_elsewhere, signup_payload(phone=phone(1)), "192.0.2.77")
    assert response.status_code == 201
    logged_in = Client()
    logged_in.force_login(User.objects.get(id=response.json()["user_id"]))
    return {"anonymous": Client(), "signed up": signed_up_elsewhere, "logged in": logged_in}


def signup_urls(body: dict) -> list[str]:
    return [body["status_url"], body["communications_url"], *body["task_urls"].values()]


@pytest.mark.django_db
def test_a_signups_status_and_jobs_answer_404_to_anyone_but_its_user_and_staff(
    client, admin_client
):
    body = post_json(client, signup_payload()).json()
    urls = signup_urls(body)
    assert urls == [
        f"/signup/{body['user_id']}/",
        f"/api/v1/signup/{body['user_id']}/communications",
        *[f"/api/v1/tasks/{task_id}" for task_id in body["task_ids"].values()],
    ]
    for name, other in other_callers().items():
        for url in urls:
            response = other.get(url)
            assert response.status_code == 404, (name, url)
            assert b"example.com" not in response.content
    # The same 404 as an id that does not exist.
    anonymous = Client()
    unknown = f"/api/v1/signup/{body['user_id'] + 1000}/communications"
    assert (
        anonymous.get(body["communications_url"]).json()["errors"]["__all__"][0]["code"]
        == anonymous.get(unknown).json()["errors"]["__all__"][0]["code"]
        == "not_found"
    )
    for viewer in (client, admin_client):
        for url in urls:
            assert viewer.get(url).status_code == 200, url


@pytest.mark.django_db
def test_a_logged_in_user_sees_their_own_signup_from_another_browser(client):
    body = post_json(client, signup_payload()).json()
    elsewhere = Client()
    elsewhere.force_login(User.objects.get(id=body["user_id"]))
    for url in signup_urls(body):
        assert elsewhere.get(url).status_code == 200, url


@pytest.mark.django_db
def test_a_job_that_is_no_signups_is_shown_to_staff_alone(client, admin_client):
    post_json(client, signup_payload())
    report = send_signup_report.enqueue()
    url = f"/api/v1/tasks/{report.id}"
    assert client.get(url).status_code == 404
    assert Client().get(url).status_code == 404
    assert admin_client.get(url).json()["task"] == "accounts.reports.send_signup_report"


@pytest.mark.django_db
def test_the_form_signup_lets_its_session_see_the_status_page_alone(client):
    payload = signup_payload()
    response = post_form(client, payload)
    assert response.status_code == 302
    assert payload["email"].encode() in client.get(response["Location"]).content
    assert Client().get(response["Location"]).status_code == 404


@pytest.mark.django_db
def test_unknown_task_ids_and_other_users_task_ids_answer_alike(client):
    body = post_json(client, signup_payload()).json()
    anonymous = Client()
    task_id = body["task_ids"]["sms"]
    theirs = anonymous.get(f"/api/v1/tasks/{task_id}")
    missing = anonymous.get(f"/api/v1/tasks/{uuid.uuid4()}")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["errors"]["__all__"][0]["code"] == "not_found"
    assert missing.json()["errors"]["__all__"][0]["code"] == "not_found"
