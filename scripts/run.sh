#!/usr/bin/env bash
# Run the whole system from the Procfile: web on http://127.0.0.1:8000, worker, scheduler.
# With DATABASE_URL unset, on the embedded Postgres in .pgdata/ (stopped again on exit).
source "$(dirname "$0")/bootstrap.sh"

# The settings default to production; on this machine, DEBUG (plain HTTP, e-mail
# on the console) with a secret key of this checkout's own, made on first run
# and kept in var/ (git-ignored) so that sessions survive a restart.
export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
    if [ ! -s var/dev-secret-key ]; then
        mkdir -p var
        (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(50))' > var/dev-secret-key)
    fi
    DJANGO_SECRET_KEY="$(cat var/dev-secret-key)"
    export DJANGO_SECRET_KEY
fi

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
