"""
The admin login against password guessing: a username is locked out from one
client address after five failures (django-axes, project/settings.py), and
only that pair is.
"""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from axes.utils import reset
from django.conf import settings as project_settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.utils import timezone

PASSWORD = "correct-horse-battery-staple-42"
WRONG = "tr0ub4dor&3"
ADDRESS = "203.0.113.7"
LIMIT = project_settings.AXES_FAILURE_LIMIT

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("ops", password=PASSWORD, is_staff=True)


@pytest.fixture
def other_staff() -> User:
    return User.objects.create_user("founder", password=PASSWORD, is_staff=True)


def log_in(
    password: str, username: str = "ops", address: str = ADDRESS, **headers: str
) -> HttpResponse:
    """One login at /admin/login/, from a client of its own (no cookies carried over)."""
    return Client().post(
        "/admin/login/",
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
        **headers,
    )


def refused_with_the_form(response: HttpResponse) -> bool:
    return response.status_code == 200 and b"Please enter the correct username" in response.content


def locked_out(response: HttpResponse) -> bool:
    return (
        response.status_code == 429
        and b"Too many failed logins" in response.content
        and b"15 minutes" in response.content
        and "sessionid" not in response.cookies
    )


def logged_in(response: HttpResponse) -> bool:
    return response.status_code == 302 and response.headers["Location"] == "/admin/"


def fail_until_locked(username: str = "ops", address: str = ADDRESS, **headers: str) -> None:
    """The failures that lock the pair out: the form each time, then the lockout page."""
    for _ in range(LIMIT - 1):
        assert refused_with_the_form(log_in(WRONG, username, address, **headers))
    assert locked_out(log_in(WRONG, username, address, **headers))


def test_after_five_failures_even_the_right_password_is_refused(staff):
    fail_until_locked()

    response = log_in(PASSWORD)

    assert locked_out(response), response.content
    assert AccessAttempt.objects.get().failures_since_start == LIMIT + 1


def test_the_lockout_holds_for_that_username_from_that_address_alone(staff, other_staff):
    fail_until_locked()

    assert logged_in(log_in(PASSWORD, address="198.51.100.9"))
    assert refused_with_the_form(log_in(WRONG, username="founder"))
    assert logged_in(log_in(PASSWORD, username="founder"))
    # A success elsewhere clears nothing for the locked-out pair.
    assert locked_out(log_in(PASSWORD))


def test_the_lockout_ends_after_the_cool_off(staff):
    fail_until_locked()
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=15, seconds=1))

    assert logged_in(log_in(PASSWORD))


def test_an_attempt_during_the_lockout_starts_the_cool_off_again(staff):
    fail_until_locked()
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=14))

    assert locked_out(log_in(PASSWORD))
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=14))
    assert locked_out(log_in(PASSWORD))


def test_an_operator_unlocks_a_username(staff):
    fail_until_locked()

    call_command("axes_reset_username", "ops")

    assert logged_in(log_in(PASSWORD))


def test_unlocking_through_the_api(staff):
    fail_until_locked()

    assert reset(ip=ADDRESS, username="ops") == 1

    assert logged_in(log_in(PASSWORD))


def test_a_success_before_the_limit_clears_the_count(staff):
    for _ in range(LIMIT - 1):
        assert refused_with_the_form(log_in(WRONG))
    assert logged_in(log_in(PASSWORD))

    for _ in range(LIMIT - 1):
        assert refused_with_the_form(log_in(WRONG))
    assert logged_in(log_in(PASSWORD))


def test_an_ipv6_client_is_locked_out_by_its_64(staff):
    fail_until_locked(address="2001:db8:1:2::1")

    assert locked_out(log_in(PASSWORD, address="2001:db8:1:2:ffff::9"))
    assert logged_in(log_in(PASSWORD, address="2001:db8:1:3::1"))


def test_a_client_without_an_address_is_still_counted(staff):
    fail_until_locked(address="")

    assert locked_out(log_in(PASSWORD, address=""))
    assert logged_in(log_in(PASSWORD))


def test_behind_a_trusted_proxy_the_client_is_the_forwarded_address(staff, settings):
    settings.TRUSTED_PROXIES = 1
    proxy = "10.0.0.2"

    fail_until_locked(address=proxy, HTTP_X_FORWARDED_FOR="203.0.113.7")

    assert AccessAttempt.objects.get().ip_address == "203.0.113.7"
    # A client cannot pick another address by sending the header itself.
    assert locked_out(
        log_in(PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="198.51.100.9, 203.0.113.7")
    )
    assert logged_in(log_in(PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="198.51.100.9"))


def test_logins_in_tests_keep_working(staff, client, admin_client):
    """force_login, and login() given the request the lockout needs."""
    assert admin_client.get("/admin/").status_code == 200
    assert client.login(request=HttpRequest(), username="ops", password=PASSWORD)
    assert client.get("/admin/").status_code == 200
