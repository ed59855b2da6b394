"""Human-readable one-liners about a run, for the command line and logs."""

from ingestion.deletions import held_notice
from ingestion.models import IngestRun, RunMode, RunStatus

_BAR_WIDTH = 30


def progress_line(run: IngestRun) -> str:
    """`[#######-------] page 12/100  1,200 records  4,321 rec/s`"""
    expected = run.pages_expected or 0
    done = min(run.pages_done, expected) if expected else run.pages_done
    filled = int(_BAR_WIDTH * done / expected) if expected else 0
    bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
    rate = run.records_per_second or 0
    return f"[{bar}] page {done}/{expected or '?'}  {run.fetched:,} records  {rate:,.0f} rec/s"


def summary_line(run: IngestRun) -> str:
    """`Run 7 succeeded in 2.1 s: fetched 10,050 = inserted 9,950 + ...`"""
    counters = " + ".join(f"{name} {value:,}" for name, value in run.counters().items() if name != "fetched")
    line = (
        f"{_headline(run)}: fetched {run.fetched:,} = {counters}; "
        f"pages {run.pages_done}/{run.pages_expected or 0}; retries {run.retries}"
    )
    if run.deleted or run.restored:
        line += f"; deleted {run.deleted:,}, restored {run.restored:,}"
    if run.mode == RunMode.INCREMENTAL:
        line += f"; incremental since {run.updated_since:%Y-%m-%dT%H:%M:%SZ}, tombstones {run.tombstones:,}"
    if run.dry_run:
        line += " (dry run: nothing written to customers)"
    notice = held_notice(run)
    if notice:
        line += f". {notice[0].upper()}{notice[1:]}"
    if run.error:
        line += f". Error: {run.error}"
    return line


def cancelled_keeps(run: IngestRun) -> str:
    """`the 3 pages (300 records) it committed`: what a cancelled run keeps for its resume."""
    pages = "page" if run.pages_done == 1 else "pages"
    return f"the {run.pages_done:,} {pages} ({run.fetched:,} records) it committed"


def _headline(run: IngestRun) -> str:
    seconds = run.duration_seconds
    if run.status == RunStatus.CANCELLED:
        return f"Run {run.pk} was cancelled " + (
            f"after {seconds:.1f} s" if seconds is not None else "before it started"
        )
    return f"Run {run.pk} {run.status} in " + (f"{seconds:.1f} s" if seconds is not None else "no time")
