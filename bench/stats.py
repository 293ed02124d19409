"""Each figure's repeats reduced to median, min and max."""

import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    median: float
    min: float
    max: float
    values: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(values: list[float | None]) -> Summary | None:
    """None when no repeat produced the figure (a peer without a batch API, say)."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    return Summary(statistics.median(present), min(present), max(present), present)


def ratio(ours: Summary | None, theirs: Summary | None) -> float | None:
    """Our median over theirs."""
    if ours is None or theirs is None or theirs.median == 0:
        return None
    return ours.median / theirs.median


def percentile(values: list[float], p: float) -> float:
    """
    The p-th percentile (to a tenth: 99.9) of sorted values, interpolated as
    numpy's default is.
    """
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(p * 10) - 1]
