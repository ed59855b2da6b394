"""The upstream for tests: mocksource served over real HTTP on an ephemeral port.

Write a dataset with `write_dataset(make_records(250), path)`, then inside
`with running_mocksource(path, faults=FaultConfig(error_rate=0.5)) as base_url:`
request `f"{base_url}/api/customers?page=1&limit=100"` as the ingestion client would.
"""

import contextlib
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from mocksource.dataset import CUSTOMER_ID_NAMESPACE
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


def make_records(n: int, start: int = 0) -> list[dict]:
    """`n` valid records in the upstream's format, for indexes start..start+n-1.

    Deterministic; ids are the generator's ids for the same indexes, emails are unique.
    `account_balance` is a Decimal, which `write_dataset` writes as a two-decimal number.
    """
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        {
            "customer_id": str(uuid.uuid5(CUSTOMER_ID_NAMESPACE, str(index))),
            "first_name": f"First{index}",
            "last_name": f"Last{index}",
            "email": f"customer{index}@example.com",
            "phone": f"+1-555-{index // 10000 % 1000:03d}-{index % 10000:04d}",
            "address": f"{index + 1} Main Street, Springfield, IL 62701",
            "date_of_birth": (date(1950, 1, 1) + timedelta(days=index % 20000)).isoformat(),
            "account_balance": Decimal(index * 12345 % 10_000_000).scaleb(-2),
            "created_at": (epoch + timedelta(minutes=index)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for index in range(start, start + n)
    ]
