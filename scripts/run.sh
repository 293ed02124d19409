#!/usr/bin/env bash
# Run the whole system from the Procfile: web on http://127.0.0.1:8000, worker, scheduler.
# With DATABASE_URL unset, on the embedded Postgres in .pgdata/ (stopped again on exit).
source "$(dirname "$0")/bootstrap.sh"
source "$(dirname "$0")/dev_env.sh"

python manage.py migrate --noinput
echo "Starting web, worker and scheduler; the site is at http://127.0.0.1:8000 (Ctrl-C stops all)."
honcho start "$@" &
honcho_pid=$!
# Ctrl-C reaches honcho itself; a SIGTERM sent to this script alone is passed on.
# Either way the database is stopped only after every process has exited, so a
# worker that is finishing its jobs keeps it until the end.
trap 'kill -TERM "$honcho_pid" 2>/dev/null || true' TERM INT
while kill -0 "$honcho_pid" 2>/dev/null; do
    wait "$honcho_pid" || true
done
if [ -z "${DATABASE_URL:-}" ]; then
    python -m project.embedded_postgres stop
fi
