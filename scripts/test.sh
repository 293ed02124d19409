#!/usr/bin/env bash
# Run the whole test suite (arguments go to pytest).
# With DATABASE_URL unset, on the embedded Postgres in .pgdata/, which the
# suite starts; it is stopped again at the end unless it was running before
# (./scripts/run.sh may be using it).
source "$(dirname "$0")/bootstrap.sh"

stop_embedded_postgres_on_exit

python -m pytest "$@"
