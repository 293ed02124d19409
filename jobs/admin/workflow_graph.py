"""
A workflow's graph on its admin page, drawn on the server as inline SVG:
each job a box coloured by its status and linked to its page, in columns by
depth (a job stands right of every job it waits for), each edge a curve from
parent to child. No script and no layout library: as the dashboard's charts
(jobs.admin.charts), it renders at once, behind any content security policy,
and the page's live part redraws it with the statuses.
"""

from collections.abc import Callable, Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from ..models import Dependency, Job

# Past this many jobs the page lists them without drawing the graph: a
# drawing of thousands of boxes tells an operator less than the list does.
MOST_JOBS_DRAWN = 200

BOX_WIDTH, BOX_HEIGHT = 150, 26
COLUMN_GAP, ROW_GAP = 40, 10
MARGIN = 4


def workflow_graph(
    jobs: Sequence[Job], edges: Sequence[Dependency], url_of: Callable[[Job], str]
) -> SafeString | None:
    """The graph of a workflow's jobs (in graph order), or None when too large to draw."""
    if not jobs or len(jobs) > MOST_JOBS_DRAWN:
        return None
    parents: dict[str, list[str]] = {str(job.pk): [] for job in jobs}
    for edge in sorted(edges, key=lambda edge: edge.position):
        if str(edge.child_id) in parents and str(edge.parent_id) in parents:
            parents[str(edge.child_id)].append(str(edge.parent_id))
    depth: dict[str, int] = {}
    rows: dict[int, int] = {}
    place: dict[str, tuple[int, int]] = {}
    # Graph order: every parent comes before its children.
    for job in jobs:
        key = str(job.pk)
        depth[key] = 1 + max((depth[p] for p in parents[key]), default=-1)
        place[key] = (depth[key], rows.get(depth[key], 0))
        rows[depth[key]] = place[key][1] + 1
    width = (max(rows) + 1) * (BOX_WIDTH + COLUMN_GAP) - COLUMN_GAP + 2 * MARGIN
    height = max(rows.values()) * (BOX_HEIGHT + ROW_GAP) - ROW_GAP + 2 * MARGIN
    body = [_edge(place[parent], place[child]) for child in parents for parent in parents[child]]
    body += [_box(job, place[str(job.pk)], url_of(job)) for job in jobs]
    # Every text in body went through escape().
    return mark_safe(
        f'<svg class="jobs-graph" role="img" aria-label="The workflow\'s graph" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
        + "".join(body)
        + "</svg>"
    )


def _origin(column: int, row: int) -> tuple[int, int]:
    return MARGIN + column * (BOX_WIDTH + COLUMN_GAP), MARGIN + row * (BOX_HEIGHT + ROW_GAP)


def _edge(parent: tuple[int, int], child: tuple[int, int]) -> str:
    x1, y1 = _origin(*parent)
    x2, y2 = _origin(*child)
    x1, y1, y2 = x1 + BOX_WIDTH, y1 + BOX_HEIGHT // 2, y2 + BOX_HEIGHT // 2
    bend = COLUMN_GAP // 2
    return (
        f'<path class="jobs-graph-edge" d="M{x1},{y1} C{x1 + bend},{y1} '
        f'{x2 - bend},{y2} {x2},{y2}"/>'
    )


def _box(job: Job, where: tuple[int, int], url: str) -> str:
    x, y = _origin(*where)
    name = job.task_path.rsplit(".", 1)[-1]
    label = name if len(name) <= 18 else name[:17] + "…"
    status = job.status.lower()
    return (
        f'<a href="{escape(url)}"><title>{escape(job.task_path)}: {escape(job.status)}, '
        f"attempt {job.attempts} of {job.max_attempts}</title>"
        f'<rect class="jobs-graph-node jobs-graph-{escape(status)}" x="{x}" y="{y}" '
        f'width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="4"/>'
        f'<text x="{x + 8}" y="{y + BOX_HEIGHT // 2 + 4}">{escape(label)}</text></a>'
    )
