"""
A TCP relay that stands for the network between workers on other hosts and
Postgres: it forwards each connection on 127.0.0.1 to the server, every chunk
held back until half the round trip has passed since it arrived, each way.

Each direction has a reader, which stamps every chunk with the moment it is
due, and a writer, which sends the chunks in order once due. So the delay is
a latency, not a cap on throughput: a chunk that arrives while another waits
is due half a round trip after its own arrival, not after the other's send,
as on a real link.

`python -m bench.relay --to HOST:PORT --delay-ms 2` runs one in a process of
its own (its port on the first line of stdout), away from the benchmark's
enqueuer, so that neither slows the other's threads.
"""

import argparse
import contextlib
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

CHUNK = 65536


def connect(target: str) -> socket.socket:
    """A socket to HOST:PORT, or to a Unix socket's path."""
    if target.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(target)
        return sock
    host, port = target.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    # A chunk held back and then sent must not wait again for Nagle's ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Relay:
    """Listens on 127.0.0.1 and forwards each connection to target, delay_ms round trip added."""

    def __init__(self, target: str, delay_ms: float, port: int = 0) -> None:
        self.target = target
        self.half = delay_ms / 2000
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []

    def start(self) -> "Relay":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        for sock in [self.listener, *self._sockets]:
            # Shut down first: a socket closed while a thread blocks in its
            # recv() stays open until that returns.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> "Relay":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                server = connect(self.target)
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
                threading.Thread(target=self._read, args=(source, chunks), daemon=True).start()
                threading.Thread(target=self._write, args=(chunks, sink), daemon=True).start()

    def _read(self, source: socket.socket, chunks: queue.SimpleQueue) -> None:
        """Stamp each chunk with when it is due; an empty one is the end of the stream."""
        try:
            while data := source.recv(CHUNK):
                chunks.put((time.monotonic() + self.half, data))
        except OSError:
            pass
        finally:
            chunks.put((time.monotonic() + self.half, b""))

    @staticmethod
    def _write(chunks: queue.SimpleQueue, sink: socket.socket) -> None:
        """
        Send each chunk once due, with those behind it that are due by then:
        one send for a burst, and none held back for a chunk not due yet.
        """
        pending = None
        try:
            while True:
                due, data = pending or chunks.get()
                pending = None
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                batch = [data]
                while data:
                    try:
                        pending = chunks.get_nowait()
                    except queue.Empty:
                        break
                    if pending[0] > time.monotonic():
                        break
                    data, pending = pending[1], None
                    batch.append(data)
                sink.sendall(b"".join(batch))
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
        except OSError:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def running(target: str, delay_ms: float) -> Iterator[int]:
    """A relay in a process of its own for the duration of the block; its port."""
    command = [sys.executable, "-m", "bench.relay", f"--to={target}", f"--delay-ms={delay_ms}"]
    root = Path(__file__).resolve().parent.parent
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as process:
        try:
            yield int(process.stdout.readline())
        finally:
            process.terminate()
            process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay")
    parser.add_argument("--to", required=True, help="HOST:PORT, or a Unix socket's path")
    parser.add_argument("--delay-ms", type=float, required=True, help="round trip added")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    args = parser.parse_args(argv)
    relay = Relay(args.to, args.delay_ms, args.port).start()
    print(relay.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
