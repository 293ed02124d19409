"""
The arithmetic and report of the A/B comparison (bench/compare.py): runs
taken in pairs, one of each side, and judged by the ratio within each pair.

The machine's CPUs change speed by up to 1.7 times within seconds, and a test run
beside the benchmark takes a core away: two runs seconds apart see nearly the
same machine, two runs minutes apart do not. So each figure is judged by the
per-pair ratios B/A, not by the two sides' medians, and the order within a
pair alternates (A then B, B then A) so that whatever the second run of a pair
inherits from the first (a warm cache, a server still writing its WAL) falls
on each side alike.

The median ratio's interval is distribution-free: the order statistics that a
sign test puts around the median (with 12 pairs, the 3rd and the 10th smallest
ratio cover it 96% of the time), so a single run slowed by a neighbour moves
neither end of it.
"""

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import DASH, MISSING, table
from bench.stats import Summary, summarize

CONFIDENCE = 0.95
A, B = "A", "B"


@dataclass(frozen=True, slots=True)
class Figure:
    key: str
    label: str
    format: str
    higher_is_better: bool


FIGURES = (
    Figure("enqueue_per_s", "enqueue one/s", "{:,.0f}", True),
    Figure("jobs_per_s", "processed/s", "{:,.0f}", True),
    Figure("steady_per_s", "steady/s", "{:,.0f}", True),
    Figure("latency_p50_ms", "idle latency p50 ms", "{:.2f}", False),
    Figure("latency_p99_ms", "idle latency p99 ms", "{:.2f}", False),
    Figure("commits_per_job", "commits/job", "{:.4f}", False),
    Figure("rows_written_per_job", "rows written/job", "{:.3f}", False),
    Figure("wal_bytes_per_job", "WAL bytes/job", "{:,.0f}", False),
)


@dataclass(frozen=True, slots=True)
class Row:
    """One figure of both sides, and the ratio of B over A within each pair."""

    figure: Figure
    a: Summary | None
    b: Summary | None
    ratios: list[float]
    median: float | None
    interval: tuple[float, float] | None
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure.key,
            "label": self.figure.label,
            "a": self.a.as_dict() if self.a else None,
            "b": self.b.as_dict() if self.b else None,
            "ratios": self.ratios,
            "ratio_median": self.median,
            "ratio_interval": list(self.interval) if self.interval else None,
            "verdict": self.verdict,
        }


def pair_order(index: int) -> tuple[str, str]:
    """A then B in even pairs, B then A in odd ones: neither side always runs second."""
    return (A, B) if index % 2 == 0 else (B, A)


def paired_ratios(a: list[float | None], b: list[float | None]) -> list[float]:
    """B over A within each pair; a pair where either run lacks the figure is left out."""
    return [
        after / before
        for before, after in zip(a, b, strict=True)
        if before is not None and after is not None and before != 0
    ]


def median_interval(
    values: list[float], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """
    The sign test's interval for the median: the k-th smallest and k-th
    largest value, k the largest that covers the median with the confidence
    asked, whatever the values' distribution. None when there are too few
    values for any (fewer than 6 for 95%).
    """
    n = len(values)
    ordered = sorted(values)
    best = None
    for k in range(1, n // 2 + 1):
        below = sum(math.comb(n, i) for i in range(k)) / 2**n
        if 1 - 2 * below < confidence:
            break
        best = (ordered[k - 1], ordered[n - k])
    return best


def verdict(interval: tuple[float, float] | None, higher_is_better: bool) -> str:
    """
    "same" unless the interval of B/A lies wholly above or below 1; then
    whether B is faster or slower (for a count per job, slower: more work).
    """
    if interval is None or interval[0] <= 1 <= interval[1]:
        return "same"
    b_is_higher = interval[0] > 1
    return "faster" if b_is_higher == higher_is_better else "slower"


def compare(runs: dict[str, list[dict[str, float | None]]]) -> list[Row]:
    """Every figure of FIGURES from the runs of A and B, one run of each per pair, in order."""
    rows = []
    for figure in FIGURES:
        a = [run.get(figure.key) for run in runs[A]]
        b = [run.get(figure.key) for run in runs[B]]
        ratios = paired_ratios(a, b)
        interval = median_interval(ratios)
        rows.append(
            Row(
                figure,
                summarize(a),
                summarize(b),
                ratios,
                statistics.median(ratios) if ratios else None,
                interval,
                verdict(interval, figure.higher_is_better),
            )
        )
    return rows


def side_cell(summary: Summary | None, format: str) -> str:
    if summary is None:
        return MISSING
    low, high = format.format(summary.min), format.format(summary.max)
    return f"{format.format(summary.median)} [{low}{DASH}{high}]"


def render(rows: list[Row], context: dict[str, Any]) -> str:
    """The comparison as Markdown: what ran, one row a figure, and how to read it."""
    header = [
        "figure",
        f"A: {context['a']['name']}, median [min{DASH}max]",
        f"B: {context['b']['name']}, median [min{DASH}max]",
        "B/A",
        f"B/A {CONFIDENCE:.0%} interval",
        "verdict",
    ]
    body = []
    for row in rows:
        fmt = row.figure.format
        interval = MISSING
        if row.interval:
            interval = f"{row.interval[0]:.3f}{DASH}{row.interval[1]:.3f}"
        median = MISSING if row.median is None else f"{row.median:.3f}"
        cells = [side_cell(row.a, fmt), side_cell(row.b, fmt), median, interval]
        body.append([row.figure.label, *cells, row.verdict])
    described = [
        f"- {side['label']}: {side['describe']}; jobs from {side['jobs']}"
        for side in (context["a"], context["b"])
    ]
    lines = [
        f"# {context['b']['name']} (B) against {context['a']['name']} (A)",
        "",
        f"{context['date']}, `{context['command']}`; {context['machine']}, {context['postgres']}.",
        f"{context['pairs']} pairs of runs, each of {context['jobs']:,} jobs and "
        f"{context['probes']:,} latency probes, in the order A B, B A, A B, … after one "
        "run of each side not counted.",
        "",
        *described,
        "",
        table(header, body),
        "",
        f"B/A is the median of the {context['pairs']} per-pair ratios; its interval is the "
        f"sign test's {CONFIDENCE:.0%} interval of that median (none with fewer than 6 "
        'pairs). The verdict is "same" unless the interval excludes 1; for a count per '
        'job, "slower" means more work. Commits and rows written are this database\'s '
        "alone; WAL bytes are the whole server's. Statements are not counted: that needs "
        "pg_stat_statements in the server's shared_preload_libraries.",
    ]
    return "\n".join(lines) + "\n"


def save(
    rows: list[Row],
    context: dict[str, Any],
    runs: dict[str, list[dict[str, float | None]]],
    markdown: str,
    folder: Path,
) -> None:
    """compare.md and compare.json in folder: the table, and every run's figures in order."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compare.md").write_text(markdown)
    data = {"context": context, "rows": [row.as_dict() for row in rows], "runs": runs}
    (folder / "compare.json").write_text(json.dumps(data, indent=2) + "\n")
