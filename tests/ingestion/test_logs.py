"""No personal data in logs: an ingestion through every error path, logged as production logs it."""

import datetime
import io
import json
import logging
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger, SafeAtoms

from config.logging import JsonFormatter
from tests.ingestion.fakes import FakeUpstream, Reply
from tests.records import record, records

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PERSONAL_FIELDS = ("email", "phone", "first_name", "last_name")


@pytest.fixture
def json_log():
    """The root logger at DEBUG through config.logging's formatter; returns the captured text."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream.getvalue
    root.removeHandler(handler)
    root.setLevel(previous)


def person(index: int, **overrides) -> dict:
    """A record whose personal values are easy to spot in a log line."""
    personal = {
        "first_name": f"Augusta{index}",
        "last_name": f"Byron-King{index}",
        "email": f"augusta.{index}@lovelace.example",
        "phone": f"+44 20 7946 {index:04d}",
    }
    return record(index, **{**personal, **overrides})


def logged_text(output: str) -> str:
    """The raw lines and every decoded value, so that escaping in JSON cannot hide a value."""
    lines = [json.loads(line) for line in output.splitlines()]
    return output + "\n" + "\n".join(str(value) for line in lines for value in line.values())


def test_an_ingestion_with_every_kind_of_failure_logs_no_personal_data(ingest, json_log):
    existing = [person(index) for index in range(10)]
    first = ingest(FakeUpstream(existing), page_size=5)
    rejected = [
        person(100, email="augusta.at.lovelace.example"),  # invalid email
        person(101, phone="+44 " + "7" * 60),  # too long
        person(102, email=existing[3]["email"]),  # another customer's email
        person(103, first_name="A" * 300),  # too long
    ]
    second_source = [*rejected, *(person(index, last_name=f"Wentworth{index}") for index in range(6)), *records(20)]
    # Page 3 never comes back: the run retries, gives up and fails after two committed pages.
    second = ingest(FakeUpstream(second_source, script={3: [Reply(503)] * 20}), page_size=5)
    crashing = FakeUpstream([person(200)], script={1: [Reply(error=ValueError(f"bad record {person(200)['email']}"))]})
    with pytest.raises(ValueError):
        ingest(crashing, page_size=5)

    output = json_log()
    assert (first.status, second.status) == ("succeeded", "failed")
    assert (second.invalid, second.conflicts) == (3, 1)
    text = logged_text(output)
    for source in (existing, rejected, second_source, [person(200)]):
        for raw in source:
            for field in PERSONAL_FIELDS:
                assert raw[field] not in text, f"{field} {raw[field]!r} is in the log"
    lines = [json.loads(line) for line in output.splitlines()]
    assert {first.pk, second.pk} <= {line.get("run_id") for line in lines}
    reasons = {line["reason"] for line in lines if "reason" in line}
    assert {"server_error", "upstream", "ValueError"} <= reasons
    committed = [line for line in lines if line["message"] == "batch committed" and line["run_id"] == second.pk]
    assert sum(line.get("invalid", 0) for line in committed) == 3


def test_gunicorn_access_log_leaves_out_query_strings_and_client_addresses():
    access_log_format = runpy.run_path(str(ROOT / "config" / "gunicorn.py"))["access_log_format"]
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/api/customers?email=augusta%40lovelace.example&search=Byron",
        "PATH_INFO": "/api/customers",
        "QUERY_STRING": "email=augusta%40lovelace.example&search=Byron",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.9",
        "HTTP_REFERER": "https://app.example/customers?email=augusta%40lovelace.example",
    }
    response = SimpleNamespace(status="200 OK", headers=[], sent=120)
    request = SimpleNamespace(headers=[("REFERER", environ["HTTP_REFERER"])])
    atoms = Logger(Config()).atoms(response, request, environ, datetime.timedelta(milliseconds=12))

    line = access_log_format % SafeAtoms(atoms)

    assert '"GET /api/customers HTTP/1.1" 200 120 12ms' in line
    for secret in ("augusta", "Byron", "203.0.113.9", "email="):
        assert secret not in line
