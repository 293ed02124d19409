#!/usr/bin/env bash
# Run the whole test suite (arguments go to pytest).
# With DATABASE_URL unset, on the embedded Postgres in .pgdata/.
source "$(dirname "$0")/bootstrap.sh"

python -m pytest "$@"
