"""The upstream customer API as a framework-free WSGI application.

    gunicorn mocksource.server:application --bind 127.0.0.1:5000

`application` is built on first access from MOCKSOURCE_* variables (see config.py);
tests call `create_app(dataset_path, faults=FaultConfig(...))` instead. Pages are served
from the already encoded dataset lines, joined without parsing them.
"""

import contextlib
import email.utils
import functools
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs

from . import config, times
from .faults import ERROR_STATUSES, NO_FAULT, AttemptCounter, Decision, Fault, FaultConfig, decide
from .store import DatasetError, Store

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
PAGE_RULE = "Must be an integer of at least 1."
LIMIT_RULE = f"Must be an integer between 1 and {MAX_LIMIT}."
REPEATED_RULE = "Must be given only once."
_PAGING = (("page", 1, None, PAGE_RULE), ("limit", DEFAULT_LIMIT, MAX_LIMIT, LIMIT_RULE))
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
HEALTH_PATH = "/api/health"
LIST_PATH = "/api/customers"
# Routed before the detail path: a customer_id "deleted" is not reachable by id.
DELETED_PATH = "/api/customers/deleted"
_DETAIL_PATH = re.compile(r"/api/customers/([^/]+)")
_MALFORMED_BODIES = (
    b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>",
    b'{"data": "temporarily unavailable", "total": null}',
)
_DRIP_TICKS_PER_SECOND = 10


@dataclass
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Query:
    page: int
    limit: int
    since: int | None  # microseconds since the epoch; None when not given

    @property
    def start(self) -> int:
        return (self.page - 1) * self.limit


class InvalidParameters(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


def create_app(dataset_path: Path | str, faults: FaultConfig | None = None) -> "MockSource":
    """The WSGI application serving the dataset at `dataset_path`, misbehaving as `faults` says."""
    return MockSource(Store(Path(dataset_path)), faults or FaultConfig())


def __getattr__(name: str):
    # Built on first access (gunicorn's getattr), so importing create_app needs no dataset.
    if name == "application":
        return _application_from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _application_from_environment() -> "MockSource":
    return create_app(config.dataset_path(), faults=config.fault_config())


class MockSource:
    """The WSGI callable: routes, validates paging, and misbehaves on purpose when told to."""

    def __init__(self, store: Store, faults: FaultConfig):
        self._store = store
        self._reopening = threading.Lock()
        self.faults = faults
        self._attempts = AttemptCounter()

    @property
    def store(self) -> Store:
        """The dataset's current generation: one stat a call, a reopen when the path names a new one."""
        if self._store.replaced():
            with self._reopening:
                if self._store.replaced():
                    # The old store is not closed: a request in flight may still be slicing
                    # its maps; they are unmapped when the last such request lets go of it.
                    with contextlib.suppress(DatasetError):  # a broken generation: keep this one
                        self._store = Store(self._store.path)
        return self._store

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        # Taken once: everything this request reads comes from the generation current now.
        handle = self._route(self.store, path, query)
        if handle is None:
            return _send(start_response, _error(404, "Not found."))
        method = environ["REQUEST_METHOD"]
        if method != "GET":
            return _send(start_response, _error(405, f'Method "{method}" not allowed.', headers=[("Allow", "GET")]))
        if path == HEALTH_PATH:
            return _send(start_response, handle())
        return self._serve_with_faults(start_response, f"{path}?{query}", handle)

    def _route(self, store: Store, path: str, query: str) -> Callable[[], Response] | None:
        if path == HEALTH_PATH:
            return functools.partial(health, store)
        if path == LIST_PATH:
            return functools.partial(customer_list, store, query)
        if path == DELETED_PATH:
            return functools.partial(deleted_list, store, query)
        if match := _DETAIL_PATH.fullmatch(path):
            return functools.partial(customer_detail, store, match[1])
        return None

    def _serve_with_faults(
        self, start_response: Callable, request_key: str, handle: Callable[[], Response]
    ) -> Iterable[bytes]:
        if self.faults.latency_ms:
            time.sleep(self.faults.latency_ms / 1000)
        decision = NO_FAULT
        if self.faults.any_rated:
            decision = decide(self.faults, request_key, self._attempts.next_attempt(request_key))
        response = self._replacement(decision) or handle()
        if decision.fault == Fault.TRUNCATE:
            # Content-Length follows the cut body: the transfer is complete, the JSON is not.
            response.body = response.body[: len(response.body) // 2]
        if decision.fault == Fault.DISCONNECT:
            # Headers announce the whole body, then the connection closes half-way.
            start_response(_status_line(response.status), _headers(response, len(response.body)))
            return self._body(response.body[: len(response.body) // 2])
        return _send(start_response, response, self._body(response.body))

    def _replacement(self, decision: Decision) -> Response | None:
        """The response a fault sends instead of the real one, if it does."""
        if decision.fault == Fault.ERROR:
            return _error(ERROR_STATUSES[decision.variant % len(ERROR_STATUSES)], "Simulated upstream failure.")
        if decision.fault == Fault.RATE_LIMIT:
            return _error(429, "Rate limit exceeded.", headers=[("Retry-After", self._retry_after())])
        if decision.fault == Fault.MALFORMED:
            return Response(200, _MALFORMED_BODIES[decision.variant % len(_MALFORMED_BODIES)])
        return None

    def _retry_after(self) -> str:
        seconds = self.faults.retry_after_seconds
        if self.faults.retry_after_format == "http-date":
            # Rounded up: an HTTP date has whole seconds and must not promise less than the wait.
            return email.utils.formatdate(math.ceil(time.time()) + seconds, usegmt=True)
        return str(seconds)

    def _body(self, body: bytes) -> Iterable[bytes]:
        rate = self.faults.drip_bytes_per_second
        return _drip(body, rate) if rate else [body]


def health(store: Store) -> Response:
    return _json(200, {"status": "ok", "total": store.total})


def customer_list(store: Store, query: str) -> Response:
    """Every line in file order or, with updated_since, the lines changed at or after it in change order."""
    try:
        asked = parse_query(query, since="updated_since")
    except InvalidParameters as exc:
        return _invalid(exc)
    stop = asked.start + asked.limit
    if asked.since is None:
        return _listing(store.page(asked.start, stop), store.total, asked)
    return _listing(*store.updated_page(asked.since, asked.start, stop), asked)


def deleted_list(store: Store, query: str) -> Response:
    try:
        asked = parse_query(query, since="since")
    except InvalidParameters as exc:
        return _invalid(exc)
    return _listing(*store.deleted_page(asked.since, asked.start, asked.start + asked.limit), asked)


def customer_detail(store: Store, customer_id: str) -> Response:
    line = store.find(customer_id)
    return _error(404, "Customer not found.") if line is None else Response(200, line)


def parse_query(query: str, *, since: str) -> Query:
    """Page, limit and the time parameter named `since` from a query string; `InvalidParameters` lists every bad one."""
    given = parse_qs(query, keep_blank_values=True)
    values, errors = {}, {}
    for name, default, maximum, rule in _PAGING:
        raw = given.get(name)
        if raw is None:
            values[name] = default
        elif len(raw) > 1:
            errors[name] = [REPEATED_RULE]
        elif (number := _whole_number(raw[0])) is None or number < 1 or (maximum and number > maximum):
            errors[name] = [rule]
        else:
            values[name] = number
    raw, moment = given.get(since), None
    if raw is not None and len(raw) > 1:
        errors[since] = [REPEATED_RULE]
    elif raw is not None and (moment := times.parse(raw[0])) is None:
        errors[since] = [times.RULE]
    if errors:
        raise InvalidParameters(errors)
    return Query(values["page"], values["limit"], moment)


def _whole_number(text: str) -> int | None:
    if not _DIGITS.fullmatch(text):
        return None
    try:
        return int(text)
    except ValueError:  # longer than Python's int conversion limit
        return None


def _drip(body: bytes, rate: int) -> Iterator[bytes]:
    chunk = max(1, rate // _DRIP_TICKS_PER_SECOND)
    for start in range(0, len(body), chunk):
        piece = body[start : start + chunk]
        yield piece
        time.sleep(len(piece) / rate)


def _listing(records: bytes, total: int, asked: Query) -> Response:
    tail = json.dumps({"total": total, "page": asked.page, "limit": asked.limit}, separators=(",", ":"))
    return Response(200, b'{"data":[' + records + b"]," + tail[1:].encode())


def _invalid(exc: InvalidParameters) -> Response:
    errors = dict(sorted(exc.errors.items()))
    return _json(400, {"detail": f"Invalid value for: {', '.join(errors)}.", "errors": errors})


def _json(status: int, payload: dict) -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode())


def _error(status: int, detail: str, *, headers: list[tuple[str, str]] | None = None) -> Response:
    response = _json(status, {"detail": detail})
    response.headers.extend(headers or [])
    return response


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def _headers(response: Response, length: int) -> list[tuple[str, str]]:
    return [("Content-Type", "application/json"), ("Content-Length", str(length)), *response.headers]


def _send(start_response: Callable, response: Response, body: Iterable[bytes] | None = None) -> Iterable[bytes]:
    start_response(_status_line(response.status), _headers(response, len(response.body)))
    return [response.body] if body is None else body
