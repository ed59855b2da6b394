"""Step 1 of a run: the one client that talks to the upstream, and the walk over its pages.

The client owns time-outs, retries, response checks and error translation, so the rest
of the pipeline sees either a well-formed `Page` or an `UpstreamError`. Tests swap its
transport (a `requests.Session`) or its clock and sleep, never the database.
`fetch_pages` walks the listing in page order, fetching ahead on a thread pool.
"""

import contextvars
import email.utils
import enum
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec
import requests
import urllib3
from opentelemetry import trace

from ingestion import exact_json
from ingestion.source_url import PinnedAdapter

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

_ASCII_DIGITS = re.compile(r"[0-9]+")


class UpstreamError(Exception):
    """The upstream could not deliver a usable page, retries included."""


class RetryReason(enum.StrEnum):
    """Why a request was retried: the keys of a run's `retries_by_reason` and the metrics' `reason` label."""

    SERVER_ERROR = "server_error"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    MALFORMED = "malformed"


class _Retryable(Exception):
    def __init__(self, reason: RetryReason, message: str, wait: float | None = None):
        super().__init__(message)
        self.reason = reason
        self.wait = wait


# A record as a page delivers it: its JSON text, left for validation to decode (into the
# field types, in C, when it is plain); `record_value` decodes it exactly.
RecordText = msgspec.Raw


def record_value(record: Any) -> Any:
    """A page's record as a JSON value, numbers exact: decoded from its text, or as it already is."""
    return exact_json.loads(bytes(record)) if isinstance(record, RecordText) else record


@dataclass(frozen=True, slots=True)
class Page:
    number: int
    limit: int
    total: int
    # Each record's JSON text (RecordText); decoded values when the page took the exact decoder (_envelope).
    records: list[Any]
    # The upstream's clock when it served the page (its Date header), if it said.
    served_at: datetime | None = None


# The upstream's listings: every live record (with `updated_since`, those changed since), and tombstones.
CUSTOMERS_PATH = "/api/customers"
TOMBSTONES_PATH = "/api/customers/deleted"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    page_deadline: float = 60.0
    max_retries: int = 5
    backoff_seconds: float = 0.5
    retry_after_cap: float = 60.0
    max_response_bytes: int = 10 * 1024 * 1024
    # Requests in flight at once, and pages that may wait fetched ahead of the consumer.
    concurrency: int = 4
    prefetch_pages: int = 4


class UpstreamClient:
    """Fetches pages of `GET {base_url}{path}?page=&limit=` plus `params`.

    `path` is one of the upstream's listings (CUSTOMERS_PATH, TOMBSTONES_PATH); `params`
    narrows it (`updated_since`, `since`). With `addresses` (the checked ones, from
    `check_source_url`), its own session connects only to those.
    """

    def __init__(
        self,
        base_url: str,
        *,
        page_size: int,
        settings: ClientSettings | None = None,
        session: requests.Session | None = None,
        addresses: tuple[str, ...] | None = None,
        on_retry: Callable[[RetryReason], None] = lambda reason: None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        path: str = CUSTOMERS_PATH,
        params: dict[str, str] | None = None,
    ):
        self.url = base_url.rstrip("/") + path
        self.path = path
        self.params = dict(params or {})
        self.page_size = page_size
        self.settings = settings or ClientSettings()
        self.session = session or _session_for(self.url, addresses)
        self.on_retry = on_retry
        self.sleep = sleep
        self.clock = clock

    def fetch_page(self, number: int) -> Page:
        """Fetch one page, retrying transient failures; raise UpstreamError when giving up."""
        attributes = {"ingestion.page.number": number, "ingestion.listing": self.path}
        with tracer.start_as_current_span("ingestion.page", attributes=attributes) as span:
            page = self._retrying(f"Page {number}", lambda: self._attempt(number), page=number)
            span.set_attribute("ingestion.page.records", len(page.records))
            return page

    def fetch_record(self, customer_id: str) -> Any | None:
        """The one record `GET {listing}/{customer_id}` returns (any JSON; validation judges it),
        or None when the upstream answers 404 (it has no such customer). Same retries, limits
        and exact numbers as a page."""
        url = f"{self.url}/{quote(customer_id, safe='')}"
        # The id stays out of the span, as out of logs: an erased customer's id must not linger in traces.
        with tracer.start_as_current_span("ingestion.record", attributes={"ingestion.listing": self.path}):
            return self._retrying(f"Customer {customer_id}", lambda: self._attempt_record(url), page=None)

    def _retrying(self, what: str, attempt_once: Callable[[], Any], *, page: int | None) -> Any:
        # The span is the page's (or record's): it tells how many attempts it took, and why each failed.
        span, reasons = trace.get_current_span(), []
        for attempt in range(self.settings.max_retries + 1):
            try:
                result = attempt_once()
            except _Retryable as problem:
                reasons.append(str(problem.reason))
                span.set_attributes({"ingestion.attempts": attempt + 1, "ingestion.retry_reasons": reasons})
                if attempt == self.settings.max_retries:
                    message = f"{what}: gave up after {attempt + 1} attempts; last error: {problem}"
                    span.set_status(trace.StatusCode.ERROR, f"gave up after {attempt + 1} attempts")
                    raise UpstreamError(message) from None
                logger.warning("upstream retry", extra={"page": page, "attempt": attempt + 1, "reason": problem.reason})
                self.on_retry(problem.reason)
                delay = self._delay(attempt, problem.wait)
                span.add_event("retry", {"attempt": attempt + 1, "reason": str(problem.reason), "wait_seconds": delay})
                self.sleep(delay)
            else:
                span.set_attribute("ingestion.attempts", attempt + 1)
                return result
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.settings.retry_after_cap)
        # Exponential backoff with jitter, so many clients do not retry in lockstep.
        ceiling = self.settings.backoff_seconds * (2**attempt)
        return random.uniform(ceiling / 2, ceiling)

    def _attempt(self, number: int) -> Page:
        params = {**self.params, "page": number, "limit": self.page_size}
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        try:
            response = self.session.get(self.url, params=params, timeout=timeout, stream=True, allow_redirects=False)
        except requests.Timeout as exc:
            raise _Retryable(RetryReason.TIMEOUT, f"timed out: {exc}") from None
        except requests.RequestException as exc:
            raise _Retryable(RetryReason.CONNECTION, f"connection failed: {exc}") from None
        with response:
            self._check_status(number, response)
            body = self._read_body(response)
            served_at = parse_http_date(response.headers.get("Date"))
        trace.get_current_span().set_attribute("ingestion.page.bytes", len(body))
        return self._parse(number, body, served_at)

    def _attempt_record(self, url: str) -> Any | None:
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        try:
            response = self.session.get(url, timeout=timeout, stream=True, allow_redirects=False)
        except requests.Timeout as exc:
            raise _Retryable(RetryReason.TIMEOUT, f"timed out: {exc}") from None
        except requests.RequestException as exc:
            raise _Retryable(RetryReason.CONNECTION, f"connection failed: {exc}") from None
        with response:
            if response.status_code == 404:
                return None
            self._check_status(None, response)
            body = self._read_body(response)
        return _document(body)

    def _check_status(self, number: int | None, response: requests.Response) -> None:
        status = response.status_code
        if status == 429:
            raise _Retryable(
                RetryReason.RATE_LIMITED, "HTTP 429", wait=parse_retry_after(response.headers.get("Retry-After"))
            )
        if status >= 500:
            raise _Retryable(RetryReason.SERVER_ERROR, f"HTTP {status}", wait=None)
        if 300 <= status < 400:
            target = response.headers.get("Location")
            raise UpstreamError(f"{_what(number)}: HTTP {status} redirect to {target!r}, not followed.")
        if status != 200:
            raise UpstreamError(f"{_what(number)}: HTTP {status}, not retried.")

    def _read_body(self, response: requests.Response) -> bytes:
        # read1 returns whatever has arrived, so a server that drips bytes cannot keep
        # us past the page deadline; the read time-out alone would not catch it.
        deadline = self.clock() + self.settings.page_deadline
        limit = self.settings.max_response_bytes
        chunks, size = [], 0
        try:
            while chunk := response.raw.read1(65536, decode_content=True):
                size += len(chunk)
                if size > limit:
                    raise UpstreamError(f"Response larger than {limit} bytes, refused.")
                if self.clock() > deadline:
                    raise _Retryable(RetryReason.TIMEOUT, f"page not received within {self.settings.page_deadline} s")
                chunks.append(chunk)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise _Retryable(RetryReason.CONNECTION, f"connection broken while reading: {exc}") from None
        return b"".join(chunks)

    def _parse(self, number: int, body: bytes, served_at: datetime | None = None) -> Page:
        envelope = _envelope(body)
        problem = envelope_problem(envelope, number, self.page_size)
        if problem:
            raise _Retryable(RetryReason.MALFORMED, f"unexpected response shape: {problem}")
        return Page(
            number=number, limit=self.page_size, total=envelope["total"], records=envelope["data"], served_at=served_at
        )


class _Envelope(msgspec.Struct):
    data: list[RecordText]
    total: Any = None
    page: Any = None
    limit: Any = None


# Reads the envelope in C and keeps each record as its text: decoding a page's records is
# validation's work, and most of them it does in C as well (ingestion/validation.py).
_ENVELOPE = msgspec.json.Decoder(_Envelope, float_hook=Decimal)


def _envelope(body: bytes) -> Any:
    """A page's envelope as a dict, `data` holding the records' texts; or, for any body the C
    decoder refuses or that may nest too deep, the exact decoder's document, which judges it.

    The C decoder reads strict JSON and, where it reads a body at all, reads the values the exact
    decoder would (the later of two equal keys, every digit of a number); the lenient rest
    (NaN, a byte order mark, lone surrogates, integers past 64 bits in the envelope) is the
    exact decoder's to accept or refuse, as before.
    """
    try:
        # The C decoder skips over the records' texts without checking their encoding: checked
        # here, so every text it keeps decodes (the exact decoder refuses bad UTF-8 too, and
        # reads UTF-8-encoded surrogates, which strict decoding leaves to it).
        body.decode()
        envelope = _ENVELOPE.decode(body)
    except (UnicodeDecodeError, msgspec.MsgspecError, RecursionError):
        return _document(body)
    if _may_nest_deeper_than(body, len(envelope.data), MAX_NESTING):
        return _document(body)
    return {"data": envelope.data, "total": envelope.total, "page": envelope.page, "limit": envelope.limit}


def _document(body: bytes) -> Any:
    """The JSON of a response body, numbers exact, or a retryable MALFORMED."""
    try:
        # Numbers stay exact: 0.1 + 0.2 style float noise must not reach balances, and a
        # rejected record is kept with the digits it came with.
        document = exact_json.loads(body)
    except ValueError:
        raise _Retryable(RetryReason.MALFORMED, "response body is not valid JSON") from None
    except RecursionError:  # valid JSON nested deeper than the parser goes: no page of ours looks like that
        raise _Retryable(RetryReason.MALFORMED, "response body nested too deeply") from None
    if _nested_deeper_than(body, document, MAX_NESTING):
        raise _Retryable(RetryReason.MALFORMED, f"response body nested deeper than {MAX_NESTING} levels")
    return document


def _what(page: int | None) -> str:
    return "A customer's record" if page is None else f"Page {page}"


# Far past any record we would keep (the envelope, a record and its value are three levels),
# and far below what Python can walk: a rejected record is stored, encoded and rendered by
# recursive code, and the parser itself gives up at a depth that depends on the thread's stack.
MAX_NESTING = 100


def _may_nest_deeper_than(body: bytes, records: int, limit: int) -> bool:
    """Whether a page of `records` records might nest containers more than `limit` deep:
    two byte counts, which an ordinary page passes. Past them, the document is walked."""
    # The envelope, its list and each record are containers at depths 1 to 3; every other one
    # can add at most one level. (Brackets inside strings only make this count larger.)
    containers = body.count(b"[") + body.count(b"{")
    return 3 + containers - (2 + records) > limit


def _nested_deeper_than(body: bytes, document: Any, limit: int) -> bool:
    """Whether `document` (parsed from `body`) nests containers more than `limit` deep.

    Walked only when the body holds more brackets than a flat page has (one per record,
    the envelope and its list), so an ordinary page costs two byte counts.
    """
    records = document.get("data") if isinstance(document, dict) else None
    if not _may_nest_deeper_than(body, len(records) if isinstance(records, list) else 0, limit):
        return False
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def fetch_pages(client: UpstreamClient, *, first: int, prepare: Callable | None = None) -> Iterator:
    """Yield pages from `first` on, in page order, fetched ahead on a thread pool.

    Up to `concurrency` requests run at once and up to `prefetch_pages` pages wait ready,
    so fetching (and `prepare`, run on the same threads: validation) goes on while the
    caller works on the pages before. Memory stays bounded by that window. The walk ends
    after the last page announced by the latest `total`, or at the first empty page.
    Pages come out strictly in order, whichever fetch finishes first.
    """
    work = client.fetch_page if prepare is None else (lambda number: prepare(client.fetch_page(number)))
    concurrency = client.settings.concurrency
    window = max(concurrency, client.settings.prefetch_pages)
    item = work(first)
    yield item
    page = _page_of(item)
    last = last_page(page)
    if page.number >= last or not page.records:
        return
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        ahead, next_number = {}, page.number + 1
        try:
            while True:
                while next_number <= last and len(ahead) < window:
                    # In the caller's context, so each page's span is a child of the run's.
                    ahead[next_number] = pool.submit(contextvars.copy_context().run, work, next_number)
                    next_number += 1
                if not ahead:
                    return
                item = ahead.pop(min(ahead)).result()
                yield item
                page = _page_of(item)
                last = last_page(page)
                if not page.records or page.number >= last:
                    return
        finally:
            for future in ahead.values():
                future.cancel()


def last_page(page: Page) -> int:
    """The number of the last page the listing has, by the page's `total` and `limit`."""
    return page_count(page.total, page.limit)


def page_count(total: int, limit: int) -> int:
    """Pages of `limit` that `total` records fill; an empty listing still has its page 1."""
    return max(1, -(-total // limit))


def _page_of(item) -> Page:
    # `prepare` may wrap the page (validation does); the wrapper keeps it as `.page`.
    return item if isinstance(item, Page) else item.page


def _session_for(url: str, addresses: tuple[str, ...] | None = None) -> requests.Session:
    """A session that reads proxies, CA bundle and .netrc from the environment once.

    requests looks them up again on every request (a .netrc file lookup and proxy
    resolution per page); a run asks the same host thousands of times, so resolve
    them here, once, and stop looking. With `addresses`, its connections dial only those.
    """
    session = requests.Session()
    environment = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies, session.verify = environment["proxies"], environment["verify"]
    session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False
    if addresses is not None:
        host = urlsplit(url).hostname
        adapter = PinnedAdapter(host, addresses)
        for prefix in ("http://", "https://"):
            session.mount(prefix, adapter)
        if session.proxies:
            # The proxy is then the connection target and resolves the name; what it may reach is its rules'.
            logger.warning("upstream reached through a proxy: its addresses are not pinned", extra={"host": host})
    return session


def envelope_problem(envelope: Any, page: int, limit: int) -> str | None:
    """Describe what is wrong with a `{data, total, page, limit}` envelope, or None."""
    if not isinstance(envelope, dict):
        return "not a JSON object"
    if not isinstance(envelope.get("data"), list):
        return "`data` missing or not a list"
    total = envelope.get("total")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        return "`total` missing or not a non-negative integer"
    if envelope.get("page") != page or envelope.get("limit") != limit:
        return f"asked for page {page} limit {limit}, got page {envelope.get('page')!r} limit {envelope.get('limit')!r}"
    count = len(envelope["data"])
    if count > limit:
        return f"{count} records on a page of {limit}"
    # A page holds exactly what its own total announces: an empty or short page inside the
    # walk would otherwise end the walk early, or skip records, and still look complete.
    expected = max(0, min(limit, total - (page - 1) * limit))
    if count != expected:
        return f"{count} records on page {page}, where total {total} announces {expected}"
    return None


def parse_retry_after(value: str | None, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """Seconds to wait from a Retry-After header given in seconds or as an HTTP date."""
    if not value:
        return None
    value = value.strip()
    # ASCII digits only: str.isdigit() also accepts "²" and "٣", which float() then refuses.
    if _ASCII_DIGITS.fullmatch(value):
        return float(value)
    moment = parse_http_date(value)
    if moment is None:
        return None
    return max(0.0, (moment - now()).total_seconds())


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP date header as an aware datetime (UTC when it names no zone), or None when absent or garbled."""
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
