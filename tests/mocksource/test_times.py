from datetime import UTC, datetime

import pytest

from mocksource.times import micros, parse

BAD = [
    "yesterday",
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-12-01T24:00:00Z",
    "2026-12-01T00:00:00",  # no offset: the reader's local time is no upstream's business
    "2026-12-01",
    "2026-12-01T00:00Z",
    "2026-12-01 00:00:00Z",
    "2026-12-01T00:00:00 00:00",  # a "+" a client forgot to percent-encode
    "2026-12-01T00:00:00+0100",
    "20261201T000000Z",
    "2026-12-01t00:00:00z",
    "2026-12-01T00:00:00.1234567Z",
    "2026-12-01T00:00:00+24:00",
    "\u0662026-12-01T00:00:00Z",
    "",
]


def test_z_and_offsets_name_the_same_instant():
    expected = micros(datetime(2026, 12, 2, tzinfo=UTC))

    assert parse("2026-12-02T00:00:00Z") == expected
    assert parse("2026-12-02T00:00:00+00:00") == expected
    assert parse("2026-12-02T01:30:00+01:30") == expected
    assert parse("2026-12-01T19:00:00-05:00") == expected


def test_fractions_of_a_second_are_kept_to_the_microsecond():
    assert parse("2026-12-02T00:00:00.5Z") - parse("2026-12-02T00:00:00Z") == 500_000
    assert parse("2026-12-02T00:00:00.000001Z") - parse("2026-12-02T00:00:00Z") == 1


def test_instants_before_the_epoch_are_negative():
    assert parse("1969-12-31T23:59:59Z") == -1_000_000


@pytest.mark.parametrize("text", BAD)
def test_anything_else_is_refused(text):
    assert parse(text) is None
