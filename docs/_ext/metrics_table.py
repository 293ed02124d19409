"""
The `metrics-table` directive: every metric of `/metrics`, from the code that
renders them (`jobs.metrics.render_prometheus`), with its help text.
"""

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from jobs.metrics import Latency, Snapshot, render_prometheus


class MetricsTable(SphinxDirective):
    def run(self) -> list[nodes.Node]:
        empty = Snapshot(
            queues=[],
            minutes=[],
            latency=Latency(count=0, total=0.0, p50=None, p95=None, p99=None, buckets=()),
            workers=[],
        )
        rows = [
            line.removeprefix("# HELP ").split(" ", 1)
            for line in render_prometheus(empty, totals={}).splitlines()
            if line.startswith("# HELP ")
        ]
        return [_table(["metric", "what it counts"], rows)]


def _table(header: list[str], rows: list[list[str]]) -> nodes.table:
    group = nodes.tgroup(cols=len(header))
    group += [nodes.colspec(colwidth=1) for _ in header]
    group += nodes.thead("", _row(header, literal_first=False))
    group += nodes.tbody("", *(_row(row, literal_first=True) for row in rows))
    table = nodes.table()
    table += group
    return table


def _row(cells: list[str], literal_first: bool) -> nodes.row:
    row = nodes.row()
    for index, cell in enumerate(cells):
        text = nodes.literal(cell, cell) if literal_first and index == 0 else nodes.Text(cell)
        row += nodes.entry("", nodes.paragraph("", "", text))
    return row


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("metrics-table", MetricsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
