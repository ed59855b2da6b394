"""How far incremental runs may skip: the watermark each upstream's copy is proven complete to.

An incremental run asks the upstream for records changed at or after `watermark - lookback`.
The watermark moves only when a run succeeds, only forward, and only to what the run proved:
the newest `updated_at` it read, but never past the upstream's own clock when the run's
first page was served (its Date header). A record changed during the walk, on a page the
walk had already read, has an `updated_at` after that moment, so the next run asks for it
again. The lookback covers what the upstream commits late with an earlier `updated_at`
(a long transaction, a replica behind its primary): re-reading it costs nothing, since
unchanged rows are not rewritten. Never the wall clock: ours says nothing about theirs.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F
from django.db.models.functions import Greatest

from ingestion.models import IngestRun, SyncCursor


def record_time(value) -> datetime | None:
    """A record's `updated_at` value as a time, when it is an ISO-8601 time with an offset;
    None otherwise (it does not count)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.utcoffset() is not None else None


def newest(values) -> datetime | None:
    """The latest of the `updated_at` values that are times (`record_time`), or None."""
    return max(filter(None, map(record_time, values)), default=None)


def since_for(source_url: str) -> datetime | None:
    """Where an incremental run of `source_url` starts reading changes; None when no run has proven any."""
    cursor = SyncCursor.objects.filter(source_url=source_url).first()
    if cursor is None:
        return None
    return cursor.watermark - timedelta(seconds=settings.INGESTION_LOOKBACK)


def proven(run: IngestRun) -> datetime | None:
    """The watermark a succeeded run has earned, or None when it read no dated record."""
    if run.high_water is None:
        return None
    if run.upstream_started_at is None:
        return run.high_water
    return min(run.high_water, run.upstream_started_at)


def advance(run: IngestRun) -> SyncCursor | None:
    """Move the run's source's watermark forward to what the succeeded run proved; never back."""
    moment = proven(run)
    if moment is None or run.dry_run:
        return SyncCursor.objects.filter(source_url=run.source_url).first()
    cursor, created = SyncCursor.objects.get_or_create(
        source_url=run.source_url, defaults={"watermark": moment, "run": run}
    )
    if not created:
        SyncCursor.objects.filter(pk=cursor.pk, watermark__lt=moment).update(
            watermark=Greatest(F("watermark"), moment), run=run
        )
        cursor.refresh_from_db()
    return cursor
