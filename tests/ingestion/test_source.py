import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import requests

from ingestion.source import (
    ClientSettings,
    RecordText,
    UpstreamClient,
    UpstreamError,
    envelope_problem,
    parse_retry_after,
    record_value,
)
from tests.ingestion.fakes import FakeUpstream, Reply
from tests.records import records


class Clock:
    """A patched clock: sleeping advances it, nothing waits for real."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(fake, clock=None, retried=None, **overrides):
    clock = clock or Clock()
    options = {"max_retries": 3, "backoff_seconds": 1.0, "retry_after_cap": 30.0, **overrides}
    return UpstreamClient(
        "http://upstream.test",
        page_size=10,
        settings=ClientSettings(**options),
        session=fake.session(),
        on_retry=(retried.append if retried is not None else lambda reason: None),
        sleep=clock.sleep,
        clock=clock,
    )


def test_fetches_a_page_with_its_total():
    page = make_client(FakeUpstream(records(25))).fetch_page(3)
    assert (page.number, page.total, len(page.records)) == (3, 25, 5)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_with_exponential_backoff(status):
    fake = FakeUpstream(records(25), script={1: [Reply(status), Reply(status)]})
    clock, retried = Clock(), []
    page = make_client(fake, clock, retried).fetch_page(1)
    assert len(page.records) == 10
    assert retried == ["server_error", "server_error"]
    assert 0.5 <= clock.sleeps[0] <= 1.0 and 1.0 <= clock.sleeps[1] <= 2.0


def test_429_waits_for_retry_after_in_seconds():
    fake = FakeUpstream(records(5), script={1: [Reply(429, headers={"Retry-After": "7"})]})
    clock, retried = Clock(), []
    make_client(fake, clock, retried).fetch_page(1)
    assert clock.sleeps == [7.0]
    assert retried == ["rate_limited"]


def test_429_retry_after_as_http_date_is_honoured_and_capped():
    later = "Wed, 21 Oct 2099 07:28:00 GMT"
    fake = FakeUpstream(records(5), script={1: [Reply(429, headers={"Retry-After": later})]})
    clock = Clock()
    make_client(fake, clock, retry_after_cap=12.0).fetch_page(1)
    assert clock.sleeps == [12.0]


def test_parse_retry_after_http_date():
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now=lambda: now) == 30.0
    assert parse_retry_after("Mon, 01 Jan 2024 11:00:00 GMT", now=lambda: now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "1\u00b2", "\uff11\uff12"])
def test_retry_after_with_non_ascii_digits_is_ignored_not_a_crash(value):
    assert parse_retry_after(value) is None


def test_429_with_a_unicode_digit_retry_after_backs_off_normally():
    fake = FakeUpstream(records(5), script={1: [Reply(429, headers={"Retry-After": "\u00b2"})]})
    clock = Clock()

    page = make_client(fake, clock).fetch_page(1)

    assert len(page.records) == 5
    assert len(clock.sleeps) == 1


def test_body_nested_past_any_sane_depth_is_a_retried_malformed_page():
    deep = b'{"data": [' + b"[" * 100_000 + b"]" * 100_000 + b'], "total": 1, "page": 1, "limit": 10}'
    fake = FakeUpstream(records(5), script={1: [Reply(200, deep)]})
    retried = []

    page = make_client(fake, Clock(), retried).fetch_page(1)

    assert retried == ["malformed"]
    assert len(page.records) == 5


def test_brackets_inside_strings_are_not_nesting():
    source = records(5)
    source[2]["address"] = "[{" * 500  # counted by the quick check, then found flat by the walk
    retried = []

    page = make_client(FakeUpstream(source), Clock(), retried).fetch_page(1)

    assert retried == []
    assert record_value(page.records[2])["address"] == "[{" * 500


def test_records_arrive_as_their_json_texts_and_decode_exactly():
    source = records(3)
    source[1]["account_balance"] = Decimal("0.1000000000000000055511151231257827")

    page = make_client(FakeUpstream(source)).fetch_page(1)

    assert all(isinstance(text, RecordText) for text in page.records)
    assert [record_value(text) for text in page.records] == source


@pytest.mark.parametrize(
    "body",
    [
        # What only the exact decoder reads: a lone surrogate, NaN, a byte order mark, UTF-8-encoded surrogates.
        b'{"data": [{"first_name": "\\ud800"}], "total": 1, "page": 1, "limit": 10}',
        b'{"data": [{"score": NaN}], "total": 1, "page": 1, "limit": 10}',
        b'\xef\xbb\xbf{"data": [{"a": 1}], "total": 1, "page": 1, "limit": 10}',
        b'{"data": [{"first_name": "\xed\xa0\x80"}], "total": 1, "page": 1, "limit": 10}',
    ],
)
def test_bodies_only_the_exact_decoder_reads_are_read_as_before(body):
    fake = FakeUpstream([], script={1: [Reply(200, body)]})
    retried = []

    page = make_client(fake, Clock(), retried).fetch_page(1)

    assert retried == []
    assert len(page.records) == 1 and not isinstance(page.records[0], RecordText)


def test_bad_utf8_inside_a_record_is_a_retried_malformed_page():
    # The fast decoder skips over a record's text without reading it: the page is still refused whole.
    bad = b'{"data": [{"first_name": "\xff"}], "total": 1, "page": 1, "limit": 10}'
    fake = FakeUpstream(records(5), script={1: [Reply(200, bad)]})
    retried = []

    page = make_client(fake, Clock(), retried).fetch_page(1)

    assert retried == ["malformed"]
    assert len(page.records) == 5


def test_an_integer_past_pythons_conversion_limit_is_read_exactly_not_a_malformed_page():
    # int() refuses more than 4300 digits; the page is well formed and its record keeps every digit.
    digits = "9" * 5000
    body = b'{"data": [{"score": %b}], "total": 1, "page": 1, "limit": 10}' % digits.encode()
    fake = FakeUpstream([], script={1: [Reply(200, body)]})
    retried = []

    page = make_client(fake, Clock(), retried).fetch_page(1)

    assert retried == []
    assert [record_value(text) for text in page.records] == [{"score": Decimal(digits)}]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_client_errors_fail_at_once(status):
    fake = FakeUpstream(records(5), script={1: [Reply(status)]})
    with pytest.raises(UpstreamError, match=f"HTTP {status}"):
        make_client(fake).fetch_page(1)
    assert fake.calls == [1]


def test_redirects_are_not_followed():
    fake = FakeUpstream(records(5), script={1: [Reply(302, headers={"Location": "http://169.254.169.254/"})]})
    with pytest.raises(UpstreamError, match="redirect"):
        make_client(fake).fetch_page(1)
    assert fake.calls == [1]


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [{"customer_id": "a"',  # truncated
        b"<html>Bad gateway</html>",  # not JSON
        b'{"total": 5, "page": 1, "limit": 10}',  # no data
        b'{"data": [], "page": 1, "limit": 10}',  # no total
        b'{"data": {}, "total": 5, "page": 1, "limit": 10}',  # data of the wrong type
        b'{"data": [], "total": "5", "page": 1, "limit": 10}',  # total of the wrong type
        b'{"data": [], "total": 5, "page": 2, "limit": 10}',  # another page
    ],
)
def test_malformed_bodies_are_retried_then_give_up(body):
    fake = FakeUpstream(records(5), script={1: [Reply(200, body)] * 4})
    retried = []
    with pytest.raises(UpstreamError, match="gave up after 4 attempts"):
        make_client(fake, retried=retried).fetch_page(1)
    assert retried == ["malformed"] * 3


def test_connection_errors_are_retried():
    fake = FakeUpstream(records(5), script={1: [Reply(error=requests.ConnectionError("reset by peer"))]})
    retried = []
    assert len(make_client(fake, retried=retried).fetch_page(1).records) == 5
    assert retried == ["connection"]


def test_timeouts_are_retried():
    fake = FakeUpstream(records(5), script={1: [Reply(error=requests.ReadTimeout("slow"))] * 2})
    retried = []
    make_client(fake, retried=retried).fetch_page(1)
    assert retried == ["timeout", "timeout"]


def test_response_over_the_size_cap_is_refused():
    fake = FakeUpstream(records(10))
    with pytest.raises(UpstreamError, match="larger than 1024 bytes"):
        make_client(fake, max_response_bytes=1024).fetch_page(1)


def test_a_dripping_body_hits_the_page_deadline():
    clock = Clock()
    fake = FakeUpstream(records(10))
    original_send = fake.send

    def dripping_send(request, **kwargs):
        response = original_send(request, **kwargs)
        read1 = response.raw.read1

        def slow_read1(amt=None, decode_content=None):
            clock.now += 10  # each small chunk arrives ten seconds after the previous one
            return read1(64, decode_content=decode_content)

        response.raw.read1 = slow_read1
        return response

    fake.send = dripping_send
    with pytest.raises(UpstreamError, match=r"not received within 5.0 s"):
        make_client(fake, clock, page_deadline=5.0, max_retries=0).fetch_page(1)


def test_envelope_problem_accepts_the_contract():
    assert envelope_problem({"data": [], "total": 0, "page": 1, "limit": 10}, 1, 10) is None
    assert "records on a page" in envelope_problem({"data": [1, 2, 3], "total": 3, "page": 1, "limit": 2}, 1, 2)


def test_envelope_problem_wants_exactly_the_records_its_total_announces():
    assert envelope_problem({"data": [1, 2], "total": 3, "page": 1, "limit": 2}, 1, 2) is None
    assert envelope_problem({"data": [3], "total": 3, "page": 2, "limit": 2}, 2, 2) is None
    assert envelope_problem({"data": [], "total": 3, "page": 5, "limit": 2}, 5, 2) is None  # past the end
    assert envelope_problem({"data": [1], "total": 3, "page": 1, "limit": 2}, 1, 2) == (
        "1 records on page 1, where total 3 announces 2"
    )
    assert envelope_problem({"data": [], "total": 3, "page": 2, "limit": 2}, 2, 2) == (
        "0 records on page 2, where total 3 announces 1"
    )
    assert envelope_problem({"data": [3, 4], "total": 3, "page": 2, "limit": 2}, 2, 2) == (
        "2 records on page 2, where total 3 announces 1"
    )


def test_own_session_reads_proxies_and_netrc_from_the_environment_once(monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine upstream.test login feed password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    client = UpstreamClient("http://upstream.test", page_size=100)

    assert client.session.proxies == {"http": "http://proxy.test:3128"}
    assert client.session.auth == ("feed", "s3cret")
    # Resolved once: requests no longer looks them up on every page.
    assert client.session.trust_env is False
    netrc.unlink()
    monkeypatch.setenv("HTTP_PROXY", "http://other.test:1")
    prepared = client.session.prepare_request(requests.Request("GET", client.url))
    assert prepared.headers["Authorization"].startswith("Basic ")


def test_own_session_without_proxy_or_netrc_sends_no_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    client = UpstreamClient("http://upstream.test", page_size=100)

    assert client.session.proxies == {}
    assert client.session.auth is None
    assert "Authorization" not in client.session.prepare_request(requests.Request("GET", client.url)).headers


class RecordUpstream(FakeUpstream):
    """The upstream's detail route at the transport: `replies` in turn, then a 404."""

    def __init__(self, replies: list[Reply]):
        super().__init__([])
        self.replies = replies
        self.urls: list[str] = []

    def send(self, request, **kwargs):
        self.urls.append(request.url)
        reply = self.replies.pop(0) if self.replies else Reply(404, '{"detail": "Customer not found."}')
        return self._response(request, reply.status, reply.body, reply.headers)


ID = "83320cfc-70d1-5935-83cd-5938b29cdfbd"


def test_a_record_is_read_by_id_under_the_listing_with_exact_numbers():
    fake = RecordUpstream([Reply(200, f'{{"customer_id": "{ID}", "account_balance": 0.10}}')])

    record = make_client(fake).fetch_record(ID)

    assert record == {"customer_id": ID, "account_balance": Decimal("0.10")}
    assert str(record["account_balance"]) == "0.10"
    assert fake.urls == [f"http://upstream.test/api/customers/{ID}"]


def test_a_record_the_upstream_does_not_have_is_none():
    assert make_client(RecordUpstream([])).fetch_record(ID) is None


def test_reading_a_record_retries_server_errors_and_malformed_bodies():
    fake = RecordUpstream([Reply(503), Reply(200, "{not json"), Reply(200, f'{{"customer_id": "{ID}"}}')])
    retried = []

    assert make_client(fake, retried=retried).fetch_record(ID) == {"customer_id": ID}
    assert retried == ["server_error", "malformed"]


def test_reading_a_record_gives_up_saying_which_and_never_follows_a_redirect():
    with pytest.raises(UpstreamError, match=f"Customer {ID}: gave up after 4 attempts; last error: HTTP 500"):
        make_client(RecordUpstream([Reply(500)] * 4)).fetch_record(ID)
    redirect = RecordUpstream([Reply(302, headers={"Location": "http://169.254.169.254/"})])
    with pytest.raises(
        UpstreamError, match=re.escape("A customer's record: HTTP 302 redirect to 'http://169.254.169.254/'")
    ):
        make_client(redirect).fetch_record(ID)
