"""
What enqueueing a workflow costs beside as many plain jobs: the time to put
--nodes jobs in the table in one transaction, as `enqueue_many()` of no-op
jobs (plain) and as workflows of that many nodes (every edge, every check,
every job's TaskResult).

    python -m bench.workflow_enqueue [--nodes 10000] [--pairs 8]

Shapes: a batch of --nodes - 1 members and an on_success callback; a group of
chains of 10; a dag of layers of 100 steps, each waiting for two of the
layer before. Each round times plain and then every shape (the order
alternating, bench.paired), each on an emptied table; the figures are shape
over plain within each round, for the transaction alone (the shape built
before it) and for building the shape and enqueueing it. On bench_workflow_enqueue of the server of
BENCH_DATABASE_URL, made afresh and dropped after. Not part of CI.
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable

import django

from bench import database
from bench.paired import A, median_interval, pair_order, paired_ratios

NAME = "workflow_enqueue"


def shapes(nodes: int) -> dict[str, Callable[[], object]]:
    """Each way to enqueue `nodes` jobs: what builds its shape (plain has none)."""
    from bench.tasks import noop
    from jobs.workflows import batch, chain, dag, group, step

    def plain() -> object:
        return [((), {})] * nodes

    def batch_with_callback() -> object:
        return batch([step(noop) for _ in range(nodes - 1)], on_success=step(noop).alone())

    def group_of_chains() -> object:
        return group(*(chain(*(step(noop).alone() for _ in range(10))) for _ in range(nodes // 10)))

    def layered_dag() -> object:
        width = 100
        parts = {}
        for n in range(nodes):
            layer, place = divmod(n, width)
            item = step(noop)
            if layer:
                before = [f"n{(layer - 1) * width + (place + k) % width}" for k in (0, 1)]
                item = item.after(*before).alone()
            parts[f"n{n}"] = item
        return dag(**parts)

    return {
        "plain": plain,
        "batch + callback": batch_with_callback,
        "group of chains of 10": group_of_chains,
        "dag of layers": layered_dag,
    }


def timed(build: Callable[[], object]) -> tuple[float, float]:
    """Seconds to build the shape, and to enqueue it in one transaction."""
    from django.db import connection, transaction

    from bench.tasks import noop

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE jobs_job, jobs_dependency")
    started = time.perf_counter()
    shape = build()
    built = time.perf_counter()
    with transaction.atomic():
        if isinstance(shape, list):
            noop.enqueue_many(shape)
        else:
            shape.enqueue()
    return built - started, time.perf_counter() - built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=8)
    args = parser.parse_args()
    url = database.server_url()
    os.environ["DATABASE_URL"] = database.recreate(url, NAME)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    try:
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        runs = shapes(args.nodes)
        seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for index in range(args.pairs + 1):
            first = pair_order(index)[0] == A
            for name in sorted(runs, key=lambda n: (n != "plain") == first):
                took = timed(runs[name])
                if index:  # the first round warms up and is not counted
                    seconds[name].append(took)
        report(seconds, args)
    finally:
        from django.db import connections

        connections.close_all()
        database.drop(url, NAME)


def report(seconds: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    plain = [enqueue for _, enqueue in seconds["plain"]]
    print(f"{args.nodes:,} jobs in one transaction, {args.pairs} rounds, order alternating")
    print(
        "| enqueue | build s | transaction s [min-max] | transaction over plain "
        "[95% interval] | build + transaction over plain |"
    )
    print("|---|---|---|---|---|")
    for name, values in seconds.items():
        builds = [build for build, _ in values]
        enqueues = [enqueue for _, enqueue in values]
        print(
            f"| {name} | {statistics.median(builds):.3f} "
            f"| {statistics.median(enqueues):.3f} [{min(enqueues):.3f}-{max(enqueues):.3f}] "
            f"| {ratio(plain, enqueues)} "
            f"| {ratio(plain, [b + e for b, e in values])} |"
        )


def ratio(plain: list[float], values: list[float]) -> str:
    """The median of the rounds' ratios over plain, and its interval."""
    ratios = paired_ratios(plain, values)
    interval = median_interval(ratios)
    span = f" [{interval[0]:.2f}-{interval[1]:.2f}]" if interval else ""
    return f"{statistics.median(ratios):.2f}{span}"


if __name__ == "__main__":
    main()
