#!/usr/bin/env bash
# Run the whole system from the Procfile: web on http://127.0.0.1:8000, worker, scheduler.
# With DATABASE_URL unset, on the embedded Postgres in .pgdata/ (stopped again on exit).
source "$(dirname "$0")/bootstrap.sh"

python manage.py migrate --noinput
if [ -z "${DATABASE_URL:-}" ]; then
    trap 'python -m project.embedded_postgres stop' EXIT
fi
echo "Starting web, worker and scheduler; the site is at http://127.0.0.1:8000 (Ctrl-C stops all)."
honcho start "$@"
