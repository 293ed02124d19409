"""A TCP forwarder on 127.0.0.1 to the test's Postgres, opened and closed at will."""

import socket
import threading
from pathlib import Path
from urllib.parse import quote

from django.db import connection


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def connect_to_postgres() -> socket.socket:
    """A socket to the test database's server: TCP, or the embedded server's Unix socket."""
    params = connection.get_connection_params()
    host, port = params.get("host") or "/var/run/postgresql", int(params.get("port") or 5432)
    if host.startswith("/"):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.connect(str(Path(host) / f".s.PGSQL.{port}"))
        return server
    return socket.create_connection((host, port))


def proxied_database_url(port: int) -> str:
    """The test database's URL for subprocesses, reached through 127.0.0.1:port."""
    params = connection.get_connection_params()
    password = f":{quote(params['password'], safe='')}" if params.get("password") else ""
    user = params.get("user") or "postgres"
    return f"postgres://{user}{password}@127.0.0.1:{port}/{params['dbname']}"


class PostgresProxy:
    """
    Listens on 127.0.0.1:port and forwards each connection to Postgres: a
    database that a process can be pointed at before it answers, and that
    answers once the proxy opens.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Stop listening and cut every forwarded connection, as a server that goes away would."""
        for sock in [self._listener, *self._sockets]:
            if sock is None:
                continue
            # A socket closed while another thread blocks in its recv() stays
            # open until that returns: shut it down first.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._sockets = []

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = connect_to_postgres()
            self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
