"""
What enqueueing a workflow costs beside as many plain jobs: the time to put
--nodes jobs in the table in one transaction, as `enqueue_many()` of no-op
jobs (plain) and as workflows of that many nodes (every edge, every check,
every job's TaskResult).

    python -m bench.workflow_enqueue [--nodes 10000] [--pairs 8]

Shapes: a batch of --nodes - 1 members and an on_success callback; a group of
chains of 10; a dag of layers of 100 steps, each waiting for two of the
layer before. Each round times plain and then every shape (the order
alternating, bench.paired), each on an emptied table; the figure is shape
over plain within each round. On bench_workflow_enqueue of the server of
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
    """Each way to enqueue `nodes` jobs, building its shape inside the timed call."""
    from bench.tasks import noop
    from jobs.workflows import batch, chain, dag, group, step

    def plain() -> object:
        return noop.enqueue_many([((), {})] * nodes)

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
        "batch + callback": lambda: batch_with_callback().enqueue(),
        "group of chains of 10": lambda: group_of_chains().enqueue(),
        "dag of layers": lambda: layered_dag().enqueue(),
    }


def timed(run: Callable[[], object]) -> float:
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE jobs_job, jobs_dependency")
    started = time.perf_counter()
    with transaction.atomic():
        run()
    return time.perf_counter() - started


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
        seconds: dict[str, list[float]] = {name: [] for name in runs}
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


def report(seconds: dict[str, list[float]], args: argparse.Namespace) -> None:
    plain = seconds["plain"]
    print(f"{args.nodes:,} jobs in one transaction, {args.pairs} rounds, order alternating")
    print("| enqueue | median s [min-max] | over plain, median of rounds [95% interval] |")
    print("|---|---|---|")
    for name, values in seconds.items():
        ratios = paired_ratios(plain, values)
        interval = median_interval(ratios)
        span = f" [{interval[0]:.2f}-{interval[1]:.2f}]" if interval else ""
        print(
            f"| {name} | {statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}] "
            f"| {statistics.median(ratios):.2f}{span} |"
        )


if __name__ == "__main__":
    main()
