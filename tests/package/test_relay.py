"""
The relay of the benchmark's remote phase, which stands for the network
between workers and Postgres: the delay it adds, the order it keeps, and
chunks in flight delayed together as on a link.
"""

import contextlib
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from bench import relay


@pytest.fixture
def echo() -> Iterator[str]:
    """A server on 127.0.0.1 that sends back whatever it gets; its HOST:PORT."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer(connection: socket.socket) -> None:
        with connection:
            while data := connection.recv(65536):
                connection.sendall(data)

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=answer, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the connection closed early"
        data += chunk
    return data


def round_trips_ms(target: str, count: int = 30) -> list[float]:
    times = []
    with relay.connect(target) as sock:
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(b"x" * 100)
            receive(sock, 100)
            times.append((time.perf_counter() - started) * 1000)
    return times


def test_the_relay_adds_its_round_trip_and_little_more(echo):
    direct = round_trips_ms(echo)
    with relay.Relay(echo, delay_ms=2.0) as relayed:
        through = round_trips_ms(f"127.0.0.1:{relayed.port}")
    # Each way a chunk is held until half the round trip after it arrived.
    assert min(through) >= 2.0
    assert 2.0 <= statistics.median(through) - statistics.median(direct) <= 2.0 + 5.0


def test_a_megabyte_arrives_whole_and_in_order(echo):
    payload = os.urandom(1 << 20)
    with (
        relay.Relay(echo, delay_ms=2.0) as relayed,
        relay.connect(f"127.0.0.1:{relayed.port}") as sock,
    ):
        sender = threading.Thread(
            target=lambda: [
                sock.sendall(payload[n : n + 4096]) for n in range(0, len(payload), 4096)
            ]
        )
        sender.start()
        assert receive(sock, len(payload)) == payload
        sender.join()


def test_chunks_in_flight_are_delayed_together_not_one_after_another(echo):
    # Ten messages 1 ms apart through a 20 ms relay: the last is back about
    # 20 ms after it was sent, not after ten delays one behind the other.
    with (
        relay.Relay(echo, delay_ms=20.0) as relayed,
        relay.connect(f"127.0.0.1:{relayed.port}") as sock,
    ):
        started = time.perf_counter()
        for n in range(10):
            sock.sendall(bytes([n]) * 10)
            time.sleep(0.001)
        assert receive(sock, 100) == b"".join(bytes([n]) * 10 for n in range(10))
        elapsed_ms = (time.perf_counter() - started) * 1000
    assert 20.0 <= elapsed_ms < 80.0


@pytest.mark.processes
def test_a_relay_runs_in_a_process_of_its_own(echo):
    with relay.running(echo, 2.0) as port:
        assert min(round_trips_ms(f"127.0.0.1:{port}", count=5)) >= 2.0
