"""
The peers' virtualenvs, under bench/.peers/<name> (git-ignored).

Made on first use with the Python the peer asks for, and reinstalled whenever
its pinned requirements change, the way scripts/bootstrap.sh keeps .venv.
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from bench.peers import Peer

PEERS_DIR = Path(__file__).resolve().parent / ".peers"


class SetupError(Exception):
    """A peer's virtualenv could not be made."""


def find_python(version: str) -> str:
    """
    An interpreter of the given version: $BENCH_PEER_PYTHON, then pythonX.Y on
    the PATH, then pyenv's installed versions (whose shims run only the one
    selected, so they are looked at directly).
    """
    candidates = [os.environ.get("BENCH_PEER_PYTHON"), shutil.which(f"python{version}")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run(
            [pyenv, "root"], capture_output=True, text=True, check=False
        ).stdout.strip()
        versions = sorted(Path(root, "versions").glob(f"{version}.*"), reverse=True)
        candidates += [str(path / "bin" / "python") for path in versions]
    for candidate in filter(None, candidates):
        found = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode == 0 and found.stdout.strip() == version:
            return candidate
    raise SetupError(
        f"No Python {version} found for the peers; set BENCH_PEER_PYTHON=/path/to/python{version}."
    )


def ensure(peer: Peer, log=print) -> Path:
    """The peer's virtualenv Python, made or brought up to date first."""
    home = PEERS_DIR / peer.name
    python = home / "bin" / "python"
    wanted = hashlib.sha256("\n".join(peer.requirements).encode()).hexdigest()
    stamp = home / ".requirements.sha256"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        log(f"Creating the virtualenv of {peer.name} in {home}")
        run([find_python(peer.python), "-m", "venv", str(home)])
    log(f"Installing {', '.join(peer.requirements)}")
    run([str(python), "-m", "pip", "install", "--quiet", *peer.requirements])
    stamp.write_text(wanted)
    return python


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SetupError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
