"""Pictures of runs for the admin, drawn as inline SVG on the server.

Server-side SVG rather than a charting library: a few dozen rectangles need no JavaScript,
nothing to vendor or keep patched, and nothing the Content Security Policy must allow
(colours are CSS classes from our own static file). The geometry is computed here; the
templates under templates/admin/ingestion/ only place it.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Count

from ingestion.models import ACTIVE_STATUSES, IngestFailure, IngestRun

# The run list's charts show this many of the newest runs that started.
HISTORY_RUNS = 30
WIDTH, HEIGHT = 600, 120


@dataclass(frozen=True)
class Segment:
    """One rectangle: a bar, or a part of a stacked bar. `kind` is its CSS class."""

    x: float
    y: float
    width: float
    height: float
    kind: str
    value: float
    label: str
    run_id: int | None = None


@dataclass
class Chart:
    title: str
    unit: str
    peak: float
    segments: list[Segment] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (label, kind)
    width: int = WIDTH
    height: int = HEIGHT


def recent_runs(limit: int = HISTORY_RUNS) -> list[IngestRun]:
    """The newest runs that started, oldest first (the order the charts read left to right)."""
    started = IngestRun.objects.filter(started_at__isnull=False).order_by("-started_at", "-id")[:limit]
    return list(reversed(started))


def throughput_chart(runs: list[IngestRun]) -> Chart:
    """Rows fetched per second, one bar per run, coloured by the run's status."""
    rates = [run.records_per_second or 0.0 for run in runs]
    chart = Chart("Rows per second, last runs", "rows/s", max(rates, default=0.0))
    slot = WIDTH / max(len(runs), 1)
    for index, (run, rate) in enumerate(zip(runs, rates, strict=True)):
        height = _scaled(rate, chart.peak)
        label = f"Run {run.pk}: {rate:,.0f} rows/s, {run.fetched:,} rows, {run.status}"
        chart.segments.append(
            Segment(index * slot + 1, HEIGHT - height, slot - 2, height, run.status, rate, label, run.pk)
        )
    chart.legend = [(status, status) for status in sorted({run.status for run in runs})]
    return chart


def failures_chart(runs: list[IngestRun]) -> Chart:
    """Each run's failure rows, stacked by reason (one query for every run shown)."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    rows = (
        IngestFailure.objects.filter(run__in=[run.pk for run in runs])
        .order_by()
        .values_list("run_id", "reason")
        .annotate(count=Count("pk"))
    )
    for run_id, reason, count in rows:
        counts[run_id][reason] = count
    totals = [sum(counts[run.pk].values()) for run in runs]
    chart = Chart("Failures by reason, last runs", "failures", max(totals, default=0))
    reasons = sorted({reason for by_reason in counts.values() for reason in by_reason})
    kinds = {reason: f"reason-{index % 8}" for index, reason in enumerate(reasons)}
    slot = WIDTH / max(len(runs), 1)
    for index, run in enumerate(runs):
        top = HEIGHT
        for reason in reasons:
            count = counts[run.pk].get(reason, 0)
            if not count:
                continue
            height = _scaled(count, chart.peak)
            top -= height
            label = f"Run {run.pk}: {count:,} {reason}"
            chart.segments.append(Segment(index * slot + 1, top, slot - 2, height, kinds[reason], count, label, run.pk))
    chart.legend = list(kinds.items())
    return chart


@dataclass(frozen=True)
class Breakdown:
    """A run's outcomes as one stacked bar, and whether they add up to what it fetched."""

    fetched: int
    parts: list[tuple[str, int]]
    segments: list[Segment]
    adds_up: bool
    width: int = WIDTH


def outcome_breakdown(run: IngestRun) -> Breakdown:
    parts = [(name, getattr(run, name)) for name in IngestRun.OUTCOMES]
    total = sum(count for _, count in parts)
    segments, left = [], 0.0
    for name, count in parts:
        width = WIDTH * count / total if total else 0.0
        if width:
            segments.append(Segment(left, 0, width, 18, name, count, f"{count:,} {name}"))
        left += width
    return Breakdown(run.fetched, parts, segments, adds_up=total == run.fetched)


@dataclass(frozen=True)
class Progress:
    """Where a run is: pages done of pages expected (unknown until its first page), and whether it is active."""

    done: int
    expected: int | None
    active: bool

    @property
    def percent(self) -> int | None:
        return None if not self.expected else min(100, round(100 * self.done / self.expected))


def progress(run: IngestRun) -> Progress:
    return Progress(run.pages_done, run.pages_expected, run.status in ACTIVE_STATUSES)


def progress_document(run: IngestRun) -> dict:
    """What the run page's progress bar polls for (the admin's `progress/` view)."""
    where = progress(run)
    return {
        "status": run.status,
        "status_display": run.get_status_display(),
        "active": where.active,
        "pages_done": where.done,
        "pages_expected": where.expected,
        "percent": where.percent,
        "adds_up": outcome_breakdown(run).adds_up,
        **run.counters(),
    }


def _scaled(value: float, peak: float) -> float:
    # The tallest bar fills the chart; a value that is not zero stays visible.
    if not value or not peak:
        return 0.0
    return max(2.0, (HEIGHT - 4) * value / peak)
