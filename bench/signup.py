"""
Signup latency, communications sent inline against sent in the background.

    ./scripts/bench.sh --signup [--rate 1] [--seconds 30] [--provider-delay 0.3-1.0]

Starts the real web server (`runserver --noreload`, threaded, DEBUG off) and
one `runworker` on a database of its own (bench_signup), warmed up by two
signups, with every provider
taking SIGNUP_PROVIDER_DELAY seconds, as real ones do. Then it posts signups
to /api/v1/signup at a steady rate, each request on its own thread at its
scheduled time (an open loop: a slow answer does not slow the rate), first
with the messages sent in the background, then with `?inline=1`. For each
way: the response time, and the time from the request's start until all
three deliveries of the signup are recorded as sent (read from
accounts_delivery).

Django hashes the password with PBKDF2 (1,500,000 iterations in Django 6.1),
which takes about half a second of a core on this kind of machine: that floor
is in both ways' figures, and it is what limits the rate two cores can take,
so the default rate is low. The hash time is measured and reported beside.
"""

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import database
from bench.driver import run_checked
from bench.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PASSWORD = "a long and unusual pass phrase 7"

DELIVERED = """
SELECT user_id, max(extract(epoch FROM sent_at))
FROM accounts_delivery
GROUP BY user_id
HAVING count(*) FILTER (WHERE status = 'sent') = 3
"""


@dataclass
class Request:
    started: float
    seconds: float | None = None
    status: int | None = None
    user_id: int | None = None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench.sh --signup",
        description="Signup latency against the real web server, inline and in the background.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rate", type=float, default=1.0, help="signups per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each way runs")
    parser.add_argument(
        "--provider-delay", default="0.3-1.0", help="SIGNUP_PROVIDER_DELAY, seconds or a range"
    )
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=8,
        help="runworker --concurrency: sending is waiting, so more executors than cores",
    )
    parser.add_argument(
        "--worker-threads",
        type=int,
        default=1,
        help="runworker --threads: jobs at once in each executor process",
    )
    parser.add_argument("--port", type=int, default=8765, help="the web server's port")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    url = database.server_url()
    dsn = database.recreate(url, "signup")
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        # Production settings, but served over plain HTTP on 127.0.0.1.
        "DJANGO_HTTPS": "0",
        # Every signup comes from one address to one number, far beyond the limits.
        "SIGNUP_LIMIT_PER_ADDRESS": "off",
        "SIGNUP_LIMIT_PER_PHONE": "off",
        "SIGNUP_LIMIT_TEXTS": "off",
        "JOBS_LOG_LEVEL": "WARNING",
        "SIGNUP_PROVIDER_DELAY": args.provider_delay,
        "SIGNUP_ALLOW_INLINE_FLAG": "1",
        "DJANGO_EMAIL_BACKEND": "accounts.outbox.OutboxEmailBackend",
    }
    processes: list[subprocess.Popen] = []
    try:
        run_checked([sys.executable, "manage.py", "migrate", "--verbosity=0"], env=env)
        hash_seconds = password_hash_seconds(env)
        (RESULTS / "logs").mkdir(parents=True, exist_ok=True)
        log = open(RESULTS / "logs" / "signup-servers.log", "ab")
        with log:
            for command in (
                ["runserver", f"127.0.0.1:{args.port}", "--noreload"],
                [
                    "runworker",
                    f"--concurrency={args.worker_concurrency}",
                    f"--threads={args.worker_threads}",
                ],
            ):
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "manage.py", *command],
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        base = f"http://127.0.0.1:{args.port}"
        wait_for_server(base)
        # Two signups sent and delivered first: the server's and the
        # executors' first requests and jobs import what the others reuse.
        warm_up = load(f"{base}/api/v1/signup", 2.0, 1.0, "warm-up")
        delivered_at(dsn, warm_up)
        figures = {}
        for way, query in (("background", ""), ("inline", "?inline=1")):
            print(f"{way}: {args.rate:g} signups/s for {args.seconds:g} s", file=sys.stderr)
            requests = load(f"{base}/api/v1/signup{query}", args.rate, args.seconds, way)
            figures[way] = summarize(requests, delivered_at(dsn, requests))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=40)
        database.drop(url, "signup")
    context = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores",
        "rate": args.rate,
        "seconds": args.seconds,
        "provider_delay": args.provider_delay,
        "worker_concurrency": args.worker_concurrency,
        "worker_threads": args.worker_threads,
        "password_hash_ms": hash_seconds * 1000,
        "ways": figures,
    }
    markdown = render(context)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "signup.md").write_text(markdown)
    (RESULTS / "signup.json").write_text(json.dumps(context, indent=2) + "\n")
    print()
    print(markdown)
    return 0


def password_hash_seconds(env: dict[str, str]) -> float:
    """The median time of Django's make_password here, in a process of its own."""
    code = (
        "import django, statistics, time\n"
        "django.setup()\n"
        "from django.contrib.auth.hashers import make_password\n"
        "times = []\n"
        "for _ in range(5):\n"
        "    started = time.perf_counter()\n"
        f"    make_password({PASSWORD!r})\n"
        "    times.append(time.perf_counter() - started)\n"
        "print(statistics.median(times))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "project.settings"},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip())


def wait_for_server(base: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/signup/", timeout=2).close()
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def load(url: str, rate: float, seconds: float, way: str) -> list[Request]:
    """Post rate signups a second for seconds, each at its scheduled time."""
    count = int(rate * seconds)
    requests: list[Request] = []
    lock = threading.Lock()

    def post(n: int) -> None:
        body = json.dumps(
            {
                "email": f"{way}-{n}-{time.time_ns()}@example.com",
                "phone": "+14155550123",
                "password": PASSWORD,
            }
        ).encode()
        request = Request(started=time.time())
        call = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(call, timeout=120) as response:
                request.status = response.status
                request.user_id = json.load(response)["user_id"]
        except urllib.error.HTTPError as error:
            request.status = error.code
        except OSError:
            request.status = None
        request.seconds = time.time() - request.started
        with lock:
            requests.append(request)

    first = time.monotonic()
    with ThreadPoolExecutor(max_workers=64) as pool:
        for n in range(count):
            delay = first + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(post, n)
    return requests


def delivered_at(dsn: str, requests: list[Request], timeout: float = 300) -> dict[int, float]:
    """When each signup's third delivery was sent, waiting until all are (or timeout)."""
    wanted = {request.user_id for request in requests if request.user_id is not None}
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as connection:
        while True:
            done = {
                user_id: float(at)
                for user_id, at in connection.execute(DELIVERED).fetchall()
                if user_id in wanted
            }
            if len(done) == len(wanted) or time.monotonic() > deadline:
                return done
            time.sleep(0.2)


def summarize(requests: list[Request], delivered: dict[int, float]) -> dict[str, float | int]:
    ok = [request for request in requests if request.status == 201]
    response_ms = sorted(request.seconds * 1000 for request in ok)
    delivery_s = sorted(
        delivered[request.user_id] - request.started
        for request in ok
        if request.user_id in delivered
    )
    figures: dict[str, float | int] = {
        "requests": len(requests),
        "created": len(ok),
        "all_three_sent": len(delivery_s),
    }
    for p in (50, 95, 99):
        figures[f"response_p{p}_ms"] = percentile(response_ms, p) if response_ms else None
        figures[f"delivered_p{p}_s"] = percentile(delivery_s, p) if delivery_s else None
    figures["response_mean_ms"] = statistics.fmean(response_ms) if response_ms else None
    return figures


def render(context: dict) -> str:
    def number(value: float | None, format: str) -> str:
        return "\N{EN DASH}" if value is None else format.format(value)

    lines = [
        f"{context['date']}, {context['machine']}: {context['rate']:g} signups/s for"
        f" {context['seconds']:g} s each way, providers taking {context['provider_delay']} s"
        f" per message, runworker --concurrency {context['worker_concurrency']}"
        f" --threads {context['worker_threads']}.",
        "",
        "| sending | created | response p50 ms | p95 ms | p99 ms |"
        " all three sent p50 s | p95 s | p99 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for way, figures in context["ways"].items():
        lines.append(
            f"| {way} | {figures['created']}/{figures['requests']}"
            f" | {number(figures['response_p50_ms'], '{:,.0f}')}"
            f" | {number(figures['response_p95_ms'], '{:,.0f}')}"
            f" | {number(figures['response_p99_ms'], '{:,.0f}')}"
            f" | {number(figures['delivered_p50_s'], '{:.2f}')}"
            f" | {number(figures['delivered_p95_s'], '{:.2f}')}"
            f" | {number(figures['delivered_p99_s'], '{:.2f}')} |"
        )
    lines += [
        "",
        f"Django's password hash (PBKDF2) alone takes {context['password_hash_ms']:,.0f} ms"
        " here (median of 5): it is in every signup's response time, either way.",
    ]
    return "\n".join(lines) + "\n"
