"""A database engine that is Django's PostgreSQL engine on the embedded server."""

from django.conf import settings
from django.db.backends.postgresql import base

from . import ensure_running


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict:
        params = super().get_connection_params()
        params["host"] = str(ensure_running(settings.EMBEDDED_POSTGRES_DIR))
        return params
