"""
How fast the job list and the dashboard answer on a table of 1,000,000 jobs.

    python bench/admin_speed.py [--rows 1000000] [--repeat 10]

Fills a database of its own (jobs_admin_speed, on the embedded Postgres or the
server of DATABASE_URL) with one INSERT ... SELECT FROM generate_series: a week
of history, mostly SUCCESSFUL, 2% FAILED, 1% CANCELLED, a recent backlog of
READY jobs and a few RUNNING ones; one job in 100 tagged, with an account in
its meta. The rows are kept between runs. Each page is
then requested through Django's test client, logged in as a superuser, and its
median and slowest time are printed. Exits 1 when the list, the dashboard, the
statistics per task or the tag filter take 300 ms or more at the median.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# The test client speaks plain HTTP, which production settings redirect.
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ["TEST_DATABASE_NAME"] = "jobs_admin_speed"

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

BUDGET_MS = 300.0

FILL = """
INSERT INTO jobs_job (id, backend, task_path, queue, priority, args, kwargs, status, run_at,
    attempts, max_attempts, enqueued_at, started_at, last_attempted_at, finished_at,
    worker_ids, return_value, errors, tags, meta)
SELECT
    (lpad(to_hex((extract(epoch FROM t.enqueued_at) * 1000)::bigint), 12, '0')
        || '7' || substr(md5(i::text), 1, 3) || '8' || substr(md5(i::text), 5, 15))::uuid,
    'default',
    (ARRAY['accounts.tasks.send_welcome_email', 'accounts.tasks.send_text_message',
           'accounts.tasks.send_app_notification', 'accounts.reports.send_signup_report',
           'tests.tasks.add'])[1 + i %% 5],
    CASE WHEN i %% 10 < 6 THEN 'default' WHEN i %% 10 < 9 THEN 'communications' ELSE 'reports' END,
    0, jsonb_build_array(i), '{}', s.status, t.enqueued_at,
    CASE WHEN s.status = 'READY' THEN 0 ELSE 1 END, 3, t.enqueued_at,
    CASE WHEN s.status IN ('READY', 'CANCELLED') THEN NULL
         ELSE t.enqueued_at + interval '40 milliseconds' END,
    CASE WHEN s.status IN ('READY', 'CANCELLED') THEN NULL
         ELSE t.enqueued_at + interval '40 milliseconds' END,
    CASE WHEN s.status IN ('READY', 'RUNNING') THEN NULL
         ELSE t.enqueued_at + interval '290 milliseconds' END,
    CASE WHEN s.status IN ('READY', 'CANCELLED') THEN '{}'::varchar[]
         ELSE ARRAY['bench-host-1-abcdef']::varchar[] END,
    CASE WHEN s.status = 'SUCCESSFUL' THEN to_jsonb(i) END,
    CASE WHEN s.status = 'FAILED' THEN jsonb_build_array(jsonb_build_object(
        'exception_class_path', 'builtins.ValueError', 'message', 'bench',
        'traceback', 'Traceback (most recent call last): ...', 'attempt', 1,
        'at', extract(epoch FROM t.enqueued_at))) ELSE '[]'::jsonb END,
    CASE WHEN i %% 100 = 0 THEN ARRAY['bench-tag'] ELSE '{}' END::varchar[],
    CASE WHEN i %% 100 = 0 THEN jsonb_build_object('account', i %% 500) ELSE '{}' END
FROM generate_series(1, %(rows)s) AS i
CROSS JOIN LATERAL (
    SELECT now() - (%(rows)s - i) * interval '7 days' / %(rows)s AS enqueued_at
) AS t
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN i > %(rows)s - 5000 THEN 'READY'
        WHEN i > %(rows)s - 5020 THEN 'RUNNING'
        WHEN i %% 50 = 7 THEN 'FAILED'
        WHEN i %% 100 = 13 THEN 'CANCELLED'
        ELSE 'SUCCESSFUL'
    END AS status
) AS s
"""


def fill(rows: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(*) FILTER (WHERE tags <> '{}') FROM jobs_job")
        if cursor.fetchone() == (rows, rows // 100):
            print(f"jobs_job already holds {rows:,} rows")
            return
        print(f"Inserting {rows:,} jobs ...", flush=True)
        started = time.perf_counter()
        cursor.execute("TRUNCATE jobs_job")
        cursor.execute(FILL, {"rows": rows})
        cursor.execute("VACUUM ANALYZE jobs_job")
        print(f"  done in {time.perf_counter() - started:.1f} s")


def timed(client: Client, url: str, repeat: int, **headers: str) -> tuple[float, float]:
    for _ in range(2):
        assert client.get(url, headers=headers).status_code == 200, url
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, url
    return statistics.median(times), max(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=10)
    options = parser.parse_args()

    setup_test_environment()
    connection.creation.create_test_db(verbosity=0, keepdb=True)
    fill(options.rows)

    settings.JOBS_METRICS_TOKEN = "bench"
    admin, _ = User.objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id::text FROM jobs_job ORDER BY id DESC OFFSET 5000 LIMIT 1")
        some_id = cursor.fetchone()[0]

    pages = [
        ("job list", "/admin/jobs/job/", True),
        ("job list, page 100", "/admin/jobs/job/?p=100", False),
        ("FAILED jobs", "/admin/jobs/job/?status__exact=FAILED", False),
        ("READY jobs", "/admin/jobs/job/?status__exact=READY", False),
        ("queue reports, last 24 h", "/admin/jobs/job/?queue=reports&enqueued=24h", False),
        ("task filter", "/admin/jobs/job/?task=tests.tasks.add", False),
        ("search by id prefix", f"/admin/jobs/job/?q={some_id[:13]}", False),
        ("search by full id", f"/admin/jobs/job/?q={some_id}", False),
        ("job detail", f"/admin/jobs/job/{some_id}/change/", False),
        ("dashboard", "/admin/jobs/job/dashboard/", True),
        ("statistics per task", "/admin/jobs/job/dashboard/tasks/", True),
        ("tag filter", "/admin/jobs/job/?tag=bench-tag", True),
        ("meta search", "/admin/jobs/job/?q=meta:account%3D100", False),
        ("prometheus /metrics", "/metrics", False),
    ]
    print(f"\n{'page':<28} {'median':>9} {'slowest':>9}   ({options.repeat} requests each)")
    over_budget = []
    for name, url, budgeted in pages:
        headers = {"Authorization": "Bearer bench"} if url == "/metrics" else {}
        median, slowest = timed(client, url, options.repeat, **headers)
        flag = "  over budget" if budgeted and median >= BUDGET_MS else ""
        print(f"{name:<28} {median:>6.1f} ms {slowest:>6.1f} ms{flag}")
        if flag:
            over_budget.append(name)
    return 1 if over_budget else 0


if __name__ == "__main__":
    sys.exit(main())
