# Sourced by scripts/run.sh and scripts/manage.sh, after bootstrap.sh.
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
