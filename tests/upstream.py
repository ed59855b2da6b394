"""The upstream for tests: mocksource served over real HTTP on an ephemeral port.

Write a dataset with `write_dataset(records(250), path)` (tests/records.py), then inside
`with running_mocksource(path, faults=FaultConfig(error_rate=0.5)) as base_url:`
request `f"{base_url}/api/customers?page=1&limit=100"` as the ingestion client would.
"""

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from mocksource.faults import FaultConfig
from mocksource.server import create_app


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
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        app.store.close()
