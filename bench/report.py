"""
The results as Markdown tables (printed, and saved as latest.md) and as JSON
(latest.json): medians per queue, their spread, our figures over each peer's.
"""

import csv
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.neighbour import B_PER_SECOND, BAR_P99_MS
from bench.remote import PROBES
from bench.stats import Summary, percentile, ratio, summarize


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    format: str


COLUMNS = (
    Column("enqueue_per_s", "enqueue/s", "{:,.0f}"),
    Column("batch_per_s", "batch/s", "{:,.0f}"),
    Column("jobs_per_s", "processed/s", "{:,.0f}"),
    Column("steady_per_s", "steady/s", "{:,.0f}"),
    Column("first_done_s", "first done s", "{:.2f}"),
    Column("latency_p50_ms", "p50 ms", "{:.1f}"),
    Column("latency_p95_ms", "p95 ms", "{:.1f}"),
    Column("latency_p99_ms", "p99 ms", "{:.1f}"),
    Column("latency_p99_9_ms", "p99.9 ms", "{:.1f}"),
    Column("latency_max_ms", "max ms", "{:.1f}"),
    Column("commits_per_job", "commits/job", "{:.3f}"),
    Column("write_xacts_per_job", "write xacts/job", "{:.3f}"),
    Column("wal_bytes_per_job", "WAL bytes/job", "{:,.0f}"),
)

RATIO_COLUMNS = tuple(
    column
    for column in COLUMNS
    if column.key
    not in {
        "latency_p95_ms",
        "latency_p99_9_ms",
        "latency_max_ms",
        "steady_per_s",
        "first_done_s",
        "write_xacts_per_job",
    }
)

# What a burst is, in the latency's tail: consecutive probes each slower than
# this many times the queue's median.
BURST_OVER_MEDIAN = 2.0


@dataclass
class QueueResult:
    """One queue's run: its figures, or why it has none."""

    name: str
    title: str
    setup: str
    status: str = "ok"  # ok, skipped, failed
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Summary] = field(default_factory=dict)
    # Per-job values, one list per repeat (see driver.Queue.series).
    series: dict[str, list[list[float]]] = field(default_factory=dict)

    @classmethod
    def from_driver(
        cls, name: str, title: str, setup: str, output: dict[str, Any]
    ) -> "QueueResult":
        figures = {
            key: summary
            for key, values in output["figures"].items()
            if (summary := summarize(values)) is not None
        }
        return cls(
            name,
            title,
            setup,
            notes=output.get("notes", []),
            figures=figures,
            series=output.get("series", {}),
        )


# A figure the queue does not have (no batch API, say), and a range.
MISSING = DASH = "\N{EN DASH}"
TIMES = "\N{MULTIPLICATION SIGN}"


def cell(summary: Summary | None, format: str) -> str:
    return MISSING if summary is None else format.format(summary.median)


def spread(summary: Summary | None, format: str) -> str:
    if summary is None:
        return MISSING
    return f"{format.format(summary.min)}{DASH}{format.format(summary.max)}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(results: list[QueueResult], context: dict[str, Any]) -> str:
    """The whole report in Markdown."""
    measured = [result for result in results if result.status == "ok"]
    header = ["queue", "setup", *(column.label for column in COLUMNS)]
    parts = [
        f"{context['date']}, {context['machine']}, {context['postgres']}.",
        f"{context['jobs']:,} no-op jobs per figure, median of {context['repeat']}"
        f" (`{context['command']}`).",
        "",
        table(
            header,
            [
                [result.title, result.setup]
                + [cell(result.figures.get(column.key), column.format) for column in COLUMNS]
                for result in measured
            ],
        ),
    ]
    if context["repeat"] > 1:
        parts += [
            "",
            f"Min{DASH}max of the repeats:",
            "",
            table(
                ["queue", *(column.label for column in COLUMNS)],
                [
                    [result.title]
                    + [spread(result.figures.get(column.key), column.format) for column in COLUMNS]
                    for result in measured
                ],
            ),
        ]
    ours = next((result for result in measured if result.name == "ours"), None)
    peers = [result for result in measured if result.name != "ours"]
    if ours is not None and peers:
        parts += [
            "",
            "Ours over each peer (medians): above 1 is better for throughput, below 1 for"
            " latency and cost.",
            "",
            table(
                ["peer", *(column.label for column in RATIO_COLUMNS)],
                [
                    [peer.title]
                    + [
                        format_ratio(
                            ratio(ours.figures.get(column.key), peer.figures.get(column.key))
                        )
                        for column in RATIO_COLUMNS
                    ]
                    for peer in peers
                ],
            ),
        ]
    parts += latency_tail(measured)
    parts += large_run(measured, ours, context)
    if ours is not None:
        parts += ours_only(ours, context)
    for result in results:
        if result.status != "ok":
            parts += ["", f"{result.title}: {result.status}, {result.reason}"]
        for note in result.notes:
            parts += ["", f"{result.title}: {note}"]
    parts += [
        "",
        "processed/s counts from the workers' start until the last job is done, read from"
        " the database; steady/s is the rate from 10% to 90% done; first done s: seconds"
        " from the workers' start until a poll (every 20 ms) first sees a job done, most"
        " of it the workers' start-up. Latency: start of the"
        " enqueue call to the job's first line, 1,000 jobs 20 ms apart on an idle worker."
        " commits/job: pg_stat_database.xact_commit of the bench database over the run,"
        " read-only ones included; write xacts/job: transaction ids assigned and WAL"
        " bytes/job, both server-wide.",
    ]
    return "\n".join(parts) + "\n"


def latency_tail(measured: list[QueueResult]) -> list[str]:
    """
    Where each queue's slowest probes came from: its longest burst, and for
    ours the parts of the latency its own timestamps tell apart.
    """
    lines = []
    for result in measured:
        runs = result.series.get("latency_ms", [])
        median = result.figures.get("latency_p50_ms")
        if not runs or median is None:
            continue
        bursts = [longest_burst(run, BURST_OVER_MEDIAN * median.median) for run in runs]
        length, first = max(bursts)
        line = f"- {result.title}: longest burst {length} probe(s)"
        if length:
            round_ = bursts.index((length, first))
            slow = runs[round_][first : first + length]
            line += (
                f" from probe {first} of round {round_ + 1}, "
                f"{min(slow):.1f}{DASH}{max(slow):.1f} ms each"
            )
        lines.append(line)
    ours = next((result for result in measured if result.name == "ours"), None)
    parts = [
        (name, label)
        for name, label in (
            ("to_insert_ms", "enqueue call to its INSERT"),
            ("to_claim_ms", "INSERT to the claim (the NOTIFY, the worker's wake-up)"),
            (
                "claim_to_start_ms",
                "claim to the job's first line (the claim's round trip, "
                "the hand-over to an executor, the job runner)",
            ),
        )
        if ours is not None and ours.series.get(name)
    ]
    for name, label in parts:
        values = sorted(value for run in ours.series[name] for value in run)
        lines.append(
            f"- this queue, {label}: p50 {percentile(values, 50):.2f} ms, "
            f"p99 {percentile(values, 99):.2f} ms, max {values[-1]:.2f} ms"
        )
    if not lines:
        return []
    return [
        "",
        f"The latency's tail: a burst is consecutive probes each over {BURST_OVER_MEDIAN:g}"
        f"{TIMES} the queue's median; every probe's latency is in latency.csv.",
        "",
        *lines,
    ]


def longest_burst(values: list[float], over: float) -> tuple[int, int]:
    """(length, first index) of the longest run of values above `over`; (0, 0) if none."""
    best = (0, 0)
    start = None
    for index, value in enumerate([*values, over]):
        if value > over:
            if start is None:
                start = index
        elif start is not None:
            best = max(best, (index - start, -start))
            start = None
    return best[0], -best[1]


def large_run(
    measured: list[QueueResult], ours: QueueResult | None, context: dict[str, Any]
) -> list[str]:
    """processed/s and steady/s with large_jobs queued, and ours over each."""
    rows = []
    for result in measured:
        total = result.figures.get("large_jobs_per_s")
        if total is None:
            continue
        steady = result.figures.get("large_steady_per_s")
        row = [result.title, with_spread(total), with_spread(steady) if steady else MISSING]
        if ours is not None and result is not ours:
            row.append(format_ratio(ratio(ours.figures.get("large_jobs_per_s"), total)))
        else:
            row.append(MISSING)
        rows.append(row)
    if not rows:
        return []
    return [
        "",
        f"{context['large_jobs']:,} jobs queued:",
        "",
        table(["queue", "processed/s", "steady/s", "ours over it (processed/s)"], rows),
    ]


def ours_only(ours: QueueResult, context: dict[str, Any]) -> list[str]:
    """The history and scale figures: processed/s and steady/s, each median (min-max)."""

    def rates(prefix: str) -> str | None:
        total = ours.figures.get(f"{prefix}jobs_per_s")
        steady = ours.figures.get(f"{prefix}steady_per_s")
        if total is None:
            return None
        text = f"{with_spread(total)} processed/s"
        if steady is not None:
            text += f", {with_spread(steady)} steady/s"
        return text

    lines = []
    history = rates("history_")
    if history is not None:
        lines.append(f"- with {context['history_rows']:,} finished jobs in jobs_job: {history}")
        # The scale phase's single runworker ran on jobs queued the same way
        # (enqueue_many) without the history: the fair comparison.
        full = ours.figures.get("history_steady_per_s")
        empty = ours.figures.get("scale_1_steady_per_s") or ours.figures.get("steady_per_s")
        if empty is not None and full is not None:
            change = (full.median / empty.median - 1) * 100
            lines[-1] += f" ({change:+.0f}% steady/s against the same run on an empty table)"
    for prefix, label in (
        ("limits_off_", "no-op jobs with no LIMITS setting (the process phase has the project's)"),
        ("limited_wide_", "no-op jobs under 1,000 at once per key, 100 keys (never binds)"),
        ("limited_100_keys_", "no-op jobs under 2 at once per key, 100 keys (200 slots)"),
        ("limited_4_keys_", "no-op jobs under 2 at once per key, 4 keys (8 slots)"),
        ("workflow_plain_", "no-op jobs, beside the batch below"),
        ("workflow_batch_", "a batch of as many no-op jobs and its on_finish callback"),
    ):
        if (figures := rates(prefix)) is not None:
            lines.append(f"- {label}: {figures}{share_of_plain(ours, prefix)}")
    workers = sorted({int(key.split("_")[1]) for key in ours.figures if key.startswith("scale_")})
    lines += [
        f"- {count} runworker process{'es' if count > 1 else ''}, timed from when every one "
        f"is ready: {rates(f'scale_{count}_')}"
        for count in workers
    ]
    alone = ["", "This queue alone:", "", *lines] if lines else []
    return alone + remote_table(ours, context) + neighbour_table(ours, context)


# The plain jobs of the same rounds that a limited or workflow figure is set against.
PLAIN_OF = {
    "limited_wide_": "limits_off_",
    "limited_100_keys_": "limits_off_",
    "limited_4_keys_": "limits_off_",
    "workflow_batch_": "workflow_plain_",
}


def share_of_plain(ours: QueueResult, prefix: str) -> str:
    """
    The steady rate as a share of the plain jobs' of the same rounds: the
    median of the per-round ratios, which a machine whose speed drifts
    between rounds moves less than a ratio of medians.
    """
    figure = ours.figures.get(f"{prefix}steady_per_s")
    plain = PLAIN_OF.get(prefix)
    baseline = ours.figures.get(f"{plain}steady_per_s") if plain else None
    if figure is None or baseline is None or len(figure.values) != len(baseline.values):
        return ""
    pairs = zip(figure.values, baseline.values, strict=True)
    shares = [value / base for value, base in pairs if base]
    if not shares:
        return ""
    return f" ({statistics.median(shares):.0%} of the plain steady/s, round by round)"


REMOTE_KEY = re.compile(r"remote_(local|\d+us)_(\d+)w_jobs_per_s")
REMOTE_FIGURES = ("jobs_per_s", "steady_per_s", "p50_ms", "p99_ms")


def remote_table(ours: QueueResult, context: dict[str, Any]) -> list[str]:
    """The remote phase: per round trip and runworker count, throughput and idle latency."""
    found = {match.groups() for key in ours.figures if (match := REMOTE_KEY.fullmatch(key))}
    if not found:
        return []

    def order(link: str) -> int:
        return -1 if link == "local" else int(link.removesuffix("us"))

    rows = []
    for link, workers in sorted(found, key=lambda found: (order(found[0]), int(found[1]))):
        ping = ours.figures.get(f"remote_{link}_select1_p50_ms")
        name = "no relay" if link == "local" else f"relay, {order(link) / 1000:g} ms"
        figures = {
            key: ours.figures.get(f"remote_{link}_{workers}w_{key}") for key in REMOTE_FIGURES
        }
        rates = [
            with_spread(figures[key]) if figures[key] else MISSING for key in REMOTE_FIGURES[:2]
        ]
        waits = [cell(figures[key], "{:.1f}") for key in REMOTE_FIGURES[2:]]
        rows.append([name, cell(ping, "{:.2f}"), workers, *rates, *waits])
    header = ["workers to Postgres", "SELECT 1 ms", "runworkers", "processed/s", "steady/s"]
    return [
        "",
        f"Workers on other hosts: {context['jobs']:,} queued no-op jobs, then {PROBES} probes 20 ms"
        " apart on the idle workers, with the workers (not the enqueuer) behind a relay that"
        " holds each chunk back half the round trip each way. SELECT 1 ms: the median"
        " round trip the workers see (through the relay, or directly).",
        "",
        table([*header, "idle p50 ms", "idle p99 ms"], rows),
    ]


def neighbour_table(ours: QueueResult, context: dict[str, Any]) -> list[str]:
    """The neighbour phase: tenant B's waits beside tenant A's backlog, and A's drain rate."""
    drained = ours.figures.get("neighbour_a_per_s")
    if drained is None:
        return []
    waits = [
        cell(ours.figures.get(f"neighbour_b_{part}_{figure}_ms"), "{:.1f}")
        for part in ("claim", "start")
        for figure in ("p50", "p99", "max")
    ]
    jobs = cell(ours.figures.get("neighbour_b_jobs"), "{:.0f}")
    p99 = ours.figures.get("neighbour_b_claim_p99_ms")
    header = ["A drained/s", "B jobs", "B to claim p50 ms", "p99 ms", "max ms"]
    header += ["B to first line p50 ms", "p99 ms", "max ms"]
    verdict = "met" if p99 is not None and p99.median <= BAR_P99_MS else "missed"
    return [
        "",
        f"A noisy neighbour: tenant A queues {context['large_jobs']:,} jobs at once, tenant B"
        f" {B_PER_SECOND} a second until A's are done, one runworker, fair shares by tenant"
        " (a key, no limit).",
        "",
        table(header, [[with_spread(drained), jobs, *waits]]),
        "",
        f"B to claim: the row's enqueued_at to its started_at; to first line: enqueued_at to"
        f" the job's own first line. The bar, B's p99 to the claim within"
        f" {BAR_P99_MS:g} ms: {verdict}.",
    ]


def with_spread(summary: Summary) -> str:
    """The median, and the range of the repeats when there were several."""
    text = f"{summary.median:,.0f}"
    if len(summary.values) > 1:
        text += f" ({spread(summary, '{:,.0f}')})"
    return text


def format_ratio(value: float | None) -> str:
    if value is None:
        return MISSING
    if value >= 10:
        return f"{value:,.0f}{TIMES}"
    return f"{value:.2f}{TIMES}" if value >= 0.1 else f"{value:.2g}{TIMES}"


def save(results: list[QueueResult], context: dict[str, Any], markdown: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "latest.md").write_text(markdown)
    document = {
        **context,
        "queues": [
            {
                "name": result.name,
                "title": result.title,
                "setup": result.setup,
                "status": result.status,
                "reason": result.reason,
                "notes": result.notes,
                "figures": {key: summary.as_dict() for key, summary in result.figures.items()},
                "series": result.series,
            }
            for result in results
        ],
    }
    (folder / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    with open(folder / "latency.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["queue", "round", "probe", "latency_ms"])
        for result in results:
            for round_, run in enumerate(result.series.get("latency_ms", []), start=1):
                writer.writerows(
                    [result.name, round_, probe, f"{value:.3f}"] for probe, value in enumerate(run)
                )
