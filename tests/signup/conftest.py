"""Fixtures of the signup's tests."""

import pytest


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Hashing with Django's default takes a good part of a second, per signup."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def signup_env(worker_env, tmp_path) -> dict[str, str]:
    """Worker settings with short heartbeats and backoff, and e-mail kept in the outbox."""
    return {
        **worker_env,
        "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
        "DJANGO_EMAIL_BACKEND": "accounts.outbox.OutboxEmailBackend",
        "SIGNUP_TEST_STATE_DIR": str(tmp_path),
    }
