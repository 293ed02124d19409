"""
`./scripts/bench.sh --compare REF`: this queue as the working tree has it (B)
against the queue at a git ref (A), on the same Postgres, in pairs of short
runs (bench/paired.py says why pairs, and how they are judged).

REF is checked out into a temporary git worktree, removed at the end however
the run ends. Both sides run the working tree's harness (bench/driver.py,
ours.py, probe.py, stats.py, copied over REF's): what differs between A and B
is the queue, its project and its task module, not how they are measured.
Each side's driver runs with this project's Python in its own tree, so that
`import jobs` is that tree's; the run checks it before it starts. Each side
has a bench database of its own, made at the start and dropped at the end.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import database, paired

ROOT = Path(__file__).resolve().parent.parent
HARNESS = (
    "__init__.py",
    "driver.py",
    "ours.py",
    "probe.py",
    "stats.py",
    # Imported by ours.py for phases a comparison does not run.
    "neighbour.py",
    "remote.py",
    "relay.py",
)
PHASES = "enqueue,process,latency"
# Seconds a driver has to stop its workers once interrupted.
STOP_SECONDS = 30


class CompareError(Exception):
    """The comparison cannot go on: a bad ref, a side whose driver failed."""


@dataclass(frozen=True, slots=True)
class Side:
    label: str
    name: str
    describe: str
    tree: Path

    @property
    def database(self) -> str:
        return f"compare_{self.label.lower()}"


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise CompareError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def resolve(ref: str) -> str:
    """The commit REF names."""
    try:
        return git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except CompareError:
        raise CompareError(f"{ref!r} names no commit") from None


@contextmanager
def checkout(commit: str) -> Iterator[Path]:
    """The commit in a temporary worktree, with this tree's harness; removed on the way out."""
    folder = Path(tempfile.mkdtemp(prefix="pgjobs-compare-"))
    try:
        git("worktree", "add", "--detach", "--quiet", str(folder), commit)
        (folder / "bench").mkdir(exist_ok=True)
        for name in HARNESS:
            shutil.copyfile(ROOT / "bench" / name, folder / "bench" / name)
        yield folder
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)


def sides(ref: str, commit: str, tree: Path) -> tuple[Side, Side]:
    """A, the ref in its worktree; B, the working tree, and whether it has uncommitted changes."""
    subject = git("show", "--no-patch", "--format=%s", commit)
    if len(subject) > 72:
        subject = subject[:71] + "…"
    head = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no")
    a = Side(paired.A, ref, f"{commit[:7]}, {subject}", tree)
    describe = f"HEAD {head}" + (" with uncommitted changes" if changed else "")
    return a, Side(paired.B, "working tree", describe, ROOT)


def environment(side: Side, dsn: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(side.tree)}
    if dsn:
        env["BENCH_DSN"] = dsn
    return env


def jobs_origin(side: Side) -> str:
    """Where the side's driver imports jobs from, which must be inside the side's tree."""
    done = subprocess.run(
        [sys.executable, "-c", "import jobs; print(jobs.__file__)"],
        cwd=side.tree,
        env=environment(side),
        capture_output=True,
        text=True,
    )
    origin = done.stdout.strip()
    if done.returncode != 0 or not Path(origin).is_relative_to(side.tree):
        raise CompareError(f"{side.name}: jobs is imported from {origin or done.stderr}")
    return origin


def run_side(side: Side, args: argparse.Namespace, dsn: str) -> dict[str, float | None]:
    """
    One run of the side's driver: its figures, one value each. The driver is
    a session of its own, so that an interrupt reaches it once, from here,
    and it stops its workers before it exits.
    """
    command = [
        sys.executable, "-m", "bench.ours", f"--jobs={args.jobs}", "--repeat=1",
        f"--phases={PHASES}", f"--timeout={args.timeout}", f"--latency-probes={args.probes}",
    ]  # fmt: skip
    with subprocess.Popen(
        command,
        cwd=side.tree,
        env=environment(side, dsn),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            output, errors = process.communicate()
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    if process.returncode != 0:
        raise CompareError(f"{side.name}: the driver failed:\n{errors[-3000:]}")
    result = json.loads(output.splitlines()[-1])
    if result["notes"]:
        raise CompareError(f"{side.name}: {'; '.join(result['notes'])}")
    return {key: values[0] for key, values in result["figures"].items()}


def measure(
    pair: tuple[Side, Side], args: argparse.Namespace, dsns: dict[str, str]
) -> dict[str, list[dict[str, float | None]]]:
    """One run of each side not counted (its caches, its compiled modules), then the pairs."""
    by_label = {side.label: side for side in pair}
    for side in pair:
        say(f"warm-up: {side.label} ({side.name})")
        run_side(side, args, dsns[side.label])
    runs: dict[str, list[dict[str, float | None]]] = {paired.A: [], paired.B: []}
    for index in range(args.pairs):
        for label in paired.pair_order(index):
            side = by_label[label]
            figures = run_side(side, args, dsns[label])
            runs[label].append(figures)
            say(
                f"pair {index + 1} of {args.pairs}: {label} ({side.name}) "
                f"{figures['jobs_per_s']:,.0f} processed/s"
            )
    return runs


def main(args: argparse.Namespace, url: str, context: dict[str, Any]) -> int:
    """Compare, report, save; 1 when the comparison could not be made."""
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        commit = resolve(args.compare)
        with checkout(commit) as tree:
            pair = sides(args.compare, commit, tree)
            for side in pair:
                context[side.label.lower()] = {
                    "label": side.label,
                    "name": side.name,
                    "describe": side.describe,
                    "jobs": jobs_origin(side),
                }
            runs = with_databases(pair, url, lambda dsns: measure(pair, args, dsns))
    except CompareError as error:
        print(error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted; the worktree and the bench databases are removed.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    context.update(pairs=args.pairs, jobs=args.jobs, probes=args.probes)
    rows = paired.compare(runs)
    markdown = paired.render(rows, context)
    paired.save(rows, context, runs, markdown, args.results)
    print()
    print(markdown)
    print(f"Saved {args.results / 'compare.md'} and {args.results / 'compare.json'}.")
    return 0


def with_databases[T](pair: tuple[Side, Side], url: str, work: Callable[[dict[str, str]], T]) -> T:
    """work(DSN of each side's bench database), the databases made first and dropped after."""
    try:
        dsns = {side.label: database.recreate(url, side.database) for side in pair}
        return work(dsns)
    finally:
        for side in pair:
            database.drop(url, side.database)


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: the worktree and the databases are cleaned up on the way out."""
    raise KeyboardInterrupt


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
