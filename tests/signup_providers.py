"""Providers that misbehave on purpose, for the signup tests' worker subprocesses."""

import os
import time
from pathlib import Path

from accounts.providers import (
    EmailProvider,
    LocalPushProvider,
    LocalSMSProvider,
    Message,
    ProviderError,
    ProviderRejected,
)


class FailsTwiceSMSProvider(LocalSMSProvider):
    """
    Unavailable for the first two calls of each message, then fine.

    Calls are counted in files under SIGNUP_TEST_STATE_DIR, since each
    attempt may run in another process.
    """

    def transmit(self, message: Message) -> str:
        calls = Path(os.environ["SIGNUP_TEST_STATE_DIR"]) / f"calls-{message.idempotency_key}"
        with calls.open("a") as file:
            file.write("call\n")
        count = len(calls.read_text().splitlines())
        if count <= 2:
            raise ProviderError(f"provider unavailable (call {count})")
        return super().transmit(message)


class RejectingPushProvider(LocalPushProvider):
    def transmit(self, message: Message) -> str:
        raise ProviderRejected("no device registered for this user")


class HangAfterSend:
    """
    Sends, then hangs before the caller can record "sent": the crash window
    between a provider taking a message and the sender knowing it.
    """

    def transmit(self, message: Message) -> str:
        message_id = super().transmit(message)
        time.sleep(60)
        return message_id


class HangingEmailProvider(HangAfterSend, EmailProvider):
    pass


class HangingSMSProvider(HangAfterSend, LocalSMSProvider):
    pass


class HangingPushProvider(HangAfterSend, LocalPushProvider):
    pass


class CountingSMSProvider(LocalSMSProvider):
    """Counts its calls in this process, for tests that call the tasks in-process."""

    calls: list[str] = []

    def transmit(self, message: Message) -> str:
        self.calls.append(message.idempotency_key)
        return super().transmit(message)
