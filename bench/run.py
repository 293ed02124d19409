"""
The benchmark: this queue and its peers through the same work, one after
another, on the same Postgres. `./scripts/bench.sh --help` says how.

Each queue runs in a database of its own (bench_<name>, made afresh and
dropped after), through its driver, a process of the queue's own Python:
bench/ours.py with the project's, bench/peers/<name>.py with the peer's
virtualenv. The drivers print their figures as JSON; this module sums them up
into bench/results/latest.md and latest.json.

The repeats are taken in rounds: every queue once, then every queue again. A
machine whose speed drifts over the half hour of a run (a shared host does)
so slows or speeds all the queues of a round alike, and the ratios, taken
between medians of the same rounds, do not depend on which queue ran first.
"""

import argparse
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench import compare, database, driver, venvs
from bench.peers import PEERS
from bench.report import QueueResult, render, save

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
QUEUE_PHASES = ("enqueue", "process", "latency", "large")
OUR_PHASES = ("history", "scale", "limits", "workflows", "remote", "neighbour")
# Jobs a run with --compare: short runs, so that the two of a pair see the same machine.
COMPARE_JOBS = 2_000

DESCRIPTION = (
    "Put this queue and its peers through the same work on the same Postgres "
    f"(BENCH_DATABASE_URL, default {database.DEFAULT_URL}) and print a table; the "
    "results go to bench/results/latest.md and latest.json. Each peer runs from a "
    "virtualenv of its own under bench/.peers/, made on first use. With --signup, "
    "measure the signup's latency instead (see bench/signup.py). With --compare REF, "
    "this queue as the working tree has it against the queue at REF instead, in "
    "pairs of short runs; the results go to bench/results/compare.md and compare.json."
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown, except where the help text says them (the default is None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench.sh",
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            "a short run to try things out: 1,000 jobs, 1 repeat, 100,000 history rows, "
            "10,000 in the large run"
        ),
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="comma-separated peers to compare with, or 'none' for this queue alone",
    )
    parser.add_argument(
        "--jobs", type=int, help="jobs per figure (default: 10000; with --compare, 2000 a run)"
    )
    parser.add_argument("--repeat", type=int, help="runs of each figure (default: 3)")
    parser.add_argument(
        "--phases",
        default=",".join(QUEUE_PHASES + OUR_PHASES),
        help=(
            "what to measure: enqueue (one at a time, and batches), process (queued jobs, "
            "workers started, until all are done; cost), latency (enqueue→start), large "
            "(process again with --large-jobs queued); for this queue only: history (with "
            "finished jobs in the table), scale (1, 2, 4, 8 runworker processes), limits, "
            "workflows, remote (workers behind a relay adding 0.5 and 2 ms round trips), "
            "neighbour (tenant B's jobs beside tenant A's --large-jobs backlog)"
        ),
    )
    parser.add_argument(
        "--history-rows", type=int, help="finished jobs in the history phase (default: 1000000)"
    )
    parser.add_argument(
        "--large-jobs",
        type=int,
        help=(
            "jobs queued in the large run (default: 100000); a queue that would take over "
            f"{driver.LARGE_BUDGET_SECONDS:.0f} s to process them is left out; also tenant "
            "A's backlog in the neighbour phase"
        ),
    )
    parser.add_argument("--scale", default="1,2,4,8", help="runworker processes to try")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="folder for latest.md and latest.json"
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds a processing run may take"
    )
    parser.add_argument(
        "--signup",
        action="store_true",
        help="run the signup latency benchmark instead (--signup --help for its options)",
    )
    add_compare_arguments(parser)
    return settle(parser.parse_args(argv), parser)


def settle(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The defaults that depend on other options filled in, names and numbers checked."""
    if args.pairs < 1 or args.probes < 1:
        parser.error("--pairs and --probes take a number above 0")
    if args.compare and args.jobs is None:
        args.jobs = COMPARE_JOBS
    defaults = (1_000, 1, 100_000, 10_000) if args.quick else (10_000, 3, 1_000_000, 100_000)
    names = ("jobs", "repeat", "history_rows", "large_jobs")
    for name, default in zip(names, defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.peers = [] if args.peers == "none" else [name for name in args.peers.split(",") if name]
    unknown = [name for name in args.peers if name not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    args.phases = args.phases.split(",")
    unknown = [name for name in args.phases if name not in QUEUE_PHASES + OUR_PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}")
    return args


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """--compare REF and its options (bench/compare.py)."""
    parser.add_argument(
        "--compare",
        metavar="REF",
        help=(
            "compare the working tree (B) with a commit, branch or tag (A, checked out into a "
            "temporary git worktree): both on the same server, A and B in turns, the figures "
            "judged by the ratio B/A within each pair"
        ),
    )
    parser.add_argument(
        "--pairs", type=int, default=12, help="with --compare: pairs of runs, one of A and one of B"
    )
    parser.add_argument(
        "--probes", type=int, default=200, help="with --compare: latency probes a run"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--signup" in argv:
        from bench import signup

        return signup.main([arg for arg in argv if arg != "--signup"])
    args = parse_args(argv)
    url = database.server_url()
    try:
        postgres = database.server_info(url)
    except Exception as error:
        print(f"Postgres does not answer at {url}: {error}", file=sys.stderr)
        print("Set BENCH_DATABASE_URL to a server where databases may be created.", file=sys.stderr)
        return 1
    context = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": shlex.join(["./scripts/bench.sh", *argv]),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "postgres": " ".join(postgres.split()[:2]),
    }
    if args.compare:
        return compare.main(args, url, context)
    context |= {
        "jobs": args.jobs,
        "repeat": args.repeat,
        "history_rows": args.history_rows,
        "large_jobs": args.large_jobs,
        "phases": args.phases,
    }
    queues = [ours_driver()]
    results: dict[str, QueueResult] = {}
    for name in args.peers:
        found = peer_driver(name)
        if isinstance(found, QueueResult):
            results[name] = found
        else:
            queues.append(found)
    outputs = run_rounds(queues, args, url, results)
    for queue in queues:
        if queue.name not in results:
            results[queue.name] = QueueResult.from_driver(
                queue.name, queue.title, queue.setup, merge_outputs(outputs[queue.name])
            )
    results_in_order = [results[name] for name in ("ours", *args.peers)]
    markdown = render(results_in_order, context)
    save(results_in_order, context, markdown, args.results)
    print()
    print(markdown)
    print(f"Saved {args.results / 'latest.md'} and {args.results / 'latest.json'}.")
    return 0 if all(result.status != "failed" for result in results_in_order) else 1


@dataclass(frozen=True)
class Driver:
    """One queue's driver: how to start it, and which phases it takes part in."""

    name: str
    title: str
    setup: str
    python: str
    module: str
    ours: bool = False


def ours_driver() -> Driver:
    return Driver(
        name="ours",
        title="this queue",
        setup="1 runworker, defaults",
        python=sys.executable,
        module="bench.ours",
        ours=True,
    )


def peer_driver(name: str) -> Driver | QueueResult:
    """The peer's driver, its virtualenv made if need be; or why it cannot run."""
    peer = PEERS[name]
    if peer.needs == "redis" and not redis_answers():
        return QueueResult(
            name, peer.title, peer.setup, status="skipped", reason="no Redis answers"
        )
    try:
        python = venvs.ensure(peer, log=lambda message: print(message, file=sys.stderr))
    except venvs.SetupError as error:
        return QueueResult(name, peer.title, peer.setup, status="failed", reason=str(error))
    return Driver(name, peer.title, peer.setup, str(python), f"bench.peers.{name}")


def run_driver(
    queue: Driver, args: argparse.Namespace, url: str, *, skip: Collection[str] = ()
) -> dict | QueueResult:
    """
    One round of a driver, in a fresh database: its output, or the failed
    result. Its progress shows as it goes.
    """
    phases = [
        phase
        for phase in args.phases
        if (queue.ours or phase in QUEUE_PHASES) and phase not in skip
    ]
    dsn = database.recreate(url, queue.name)
    command = [
        queue.python,
        "-m",
        queue.module,
        f"--jobs={args.jobs}",
        "--repeat=1",
        f"--phases={','.join(phases)}",
        f"--timeout={args.timeout}",
        f"--history-rows={args.history_rows}",
        f"--scale={args.scale}",
        f"--large-jobs={args.large_jobs}",
    ]
    env = {**os.environ, "BENCH_DSN": dsn, "PYTHONPATH": str(ROOT)}
    tail: deque[str] = deque(maxlen=20)
    try:
        with subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as process:
            # The output (with every probe's latency) outgrows a pipe's
            # buffer: read it while the progress is shown, or both ends wait.
            with ThreadPoolExecutor(max_workers=1) as reader:
                stdout = reader.submit(process.stdout.read)
                for line in process.stderr:
                    print(line, end="", file=sys.stderr, flush=True)
                    tail.append(line)
                output = stdout.result()
        if process.returncode != 0:
            return QueueResult(
                queue.name,
                queue.title,
                queue.setup,
                status="failed",
                reason="the driver failed:\n" + "".join(tail),
            )
        return json.loads(output.splitlines()[-1])
    finally:
        database.drop(url, queue.name)


def run_rounds(
    queues: list[Driver], args: argparse.Namespace, url: str, results: dict[str, QueueResult]
) -> dict[str, list[dict]]:
    """
    Every queue once a round, args.repeat rounds: each queue's outputs in
    round order; a queue that fails goes to results and runs no more.
    """
    outputs: dict[str, list[dict]] = {queue.name: [] for queue in queues}
    for round_ in range(1, args.repeat + 1):
        for queue in queues:
            if queue.name in results:
                continue
            print(
                f"{queue.title} ({queue.setup}), round {round_} of {args.repeat}",
                file=sys.stderr,
                flush=True,
            )
            # The first round decides whether a queue is fast enough for the
            # large run (see driver.LARGE_BUDGET_SECONDS); the others follow it.
            skip = {"large"} if round_ > 1 and not ran_large(outputs[queue.name]) else set()
            output = run_driver(queue, args, url, skip=skip)
            if isinstance(output, QueueResult):
                results[queue.name] = output
            else:
                outputs[queue.name].append(output)
    return outputs


def ran_large(outputs: list[dict]) -> bool:
    return any("large_jobs_per_s" in output["figures"] for output in outputs)


def merge_outputs(outputs: list[dict]) -> dict:
    """The rounds of one driver as one output: each figure's values in round order."""
    figures: dict[str, list] = {}
    series: dict[str, list] = {}
    notes: list[str] = []
    for output in outputs:
        for key, values in output["figures"].items():
            figures.setdefault(key, []).extend(values)
        for key, runs in output.get("series", {}).items():
            series.setdefault(key, []).extend(runs)
        notes += [note for note in output.get("notes", []) if note not in notes]
    return {"figures": figures, "series": series, "notes": notes}


def redis_answers() -> bool:
    parts = urlsplit(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"))
    try:
        with socket.create_connection((parts.hostname, parts.port or 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
