"""ingestion/erasure.py and its doors: a person erased is gone from every table we keep, stays gone
through later ingestions (counted `suppressed`) until the suppression is lifted, and leaves an audit."""

import io
import logging
import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts import api_keys
from customers.models import Customer, CustomerChange
from ingestion import erasure
from ingestion.models import Erasure, ErasureDoor, IngestFailure, StagedCustomer, Suppression
from tests.ingestion.fakes import FakeUpstream
from tests.records import record, records

pytestmark = pytest.mark.django_db

PERSON = 1
PERSON_ID = uuid.UUID(record(PERSON)["customer_id"])
# What identifies the person: searched for in every text and JSON column of the database.
TRACES = ("customer1@example.com", "First1", "Last1", "Married1", "+1-555-000-0001", "2 Main Street")


def _tables_holding(*needles: str) -> dict[str, int]:
    """Every (table.column) of the database whose text, JSON or UUID holds one of `needles`, with how many rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND data_type IN ('text', 'character varying', 'json', 'jsonb', 'ARRAY', 'uuid')"
        )
        columns = cursor.fetchall()
        found = {}
        for table, column in columns:
            for needle in needles:
                cursor.execute(
                    f'SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE %s',  # noqa: S608
                    [f"%{needle}%"],
                )
                if count := cursor.fetchone()[0]:
                    found[f"{table}.{column} ~ {needle}"] = count
    return found


@pytest.fixture
def person_everywhere(ingest):
    """The person in every copy: a customer with history, staged rows, an invalid record of theirs,
    and another record refused for taking their email."""
    ingest(FakeUpstream(records(4)), page_size=10)
    upstream = records(4)
    upstream[PERSON] = record(PERSON, last_name="Married1")
    upstream.append({**record(PERSON), "date_of_birth": "not a date"})  # an invalid read of the same id
    upstream.append(record(9, email="CUSTOMER1@example.com"))  # another customer wanting their email
    run = ingest(FakeUpstream(upstream), page_size=10)
    assert (run.updated, run.invalid, run.conflicts) == (1, 1, 1)
    assert _tables_holding(*TRACES)
    return upstream


def test_after_an_erasure_no_table_holds_the_persons_email_name_or_phone(person_everywhere):
    entry = erasure.erase(PERSON_ID, by="dpo", door=ErasureDoor.COMMAND, reason="GDPR art. 17 request")
    assert _tables_holding(*TRACES) == {}
    assert _tables_holding(str(PERSON_ID)) == {"customers_customerchange.customer_id ~ " + str(PERSON_ID): 1}
    assert entry.removed["customers"] == 1 and entry.removed["events"] == 2
    assert entry.removed["staged"] == 2 and entry.removed["failures"] == 2
    # Everyone else is untouched.
    assert Customer.objects.live().count() == 3
    assert Customer.objects.get(customer_id=record(2)["customer_id"]).email == "customer2@example.com"


def test_the_erased_row_stays_an_anonymous_deleted_slot_so_the_listing_stays_dense(person_everywhere):
    seq = Customer.objects.get(customer_id=PERSON_ID).seq
    erasure.erase(PERSON_ID, by="dpo", door=ErasureDoor.COMMAND)
    slot = Customer.objects.get(seq=seq)
    assert slot.customer_id != PERSON_ID
    assert (slot.first_name, slot.email, slot.phone, slot.deleted_by_run) == ("", "", None, None)
    assert slot.deleted_at is not None and slot.erased_at is not None
    assert Customer.objects.live_count() == 3


def test_the_feed_keeps_gapless_tombstones_and_ends_with_an_erased_event(person_everywhere):
    before = list(CustomerChange.objects.values_list("cursor", flat=True))
    erasure.erase(PERSON_ID, by="dpo", door=ErasureDoor.COMMAND)
    events = list(CustomerChange.objects.order_by("cursor"))
    assert [e.cursor for e in events] == [*before, before[-1] + 1]
    assert (events[-1].kind, events[-1].customer_id, events[-1].has_state) == ("erased", PERSON_ID, False)
    tombstones = [e for e in events if e.customer_id is None]
    assert [(e.kind, e.has_state, e.changed) for e in tombstones] == [("inserted", False, 0), ("updated", False, 0)]


def test_a_later_ingestion_that_still_has_the_person_skips_them_as_suppressed(ingest, person_everywhere, caplog):
    erasure.erase(PERSON_ID, by="dpo", door=ErasureDoor.COMMAND)
    head = CustomerChange.objects.count()
    # Without the other customer that wanted their email: with the person gone, it may now have it.
    with caplog.at_level(logging.DEBUG):
        run = ingest(FakeUpstream(person_everywhere[:-1]), page_size=10)
    assert run.status == "succeeded"
    assert run.suppressed == 2  # the valid read and the invalid one
    assert sum(run.counters().values()) - run.fetched == run.fetched
    assert _tables_holding(*TRACES) == {}
    assert CustomerChange.objects.count() == head
    assert not any(trace in caplog.text for trace in (*TRACES, str(PERSON_ID)))
    # A full run's deletions do not count the suppressed as unseen: nothing live was theirs.
    assert run.deleted == 0


def test_lifting_the_suppression_lets_the_next_ingestion_bring_them_in_again(ingest, person_everywhere):
    erasure.erase(PERSON_ID, by="dpo", door=ErasureDoor.COMMAND)
    erasure.lift(PERSON_ID, by="dpo", door=ErasureDoor.COMMAND, reason="customer came back")
    run = ingest(FakeUpstream(person_everywhere), page_size=10)
    assert (run.suppressed, run.inserted) == (0, 1)
    assert Customer.objects.get(customer_id=PERSON_ID).last_name == "Married1"
    assert list(Erasure.objects.order_by("pk").values_list("action", "requested_by")) == [
        ("erased", "dpo"),
        ("lifted", "dpo"),
    ]


def test_the_audit_and_the_suppression_list_hold_a_keyed_hash_never_the_id(person_everywhere, settings):
    entry = erasure.erase(PERSON_ID, by="dpo", door=ErasureDoor.COMMAND, reason="request 42")
    [suppression] = Suppression.objects.all()
    assert suppression.subject == entry.subject == erasure.subject_of(PERSON_ID)
    assert str(PERSON_ID) not in entry.subject and PERSON_ID.hex not in entry.subject
    settings.INGESTION_SUPPRESSION_KEY = "another key"
    assert erasure.subject_of(PERSON_ID) != entry.subject


def test_an_erasure_is_idempotent_and_an_id_never_held_is_suppressed_too(ingest):
    stranger = uuid.UUID(record(50)["customer_id"])
    first = erasure.erase(stranger, by="dpo", door=ErasureDoor.COMMAND)
    second = erasure.erase(stranger, by="dpo", door=ErasureDoor.COMMAND)
    assert first.removed["customers"] == second.removed["customers"] == 0
    assert Suppression.objects.count() == 1
    assert not CustomerChange.objects.exists()
    run = ingest(FakeUpstream(records(1, start=50)), page_size=10)
    assert (run.suppressed, run.inserted) == (1, 0)


@pytest.mark.django_db(transaction=True)
def test_an_erasure_from_another_session_mid_run_is_seen_by_the_next_batch(ingest):
    """The erasure runs on a fetch thread (its own connection) while the run commits; page 2 is
    answered only once it committed, and the batch reads the suppression list under the lock."""
    ingest(FakeUpstream(records(3)), page_size=10)
    batches = []

    def erase_before_page_two(page):
        if page == 2 and not batches:
            batches.append(page)
            erasure.erase(uuid.UUID(record(4)["customer_id"]), by="dpo", door=ErasureDoor.COMMAND)
            connections.close_all()  # this thread's own connection

    run = ingest(FakeUpstream(records(6), on_request=erase_before_page_two), page_size=3)
    assert run.status == "succeeded"
    assert (run.suppressed, run.inserted, run.unchanged) == (1, 2, 3)
    assert not Customer.objects.filter(customer_id=record(4)["customer_id"]).exists()


# --- Doors -----------------------------------------------------------------------------------


def _api_client(*scopes) -> APIClient:
    user = User.objects.create_superuser("dpo", "dpo@example.com", "pw")
    issued = api_keys.create_key(user=user, name="dpo", scopes=list(scopes))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    return client


def test_the_api_erases_with_the_erase_scope_and_answers_the_audit_entry(person_everywhere):
    client = _api_client("customers:erase")
    response = client.post(f"/api/customers/{PERSON_ID}/erase", {"reason": "ticket 7"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["action"], body["door"], body["reason"], body["requested_by"]) == ("erased", "api", "ticket 7", "dpo")
    assert body["subject"] == erasure.subject_of(PERSON_ID)
    assert str(PERSON_ID) not in response.content.decode()
    assert _tables_holding(*TRACES) == {}


def test_the_api_refuses_a_key_without_the_erase_scope(person_everywhere):
    client = _api_client("customers:read", "changes:read")
    response = client.post(f"/api/customers/{PERSON_ID}/erase", {}, format="json")
    assert response.status_code == 403
    assert Customer.objects.filter(customer_id=PERSON_ID).exists()


@pytest.mark.parametrize(
    ("path_id", "body", "field"),
    [
        ("not-a-uuid", {}, "customer_id"),
        (str(PERSON_ID), {"reason": "x" * 1001}, "reason"),
        (str(PERSON_ID), [1], None),
    ],
)
def test_the_api_answers_a_bad_request_with_a_400_naming_it(path_id, body, field):
    client = _api_client("customers:erase")
    response = client.post(f"/api/customers/{path_id}/erase", body, format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field or "non_field_errors"]
    assert not Erasure.objects.exists()


def test_the_command_erases_and_lifts_and_refuses_with_a_sentence(person_everywhere):
    out = io.StringIO()
    call_command("erase_customer", str(PERSON_ID), "--reason", "request", stdout=out)
    assert out.getvalue().startswith("Erased (audit entry ")
    assert "Later ingestions skip the id." in out.getvalue()
    assert _tables_holding(*TRACES) == {}
    call_command("erase_customer", str(PERSON_ID), "--lift", stdout=out)
    assert "Suppression lifted" in out.getvalue()
    with pytest.raises(CommandError, match="is not suppressed"):
        call_command("erase_customer", str(PERSON_ID), "--lift")
    with pytest.raises(CommandError, match="is not a customer id"):
        call_command("erase_customer", "nobody")


def test_the_admin_action_asks_first_then_erases(person_everywhere):
    staff = User.objects.create_user("staffer", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__in=["view_customer", "erase_customer"]))
    client = Client()
    client.force_login(staff)
    url = reverse("admin:customers_customer_changelist")
    selection = {"action": "erase_customers", "_selected_action": [str(PERSON_ID)]}
    confirm = client.post(url, selection)
    assert confirm.status_code == 200
    assert b"Yes, erase them" in confirm.content
    assert Customer.objects.filter(customer_id=PERSON_ID).exists()
    done = client.post(url, {**selection, "confirmed": "yes", "reason": "asked by phone"}, follow=True)
    assert b"Erased 1 customer(s)" in done.content
    assert _tables_holding(*TRACES) == {}
    assert Erasure.objects.get().door == "admin"


def test_the_admin_offers_the_erase_action_only_with_the_permission(person_everywhere):
    staff = User.objects.create_user("viewer", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename="view_customer"))
    client = Client()
    client.force_login(staff)
    page = client.get(reverse("admin:customers_customer_changelist"))
    assert b"erase_customers" not in page.content


def test_failures_of_the_person_keep_their_reason_but_not_their_data(person_everywhere):
    erasure.erase(PERSON_ID, by="dpo", door=ErasureDoor.COMMAND)
    reasons = sorted(IngestFailure.objects.filter(raw__isnull=True).values_list("reason", flat=True))
    assert reasons == ["email_conflict", "invalid_date"]
    assert not StagedCustomer.objects.filter(customer_id=PERSON_ID).exists()


def test_the_deploy_check_warns_until_the_suppression_key_is_set(settings):
    from ingestion.checks import suppression_key_is_set

    settings.INGESTION_SUPPRESSION_KEY = ""
    [warning] = suppression_key_is_set(None)
    assert warning.id == "ingestion.W001" and "rotating that key" in warning.msg
    settings.INGESTION_SUPPRESSION_KEY = "a long random string"
    assert suppression_key_is_set(None) == []


def test_tombstones_and_admin_log_entries_of_the_person_keep_no_trace_of_them(person_everywhere):
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.contenttypes.models import ContentType
    from django.utils import timezone

    from ingestion.models import IngestRun, StagedTombstone

    run = IngestRun.objects.order_by("pk").last()
    StagedTombstone.objects.create(run=run, page=1, position=99, customer_id=PERSON_ID, deleted_at=timezone.now())
    staff = User.objects.create_user("staffer")
    LogEntry.objects.create(
        user=staff, content_type=ContentType.objects.get_for_model(Customer), object_id=str(PERSON_ID),
        object_repr="First1 Married1 (…)", action_flag=CHANGE, change_message="looked at First1",
    )  # fmt: skip
    entry = erasure.erase(PERSON_ID, by="dpo", door=ErasureDoor.COMMAND)
    assert (entry.removed["tombstones"], entry.removed["admin_log"]) == (1, 1)
    assert _tables_holding(*TRACES) == {}
    assert _tables_holding(str(PERSON_ID)) == {"customers_customerchange.customer_id ~ " + str(PERSON_ID): 1}


def test_a_suppressed_id_in_another_spelling_is_still_skipped(ingest, person_everywhere):
    """A hostile or sloppy upstream may send the id in capitals or without dashes: it is the same id."""
    erasure.erase(PERSON_ID, by="dpo", door=ErasureDoor.COMMAND)
    upper = {**record(PERSON), "customer_id": str(PERSON_ID).upper()}
    bare = {**record(PERSON), "customer_id": PERSON_ID.hex, "email": "not an email"}
    # One other customer, whose address ("31 Main Street") holds none of the traces.
    run = ingest(FakeUpstream([upper, bare, record(30)]), page_size=10)
    assert (run.suppressed, run.inserted) == (2, 1)
    assert _tables_holding(*TRACES) == {}
