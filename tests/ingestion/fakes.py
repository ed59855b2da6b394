"""A fake upstream at the HTTP transport: a `requests` adapter serving the page/limit contract.

Only the boundary is fake; everything behind `UpstreamClient` (validation, staging,
merge, the database) runs for real.
"""

import io
import json
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter
from urllib3.response import HTTPResponse

from mocksource.dataset import encode_record


class Reply:
    """A scripted reply instead of the normal page: status, headers and raw body."""

    def __init__(self, status: int = 200, body: bytes | str = b"", headers: dict | None = None, error=None):
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = headers or {}
        self.error = error


class FakeUpstream(BaseAdapter):
    """Serves `records` as pages; `script[page]` holds replies to give before the real page.

    `on_request(page)` is called before each request is answered, on the thread that sent it
    (page 1 on the run's own thread, later pages on the fetch threads).
    """

    def __init__(self, records: list, *, script: dict | None = None, total=None, on_request=None):
        super().__init__()
        self.records = records
        self.script = defaultdict(list, {page: list(replies) for page, replies in (script or {}).items()})
        self.total = total
        self.on_request = on_request
        self.calls: list[int] = []

    def session(self) -> requests.Session:
        session = requests.Session()
        session.mount("http://", self)
        return session

    def send(self, request, **kwargs):
        query = parse_qs(urlsplit(request.url).query)
        page, limit = int(query["page"][0]), int(query["limit"][0])
        self.calls.append(page)
        if self.on_request is not None:
            self.on_request(page)
        if self.script[page]:
            reply = self.script[page].pop(0)
            if reply.error is not None:
                raise reply.error
            return self._response(request, reply.status, reply.body, reply.headers)
        start = (page - 1) * limit
        total = len(self.records) if self.total is None else self.total(page)
        body = envelope(self.records[start : start + limit], total=total, page=page, limit=limit)
        return self._response(request, 200, body, {"Content-Type": "application/json"})

    def _response(self, request, status, body, headers):
        raw = HTTPResponse(body=io.BytesIO(body), headers=headers, status=status, preload_content=False)
        response = requests.Response()
        response.status_code = status
        response.headers = requests.structures.CaseInsensitiveDict(headers)
        response.raw = raw
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


def envelope(data: list, *, total, page: int, limit: int) -> bytes:
    """The page as JSON; a Decimal balance is a number with its own digits, as mocksource writes it."""
    rows = b",".join(encode_record(row) if isinstance(row, dict) else json.dumps(row).encode() for row in data)
    return b'{"data":[%b],"total":%b,"page":%d,"limit":%d}' % (rows, json.dumps(total).encode(), page, limit)
