"""Property tests: whatever the upstream sends, validation never crashes and nothing invalid is stored."""

import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customers.models import Customer
from ingestion import pipeline, runs
from ingestion.exact_json import ExactJSONEncoder
from ingestion.models import IngestFailure
from ingestion.source import MAX_NESTING, Page, RecordText, parse_retry_after, record_value
from ingestion.validation import _CONTROL, Rejection, ValidRecord, validate_page, validate_record
from ingestion.watermarks import record_time
from mocksource.dataset import encode_record
from tests.ingestion.fakes import FakeUpstream
from tests.records import record

# Odd text: every plane of Unicode, NUL and other control characters, unpaired UTF-16
# surrogates (valid JSON as "\ud800", unstorable in PostgreSQL), very long strings.
odd_text = st.text(
    st.one_of(
        st.characters(codec="utf-8"), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
    ),
    max_size=300,
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), odd_text)
# Exact numbers: long digit strings, from far past a double's range to far below its precision
# (1e400, 1e-400), either side of what PostgreSQL's numeric holds (below 1e131072, at most 16383
# decimals) and of the decimal context's exponent limit (1e1000000).
exact_numbers = st.builds(
    lambda digits, exponent: Decimal(f"{digits}e{exponent}"),
    st.one_of(st.integers(), st.integers(-(10**60), 10**60)),
    st.one_of(
        st.integers(-500, 500),
        st.integers(-16_400, -16_340),
        st.integers(131_000, 131_100),
        st.integers(-1_000_100, 1_000_100),
    ),
)
# Integers either side of Python's int-string conversion limit (4300 digits).
long_integers = st.integers(4_290, 4_310).map(lambda length: Decimal("9" * length))
field_values = st.one_of(
    json_scalars,
    exact_numbers,
    long_integers,
    st.lists(json_scalars, max_size=3),
    st.dictionaries(odd_text, json_scalars, max_size=2),
)
FIELDS = list(record(0))
# Examples that run an ingestion: the database makes them slow, and each reuses the test's fixtures.
database_examples = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@st.composite
def upstream_records(draw):
    """A real-looking record with some fields replaced by anything JSON can carry."""
    index = draw(st.integers(0, 50))
    base = record(index)
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        if draw(st.booleans()):
            base.pop(name)
        else:
            base[name] = draw(field_values)
    return base


@given(raw=st.one_of(upstream_records(), field_values))
@settings(max_examples=300, deadline=None)
def test_validation_never_raises_and_accepts_only_storable_values(raw):
    result = validate_record(raw)
    assert isinstance(result, ValidRecord | Rejection)
    if isinstance(result, ValidRecord):
        for text in (result.first_name, result.last_name, result.email, result.phone or "", result.address or ""):
            assert "\x00" not in text
            text.encode("utf-8")  # no unpaired surrogate: PostgreSQL could not store it
        assert len(result.first_name) <= 100 and len(result.email) <= 255 and len(result.phone or "") <= 20
        assert result.account_balance is None or result.account_balance == result.account_balance.quantize(
            Decimal("0.01")
        )
    else:
        assert result.errors and result.reason
        json.dumps(result.errors)


@pytest.mark.django_db
@given(batch=st.lists(upstream_records(), min_size=1, max_size=25))
@database_examples
def test_any_page_of_records_is_fully_accounted_for_and_never_breaks_a_run(batch):
    run = runs.create_run(trigger="command", source_url="http://upstream.test")
    run = pipeline.execute_run(run.pk, session=FakeUpstream(batch).session())
    assert run.status == "succeeded", run.error
    assert run.fetched == len(batch)
    assert run.fetched == sum(value for name, value in run.counters().items() if name != "fetched")
    for customer in Customer.objects.all():
        assert "\x00" not in customer.first_name + customer.last_name + customer.email
        assert customer.full_clean() is None


_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def as_kept(value):
    """What `raw` holds for a value the upstream sent: the same, except what jsonb cannot hold.

    NUL and lone surrogates become the text of their JSON escape, NaN and Infinity their JSON
    spelling, and a number numeric cannot hold its digits in a string.
    """
    if isinstance(value, str):
        return _UNSTORABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", value)
    if isinstance(value, dict):
        return {as_kept(key): as_kept(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_kept(item) for item in value]
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, Decimal) and not (value.as_tuple().exponent >= -16_383 and value.adjusted() <= 131_071):
        return str(value)
    return value


def same_json(left, right) -> bool:
    """Equal as JSON: numbers by exact value (1E+2 is 100), never a number equal to a string or a bool."""
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_json(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same_json, left, right))
    numbers = (int, Decimal)
    if isinstance(left, bool) or isinstance(right, bool) or not isinstance(left, numbers):
        return type(left) is type(right) and left == right
    return isinstance(right, numbers) and Decimal(left) == Decimal(right)


@pytest.mark.django_db
@given(batch=st.lists(upstream_records(), min_size=1, max_size=10))
@database_examples
def test_a_rejected_record_is_kept_exactly_as_the_upstream_sent_it(batch):
    run = runs.create_run(trigger="command", source_url="http://upstream.test")
    run = pipeline.execute_run(run.pk, session=FakeUpstream(batch).session())
    assert run.status == "succeeded", run.error
    # What the upstream sent, read back with every digit, the way the fake writes it.
    sent = [json.loads(encode_record(item), parse_float=Decimal, parse_int=Decimal) for item in batch]
    # Conflicts and superseded reads were valid records: their raw is the staged row, not the bytes sent.
    rejected = IngestFailure.objects.filter(run=run).exclude(reason__in=["email_conflict", "superseded"])
    for failure in rejected:
        assert same_json(failure.raw, as_kept(sent[failure.position - 1])), failure.position


# Address-like text: the characters that decide the fast path (dots, dashes, digits, case,
# quotes, brackets, non-ASCII letters, two of which fold to ASCII: long s, Kelvin sign) around @.
email_parts = st.text(st.sampled_from("aZ09.-_+'\"[]:\u017f\u212a\u00e9@ "), min_size=0, max_size=12)


@given(address=st.one_of(st.emails(), st.builds("{}@{}.{}".format, email_parts, email_parts, email_parts), odd_text))
@settings(max_examples=500, deadline=None)
def test_email_check_agrees_with_djangos_validator(address):
    django_says_valid = True
    try:
        EmailValidator()(address)
    except ValidationError:
        django_says_valid = False

    result = validate_record(record(1, email=address))

    if len(address) > 255 or not address.strip() or _CONTROL.search(address):
        return  # rejected earlier for length, emptiness or control characters
    assert isinstance(result, ValidRecord) == django_says_valid, address


@st.composite
def reshuffled_walks(draw):
    """Customers that exchange their emails in any permutation, walked in batches of any size."""
    size = draw(st.integers(2, 8))
    order = draw(st.permutations(range(size)))
    batch_size = draw(st.integers(1, size))
    return size, order, batch_size


@pytest.mark.django_db
@given(walk=reshuffled_walks())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_emails_exchanged_in_any_permutation_converge_in_one_run(walk):
    size, order, batch_size = walk
    Customer.objects.all().delete()
    before = [record(index) for index in range(size)]
    after = [dict(raw, email=before[order[index]]["email"]) for index, raw in enumerate(before)]
    with override_settings(INGESTION_BATCH_SIZE=batch_size):
        for source in (before, after):
            run = runs.create_run(trigger="command", source_url="http://upstream.test", page_size=1)
            run = pipeline.execute_run(run.pk, session=FakeUpstream(source).session())
    assert (run.status, run.conflicts) == ("succeeded", 0)
    assert dict(Customer.objects.values_list("email", "first_name")) == {
        raw["email"]: raw["first_name"] for raw in after
    }


# Header values as a hostile upstream could send them: any text, digits of every script,
# HTTP dates right and wrong, numbers too long for a float.
odd_headers = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=8),
    st.builds(
        "{}, {:02d} {} {} {:02d}:{:02d}:{:02d} {}".format,
        st.sampled_from(["Mon", "Wed", "Xyz", ""]),
        st.integers(0, 99),
        st.sampled_from(["Jan", "Feb", "Dec", "Foo"]),
        st.integers(-1, 100_000),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
        st.sampled_from(["GMT", "+0000", "-9999", "", "PST"]),
    ),
    st.integers(0, 10**400).map(str),
)


@given(value=odd_headers)
@settings(max_examples=500, deadline=None)
def test_any_retry_after_header_is_a_wait_or_nothing_never_an_error(value):
    wait = parse_retry_after(value, now=lambda: datetime(2026, 12, 1, tzinfo=UTC))
    assert wait is None or wait >= 0


def nested(depth: int):
    value = None
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.django_db
@given(depth=st.integers(0, 900), valid=st.booleans())
@database_examples
def test_a_record_nested_to_any_depth_is_stored_or_fails_its_page_never_the_process(depth, valid):
    raw = record(1, email="customer1@example.com" if valid else "broken")
    raw["extra"] = nested(depth)
    with override_settings(INGESTION_MAX_RETRIES=1, INGESTION_BACKOFF_SECONDS=0):
        run = runs.create_run(trigger="command", source_url="http://upstream.test", page_size=10)
        run = pipeline.execute_run(run.pk, session=FakeUpstream([raw]).session())
    if depth + 3 > MAX_NESTING:  # the envelope, its list and the record are three levels
        assert run.status == "failed"
        assert f"nested deeper than {MAX_NESTING} levels" in run.error or "nested too deeply" in run.error
        assert run.fetched == 0
    else:
        assert run.status == "succeeded", run.error
        # Earlier examples may have stored the same customer already: unchanged then.
        expected = (1, 0, 1) if valid else (1, 1, 0)
        assert (run.fetched, run.invalid, run.inserted + run.unchanged) == expected


# Values at and around each field's limits, for the plain path's agreement below.
_texts = st.text(st.sampled_from("aZé \t\n\r\x00\x1f\x7f\x85\xa0\u2028\u3000\ud800'\"\\[{"), max_size=3)
_odd = st.sampled_from([" ", "\u3000", "a\nb", "a\tb", "a\rb", "ok\x85", "x@example.com", "X.Y+z@sub.example.co"])


def _near(limit: int):
    """Text around a field's length limit, short odd text, odd values, or null."""
    return st.one_of(st.none(), _texts, _odd, st.sampled_from([limit, limit + 1]).map(lambda length: "x" * length))


_plain_cases = {
    "customer_id": st.one_of(
        st.uuids().map(str),
        st.uuids().map(lambda value: str(value).upper()),
        st.uuids().map(lambda value: value.hex),
        st.uuids().map(lambda value: f"{{{value}}}"),
        st.uuids().map(lambda value: f"urn:uuid:{value}"),
        st.just("not-a-uuid"),
    ),
    "first_name": _near(100),
    "last_name": _near(100),
    "email": st.one_of(_near(255), st.emails(), st.sampled_from([243, 244]).map(lambda n: "a" * n + "@example.com")),
    "phone": _near(20),
    "address": _near(1000),
    "date_of_birth": st.one_of(
        st.dates().map(str),
        st.sampled_from(["2020-02-30", "0000-01-01", "\uff12\uff10\uff12\uff10-01-01", "2020-1-1", ""]),
        _near(10),
    ),
    "account_balance": st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**14), 10**14),
        st.sampled_from([10**13 - 1, 10**13, -(10**13) + 1, -(10**13)]),
        *(st.decimals(allow_nan=False, allow_infinity=False, places=places) for places in range(4)),
        st.sampled_from([Decimal("1E+2"), Decimal("-0.0"), Decimal("1E-1000"), Decimal("9999999999999.99")]),
        st.sampled_from(["12.5", "1e2", "12.345", " 1", "NaN"]),
    ),
    "created_at": st.one_of(
        st.datetimes(timezones=st.sampled_from([UTC, None])).map(lambda moment: moment.isoformat()),
        st.sampled_from(
            [
                "2024-01-01T00:00:00Z",
                "2024-01-01 00:00:00+05:30",
                "2024-01-01T00:00:00",
                "2024-01-01T00:00:00z",
                "2024-01-01T00:00:00.1234567Z",
                "20240101T000000Z",
                "9999-12-31T23:00:00-05:00",
                "2024-02-30T00:00:00Z",
            ]
        ),
        _near(20),
    ),
    "updated_at": st.one_of(st.none(), st.just("2024-06-01T00:00:00+02:00"), st.just("2024-06-01T00:00:00"), _near(20)),
}


@st.composite
def near_plain_records(draw):
    """A valid record with some fields moved to or past a limit, or dropped."""
    base = record(draw(st.integers(0, 50)), updated_at="2024-05-01T00:00:00Z")
    for name in draw(st.lists(st.sampled_from(list(_plain_cases)), max_size=3, unique=True)):
        if draw(st.integers(0, 5)) == 0:
            base.pop(name)
        else:
            base[name] = draw(_plain_cases[name])
    return base


@given(raw=st.one_of(near_plain_records(), upstream_records()))
@settings(max_examples=1500, deadline=None)
def test_the_plain_path_accepts_what_the_field_checks_accept_with_the_same_values(raw):
    # A record as a page delivers it (its JSON text) against the same record decoded, checked field by field.
    text = RecordText(json.dumps(raw, cls=ExactJSONEncoder).encode())
    expected = validate_record(record_value(text))

    judged = validate_page(Page(1, 100, 1, [text]))

    assert judged.outcomes == [expected]
    if isinstance(expected, ValidRecord):
        # Equal is not enough for a Decimal: 1.0 == 1.00, but the table must get the same digits.
        assert str(judged.outcomes[0].account_balance) == str(expected.account_balance)
        assert judged.outcomes[0].created_at.utcoffset() == expected.created_at.utcoffset()
        assert judged.refused == {}
    else:
        assert same_json(judged.refused[0], record_value(text))
    assert judged.newest == record_time(raw.get("updated_at"))
