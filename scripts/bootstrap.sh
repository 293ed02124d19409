# Sourced by scripts/run.sh and scripts/test.sh: find Python 3.12 or newer,
# create .venv beside manage.py, and install requirements.txt whenever it or
# pyproject.toml (the package's own dependencies) changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python_ok() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3.13 python3.12 python3 python; do
        if python_ok "$candidate"; then
            "$candidate" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    # pyenv installs versions that its shims only run when selected: look at them directly.
    if command -v pyenv >/dev/null 2>&1; then
        for candidate in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.[0-9]+\.[0-9]+$' | sort -rV); do
            candidate="$(pyenv root)/versions/$candidate/bin/python"
            if python_ok "$candidate"; then
                echo "$candidate"
                return 0
            fi
        done
    fi
    return 1
}

if ! python_ok .venv/bin/python; then
    base_python=$(find_python) || {
        echo "This project needs Python 3.12 or newer, and none was found." >&2
        echo "Install one (or set PYTHON=/path/to/python3.12) and run this again." >&2
        exit 1
    }
    echo "Creating .venv with $base_python"
    rm -rf .venv
    "$base_python" -m venv .venv
fi

requirements_hash=$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("requirements.txt", "rb").read() + open("pyproject.toml", "rb").read()).hexdigest())')
if [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$requirements_hash" ]; then
    echo "Installing requirements.txt into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
    echo "$requirements_hash" > .venv/.requirements.sha256
fi

export PATH="$PWD/.venv/bin:$PATH"
export PYTHONUNBUFFERED=1

# Called by scripts that may start the embedded Postgres (any connection
# does, with DATABASE_URL unset): stop it again when the script exits, unless
# it was running before (./scripts/run.sh may be using it).
stop_embedded_postgres_on_exit() {
    local pgdata="${EMBEDDED_POSTGRES_DIR:-$PWD/.pgdata}"
    if [ -z "${DATABASE_URL:-}" ] && [ ! -e "$pgdata/postmaster.pid" ]; then
        trap 'python -m project.embedded_postgres stop >/dev/null' EXIT
    fi
}
