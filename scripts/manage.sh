#!/usr/bin/env bash
# `python manage.py ...` with what ./scripts/run.sh uses: the .venv, DEBUG and the
# checkout's development secret key, and the embedded Postgres in .pgdata/ when
# DATABASE_URL is unset (stopped again afterwards unless it was running).
#   ./scripts/manage.sh createsuperuser     # a login for /admin/
#   ./scripts/manage.sh queues              # any management command
source "$(dirname "$0")/bootstrap.sh"
source "$(dirname "$0")/dev_env.sh"

stop_embedded_postgres_on_exit

python manage.py "$@"
