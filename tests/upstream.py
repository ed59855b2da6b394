"""The upstream for tests: mocksource served over real HTTP on an ephemeral port.

Write a dataset with `write_dataset(records(250), path)` (tests/records.py), then inside
`with running_mocksource(path, faults=FaultConfig(error_rate=0.5)) as base_url:`
request `f"{base_url}/api/customers?page=1&limit=100"` as the ingestion client would.
Its port is an allowed upstream port (INGESTION_ALLOWED_PORTS) while it serves.

`serving_pages(records)` is a plainer upstream that keeps connections alive (mocksource's
server closes each one) and can speak TLS: tests count the connections it accepts.
"""

import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from django.test import override_settings

from mocksource.faults import FaultConfig
from mocksource.server import create_app
from tests.ingestion.fakes import envelope


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


@contextlib.contextmanager
def running_mocksource(dataset_path: Path | str, faults: FaultConfig | None = None) -> Iterator[str]:
    """Serve `create_app(dataset_path, faults)` in a background thread; yield its base URL."""
    app = create_app(dataset_path, faults=faults)
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with override_settings(INGESTION_ALLOWED_PORTS=[*settings.INGESTION_ALLOWED_PORTS, server.server_port]):
            yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        app.store.close()


@dataclass
class PageServer:
    """What a `serving_pages` upstream saw: connections accepted, and per request its Host and target."""

    records: list
    port: int = 0
    connections: int = 0
    hosts: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)


class _PageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a client's connection reuse shows
    wbufsize = -1  # headers and body in one write: a delayed ACK would cost 40 ms a page otherwise

    def do_GET(self):
        served = self.server.served
        served.hosts.append(self.headers["Host"])
        served.targets.append(self.path)  # a proxy is sent the absolute URL
        query = parse_qs(urlsplit(self.path).query)
        page, limit = int(query["page"][0]), int(query["limit"][0])
        records = served.records[(page - 1) * limit : page * limit]
        body = envelope(records, total=len(served.records), page=page, limit=limit)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class _PageServer(ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self):
        accepted = super().get_request()
        self.served.connections += 1
        return accepted


@contextlib.contextmanager
def serving_pages(records: list, *, tls: ssl.SSLContext | None = None) -> Iterator[PageServer]:
    """Serve `records` as pages on 127.0.0.1 (over TLS with the server context `tls`); yield what it sees."""
    server = _PageServer(("127.0.0.1", 0), _PageHandler)
    server.served = PageServer(records=records, port=server.server_port)
    if tls is not None:
        tls.sni_callback = lambda connection, name, context: server.served.server_names.append(name)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
