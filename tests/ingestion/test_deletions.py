"""Sync against a real mocksource over HTTP: deletions after complete full runs, the guard, restores,
incremental runs with a watermark and tombstones (ingestion/deletions.py, watermarks.py, tombstones.py)."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from customers.models import Customer
from ingestion import deletions
from ingestion.models import IngestFailure, IngestRun, SyncCursor
from mocksource.dataset import write_dataset
from mocksource.faults import FaultConfig
from tests.records import record
from tests.upstream import running_mocksource

pytestmark = pytest.mark.django_db(transaction=True)

_START = datetime(2026, 1, 1, tzinfo=UTC)


def _at(hours: float) -> str:
    return (_START + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def dated(index: int, hours: float | None = None, **overrides) -> dict:
    """Record `index`, last modified upstream `hours` after the start (default: `index` hours)."""
    return record(index, updated_at=_at(index if hours is None else hours), **overrides)


def ingest(*args) -> tuple[IngestRun, str]:
    out = StringIO()
    try:
        call_command("ingest_customers", "--quiet", *args, stdout=out)
    except CommandError as exc:
        return IngestRun.objects.order_by("-id").first(), str(exc)
    return IngestRun.objects.order_by("-id").first(), out.getvalue()


@pytest.fixture
def upstream(tmp_path):
    """One mocksource for the whole test (the watermark is per source), serving each generation written."""
    path = tmp_path / "customers.jsonl"
    write_dataset([], path)
    with running_mocksource(path) as base_url:
        yield Upstream(path, base_url)


class Upstream:
    def __init__(self, path, base_url):
        self.path, self.base_url = path, base_url

    def sync(self, source, tombstones=(), *args) -> tuple[IngestRun, str]:
        """Serve `source` (and `tombstones`) as the next generation, then run an ingestion against it."""
        write_dataset(source, self.path, tombstones=tombstones)
        return ingest("--source-url", self.base_url, *args)


def live_ids() -> set[str]:
    return {str(value) for value in Customer.objects.live().values_list("customer_id", flat=True)}


def ids(source) -> set[str]:
    return {item["customer_id"] for item in source}


def adds_up(run: IngestRun) -> bool:
    counters = run.counters()
    return counters.pop("fetched") == sum(counters.values())


def test_a_complete_full_run_soft_deletes_the_customers_the_upstream_no_longer_lists(upstream):
    source = [dated(index) for index in range(40)]
    upstream.sync(source)

    run, output = upstream.sync(source[:10] + source[11:])

    gone = Customer.objects.get(customer_id=source[10]["customer_id"])
    assert (run.status, run.deleted, run.deletions_held) == ("succeeded", 1, 0)
    assert (gone.deleted_by_run, gone.deleted_at is not None) == (run.pk, True)
    assert live_ids() == ids(source) - {source[10]["customer_id"]}
    assert adds_up(run) and "deleted 1, restored 0" in output


def test_a_failed_walk_deletes_nothing(tmp_path, settings):
    path, source = tmp_path / "customers.jsonl", [dated(index) for index in range(40)]
    write_dataset(source, path)
    settings.INGESTION_MAX_RETRIES = 50
    with running_mocksource(path, faults=FaultConfig(error_rate=0.5, seed=1)) as base_url:
        ingest("--source-url", base_url)
        write_dataset(source[:5], path)  # a short listing, and the upstream fails half its requests
        settings.INGESTION_MAX_RETRIES = 0
        run, _ = ingest("--source-url", base_url, "--page-size", "1")

    assert run.status == "failed" and run.deleted == 0
    assert live_ids() == ids(source)


def test_the_guard_holds_a_mass_deletion_until_an_operator_releases_it(upstream):
    source = [dated(index) for index in range(40)]
    upstream.sync(source)

    run, output = upstream.sync(source[:30])  # 10 of 40 gone: 25 %, over the 5 % guard

    assert (run.status, run.deleted, run.deletions_held) == ("succeeded", 0, 10)
    assert "10 deletions held by the mass-deletion guard" in output
    assert f"--release-deletions {run.pk}" in output
    assert live_ids() == ids(source)
    assert deletions.pending() == run

    out = StringIO()
    call_command("ingest_customers", "--release-deletions", str(run.pk), stdout=out)

    run.refresh_from_db()
    assert live_ids() == ids(source[:30])
    assert (run.deleted, run.deletions_released_by) == (10, "an operator on the command line")
    assert "10 customers deleted" in out.getvalue()
    assert deletions.pending() is None
    with pytest.raises(CommandError, match="already released"):
        call_command("ingest_customers", "--release-deletions", str(run.pk), stdout=StringIO())


def test_an_empty_listing_never_deletes_without_a_release(upstream):
    source = [dated(index) for index in range(40)]
    upstream.sync(source)

    run, _ = upstream.sync([])

    assert (run.status, run.deleted, run.deletions_held) == ("succeeded", 0, 40)
    assert live_ids() == ids(source)


def test_a_release_spares_customers_a_later_run_read(upstream):
    source = [dated(index) for index in range(40)]
    upstream.sync(source)
    held, _ = upstream.sync(source[:30])
    back = dated(35, hours=60)  # an incremental run reads customer 35 again meanwhile
    upstream.sync([*source[:30], back], (), "--mode", "incremental")

    released = deletions.release(held.pk, by="test")

    assert released.deleted == 9
    assert live_ids() == ids(source[:30]) | {back["customer_id"]}
    again, _ = upstream.sync(source[:30])
    with pytest.raises(deletions.RunRefused, match="holds no deletions"):
        deletions.release(again.pk, by="test")


def test_a_deleted_customer_who_reappears_is_restored_in_place(upstream):
    source = [dated(index) for index in range(40)]
    upstream.sync(source)
    seq = Customer.objects.get(customer_id=source[3]["customer_id"]).seq
    upstream.sync(source[:3] + source[4:])

    run, output = upstream.sync(source)

    back = Customer.objects.get(customer_id=source[3]["customer_id"])
    assert (back.deleted_at, back.deleted_by_run, back.seq) == (None, None, seq)
    assert (run.restored, run.updated, run.deleted) == (1, 1, 0)
    assert adds_up(run) and "restored 1" in output


def test_a_deleted_customer_frees_its_email_and_restoring_it_then_is_a_recorded_conflict(upstream):
    source = [dated(index) for index in range(40)]
    upstream.sync(source)
    upstream.sync(source[1:])
    # Re-created upstream under a new id with the same email: not a conflict.
    newcomer = dated(100, email=source[0]["email"])
    run, _ = upstream.sync([*source[1:], newcomer])
    assert (run.inserted, run.conflicts) == (1, 0)

    run, _ = upstream.sync([*source, newcomer])  # the old account comes back too

    failure = IngestFailure.objects.get(run=run)
    assert (run.status, run.conflicts, run.restored) == ("succeeded", 1, 0)
    assert (str(failure.customer_id), failure.reason) == (source[0]["customer_id"], "email_conflict")
    assert str(failure.conflicting_customer_id) == newcomer["customer_id"]
    assert Customer.objects.get(customer_id=source[0]["customer_id"]).deleted_at is not None


def test_an_incremental_run_reads_only_what_changed_and_applies_the_upstream_tombstones(upstream):
    source = [dated(index) for index in range(40)]
    upstream.sync(source)
    assert SyncCursor.objects.get().watermark == _START + timedelta(hours=39)
    changed = dated(5, hours=50, last_name="Changed")
    added = dated(60, hours=51)
    current = [*source[:5], changed, *source[6:20], *source[21:], added]
    tombstones = [{"customer_id": source[20]["customer_id"], "deleted_at": _at(52)}]

    run, output = upstream.sync(current, tombstones, "--mode", "incremental")

    assert (run.mode, run.status) == ("incremental", "succeeded")
    assert run.updated_since == _START + timedelta(hours=39) - timedelta(seconds=300)
    # Record 39 sits at the watermark itself: read again, unchanged.
    assert (run.fetched, run.inserted, run.updated, run.unchanged) == (3, 1, 1, 1)
    assert (run.tombstones, run.deleted) == (1, 1)
    assert live_ids() == ids(current)
    assert Customer.objects.get(customer_id=changed["customer_id"]).last_name == "Changed"
    assert SyncCursor.objects.get().watermark == _START + timedelta(hours=51)
    assert "incremental since" in output


def test_the_first_incremental_run_without_a_watermark_is_a_full_run(upstream):
    source = [dated(index) for index in range(10)]

    run, _ = upstream.sync(source, (), "--mode", "incremental")

    assert (run.mode, run.updated_since, run.inserted) == ("full", None, 10)


def test_the_lookback_reads_a_change_committed_late_with_an_earlier_updated_at(upstream):
    source = [dated(index) for index in range(40)]
    upstream.sync(source)  # watermark: hour 39
    late = dated(7, hours=39 - 1 / 60, last_name="Late")  # one minute before the watermark

    run, _ = upstream.sync([*source[:7], late, *source[8:]], (), "--mode", "incremental")

    assert run.updated == 1
    assert Customer.objects.get(customer_id=late["customer_id"]).last_name == "Late"


def test_cursor_ties_split_across_pages_and_runs_lose_nothing(upstream):
    source = [dated(index) for index in range(10)]
    upstream.sync(source)
    # 25 records share one updated_at, across pages of 4; then 5 more at the same instant.
    tied = [dated(index, hours=20) for index in range(100, 125)]
    run, _ = upstream.sync([*source, *tied], (), "--mode", "incremental", "--page-size", "4")
    more = [dated(index, hours=20) for index in range(125, 130)]

    again, _ = upstream.sync([*source, *tied, *more], (), "--mode", "incremental", "--page-size", "4")

    assert (run.status, run.inserted) == ("succeeded", 25)
    assert (again.status, again.inserted, again.unchanged) == ("succeeded", 5, 25)
    assert live_ids() == ids([*source, *tied, *more])


def test_an_incremental_run_stopped_midway_resumes_and_ends_as_an_uninterrupted_one(tmp_path, settings):
    settings.INGESTION_BATCH_SIZE = 4
    path, source = tmp_path / "customers.jsonl", [dated(index) for index in range(10)]
    current = [*source[:9], *[dated(index, hours=30 + index) for index in range(100, 120)]]
    tombstones = [{"customer_id": source[9]["customer_id"], "deleted_at": _at(40)}]
    write_dataset(source, path)
    # One upstream that fails a third of its requests: with retries a run gets through, without them it stops.
    with running_mocksource(path, faults=FaultConfig(error_rate=0.3, seed=4)) as base_url:
        settings.INGESTION_MAX_RETRIES = 50
        ingest("--source-url", base_url)
        write_dataset(current, path, tombstones=tombstones)
        settings.INGESTION_MAX_RETRIES = 0
        stopped, _ = ingest("--source-url", base_url, "--mode", "incremental", "--page-size", "2")
        settings.INGESTION_MAX_RETRIES = 50
        run, _ = ingest("--resume", str(stopped.pk))

    assert (stopped.status, stopped.mode) == ("failed", "incremental")
    assert (run.pk, run.status, run.inserted, run.unchanged, run.deleted) == (stopped.pk, "succeeded", 20, 0, 1)
    assert run.attempt == 2 and adds_up(run)
    assert live_ids() == ids(current)


def test_a_later_complete_full_run_recomputes_held_deletions_so_the_old_hold_cannot_be_released(upstream):
    source = [dated(index) for index in range(40)]
    upstream.sync(source)
    held, _ = upstream.sync(source[:30])

    later, _ = upstream.sync(source[:30])

    assert later.deletions_held == 10 and deletions.pending() == later
    with pytest.raises(deletions.RunRefused, match=f"Run {later.pk}, a later complete full run, recomputed"):
        deletions.release(held.pk, by="test")
    assert live_ids() == ids(source)


def test_an_incremental_run_keeps_a_customer_recreated_after_a_tombstone_it_reads_too(upstream):
    source = [dated(index) for index in range(40)]
    upstream.sync(source)
    tombstones = [{"customer_id": source[10]["customer_id"], "deleted_at": _at(40)}]
    deleting, first = upstream.sync(source[:10] + source[11:], tombstones, "--mode", "incremental")

    # Re-created a minute after its tombstone: the next incremental run reads both.
    back = dated(10, hours=40 + 1 / 60, first_name="Back")
    run, output = upstream.sync([*source[:10], back, *source[11:]], tombstones, "--mode", "incremental")

    assert (deleting.status, deleting.deleted) == ("succeeded", 1), first
    assert (run.status, run.tombstones, run.deleted, run.restored) == ("succeeded", 1, 0, 1), output
    assert live_ids() == ids(source)
    assert Customer.objects.get(customer_id=back["customer_id"]).first_name == "Back"


def _refused_for_an_email(upstream) -> tuple[dict, dict, list[dict]]:
    """A first full run refuses `refused`: its email is `holder`'s, in other letters' case."""
    holder = dated(1)
    refused = dated(2, email=holder["email"].upper())
    others = [dated(index) for index in range(3, 10)]
    run, _ = upstream.sync([holder, refused, *others])
    assert (run.inserted, run.conflicts) == (8, 1)
    return holder, refused, others


def test_an_incremental_run_reads_again_a_record_refused_for_an_email_its_holder_let_go(upstream):
    # The refused record does not change upstream, so no incremental walk lists it: the run
    # asks for it by id because it changed the customer that held its email.
    _holder, refused, others = _refused_for_an_email(upstream)
    moved = dated(1, hours=50, email="moved.away@example.org")
    current = [moved, refused, *others]

    run, _ = upstream.sync(current, (), "--mode", "incremental")

    # The holder's change, record 9 at the watermark read again, and the refused record by id.
    assert (run.mode, run.status, run.fetched) == ("incremental", "succeeded", 3)
    assert (run.inserted, run.updated, run.unchanged, run.conflicts) == (1, 1, 1, 0)
    assert adds_up(run)
    assert live_ids() == ids(current)
    assert Customer.objects.get(customer_id=refused["customer_id"]).email == refused["email"]
    assert not IngestFailure.objects.filter(run=run).exists()


def test_an_incremental_run_reads_again_a_record_refused_for_the_email_of_a_customer_it_deletes(upstream, settings):
    settings.INGESTION_MAX_DELETE_RATIO = 1.0  # one of nine: far past the guard's 5 %
    holder, refused, others = _refused_for_an_email(upstream)
    current = [refused, *others]
    tombstones = [{"customer_id": holder["customer_id"], "deleted_at": _at(50)}]

    run, _ = upstream.sync(current, tombstones, "--mode", "incremental")

    assert (run.status, run.deleted, run.inserted, run.conflicts) == ("succeeded", 1, 1, 0)
    assert adds_up(run)
    assert live_ids() == ids(current)


def test_a_record_read_again_whose_email_is_still_taken_is_refused_again_and_counted(upstream):
    _holder, refused, others = _refused_for_an_email(upstream)
    renamed = dated(1, hours=50, last_name="Renamed")  # keeps the email

    run, _ = upstream.sync([renamed, refused, *others], (), "--mode", "incremental")

    failure = IngestFailure.objects.get(run=run)
    assert (run.status, run.fetched, run.updated, run.conflicts) == ("succeeded", 3, 1, 1)
    assert adds_up(run)
    assert (str(failure.customer_id), failure.reason, failure.page) == (refused["customer_id"], "email_conflict", 0)
    assert refused["customer_id"] not in live_ids()


def test_a_refused_record_the_upstream_no_longer_has_is_not_read_again(upstream):
    _holder, refused, others = _refused_for_an_email(upstream)
    moved = dated(1, hours=50, email="moved.away@example.org")
    tombstones = [{"customer_id": refused["customer_id"], "deleted_at": _at(50)}]

    run, _ = upstream.sync([moved, *others], tombstones, "--mode", "incremental")

    # The refused record's detail is a 404 now: nothing to read, nothing counted.
    assert (run.status, run.fetched, run.inserted, run.conflicts, run.deleted) == ("succeeded", 2, 0, 0, 0)
    assert live_ids() == ids([moved, *others])


def test_a_run_whose_read_again_fails_fails_and_its_resume_ends_like_an_uninterrupted_run(
    upstream, monkeypatch, settings
):
    from ingestion.source import UpstreamClient, UpstreamError

    settings.INGESTION_MAX_DELETE_RATIO = 1.0
    _holder, refused, others = _refused_for_an_email(upstream)
    moved = dated(1, hours=50, email="moved.away@example.org")
    gone = others[0]
    current = [moved, refused, *others[1:]]
    tombstones = [{"customer_id": gone["customer_id"], "deleted_at": _at(50)}]
    watermark = SyncCursor.objects.get().watermark
    real = UpstreamClient.fetch_record

    def unreachable(self, customer_id):
        raise UpstreamError(f"Customer {customer_id}: gave up after 6 attempts; last error: HTTP 503")

    monkeypatch.setattr(UpstreamClient, "fetch_record", unreachable)
    run, _ = upstream.sync(current, tombstones, "--mode", "incremental")

    assert (run.status, run.deleted, run.conflicts) == ("failed", 1, 0)
    assert "gave up after 6 attempts" in run.error
    assert SyncCursor.objects.get().watermark == watermark  # a failed run proves nothing

    monkeypatch.setattr(UpstreamClient, "fetch_record", real)
    run, _ = ingest("--resume", str(run.pk))

    # The deletion its first attempt applied still counts; the refused record is read now.
    assert (run.status, run.deleted, run.inserted, run.updated) == ("succeeded", 1, 1, 1)
    assert adds_up(run)
    assert live_ids() == ids(current)
    assert SyncCursor.objects.get().watermark > watermark


def test_a_full_run_that_deletes_a_customer_takes_the_record_it_refused_for_that_customers_email(upstream, settings):
    # The walk refuses the record while the holder is still live; the holder's deletion comes
    # only once the walk is complete, and frees the email within the same run.
    settings.INGESTION_MAX_DELETE_RATIO = 1.0
    _holder, refused, others = _refused_for_an_email(upstream)
    current = [refused, *others]

    run, _ = upstream.sync(current)

    assert (run.status, run.deleted, run.inserted, run.conflicts) == ("succeeded", 1, 1, 0)
    assert adds_up(run)
    assert live_ids() == ids(current)
    assert not IngestFailure.objects.filter(run=run).exists()


def test_an_incremental_run_that_deletes_a_customer_takes_the_record_it_refused_for_that_email(upstream, settings):
    settings.INGESTION_MAX_DELETE_RATIO = 1.0
    holder, refused, others = _refused_for_an_email(upstream)
    renamed = {**refused, "last_name": "Renamed", "updated_at": _at(50)}  # read by the walk, refused there
    current = [renamed, *others]
    tombstones = [{"customer_id": holder["customer_id"], "deleted_at": _at(50)}]

    run, _ = upstream.sync(current, tombstones, "--mode", "incremental")

    assert (run.status, run.deleted, run.inserted, run.conflicts) == ("succeeded", 1, 1, 0)
    assert adds_up(run)
    assert Customer.objects.get(customer_id=refused["customer_id"]).last_name == "Renamed"
    assert live_ids() == ids(current)


def test_a_record_refused_for_the_email_of_a_customer_whose_deletion_was_held_is_read_again_after_the_release(upstream):
    holder, refused, others = _refused_for_an_email(upstream)
    # A change newer than the tombstone moves the watermark past it: later runs do not list it again.
    later = dated(3, hours=60, last_name="Later")
    current = [refused, later, *others[1:]]
    tombstones = [{"customer_id": holder["customer_id"], "deleted_at": _at(50)}]
    held, _ = upstream.sync(current, tombstones, "--mode", "incremental")
    # One of nine: past the guard's 5 %, so the holder stays, and the record is refused again.
    assert (held.deletions_held, held.conflicts) == (1, 1)
    call_command("ingest_customers", "--release-deletions", str(held.pk), stdout=StringIO())

    run, _ = upstream.sync(current, tombstones, "--mode", "incremental")

    # Nothing this run reads names the holder: the record comes back because the holder was deleted since.
    assert (run.status, run.tombstones, run.inserted, run.conflicts) == ("succeeded", 0, 1, 0)
    assert live_ids() == ids(current)
    # Taken now: the next incremental run does not ask for it again.
    run, _ = upstream.sync(current, tombstones, "--mode", "incremental")
    assert (run.inserted, run.conflicts, run.fetched) == (0, 0, 1)


@pytest.mark.parametrize(
    ("answer", "fetched", "invalid"),
    [
        # Another customer's record for the id asked: it proves nothing about the one asked for.
        (lambda asked, other: other, 2, 0),
        # Valid JSON that is no record: refused with a reason, counted.
        (lambda asked, other: ["not", "a", "record"], 3, 1),
    ],
    ids=["another customer", "not an object"],
)
def test_a_hostile_answer_to_a_read_by_id_is_never_applied(upstream, monkeypatch, answer, fetched, invalid):
    from ingestion.source import UpstreamClient

    _holder, refused, others = _refused_for_an_email(upstream)
    moved = dated(1, hours=50, email="moved.away@example.org")
    stranger = dated(99, email="stranger@example.org")
    monkeypatch.setattr(UpstreamClient, "fetch_record", lambda self, customer_id: answer(customer_id, stranger))

    run, _ = upstream.sync([moved, refused, *others], (), "--mode", "incremental")

    assert (run.status, run.fetched, run.invalid, run.inserted) == ("succeeded", fetched, invalid, 0)
    assert adds_up(run)
    assert live_ids() == ids([moved, *others])
