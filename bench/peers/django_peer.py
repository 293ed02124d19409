"""What the two Django peers share: settings, migrations, workers run by `django-admin`."""

import os
import sys

from bench import driver


class DjangoPeer(driver.Queue):
    """A peer that is a Django app: bench.peers.django_settings, with BENCH_PEER naming it."""

    peer = ""

    def prepare(self) -> None:
        os.environ.update(self.worker_env())
        os.environ["BENCH_DSN"] = self.options.dsn
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        self.setup()

    def setup(self) -> None:
        """Import what enqueues, once Django is set up."""

    def django_command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "django", *args]

    def worker_env(self) -> dict[str, str]:
        return {"DJANGO_SETTINGS_MODULE": "bench.peers.django_settings", "BENCH_PEER": self.peer}
