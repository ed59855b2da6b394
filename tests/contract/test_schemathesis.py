"""The live API against its own OpenAPI schema, with schemathesis, in process over WSGI.

Every operation is called with generated parameters (valid and invalid ones), once as a
superuser and once without credentials. No response may be a 5xx, and every response must
have a documented status code and match the documented body.
"""

import socket

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.throttling import ScopedWindowThrottle
from config.wsgi import application
from customers.models import Customer
from ingestion import pipeline, runs
from ingestion.models import IngestRun
from tests.ingestion.fakes import FakeUpstream, Reply
from tests.records import record, records

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Bounded and reproducible: the same cases on every run, at most 25 generated per operation and
# generation mode (valid, invalid) on top of schemathesis' fixed coverage cases.
EXAMPLES = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def closed_loopback_url() -> str:
    """A loopback URL nothing listens on: runs started by the API only queue (no worker runs here)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def ingest_fixture_data() -> dict[str, list]:
    """One run with rejected records of every kind and one failed run, through the real pipeline."""
    source = [
        *records(20),
        record(20, email="not-an-email"),
        record(21, phone="+1" * 40),
        record(22, email="customer3@example.com"),
        42,
        None,
        "a string, not a record",
    ]
    done = runs.create_run(trigger="command", source_url="http://upstream.test", page_size=10)
    pipeline.execute_run(done.pk, session=FakeUpstream(source).session())
    broken = runs.create_run(trigger="command", source_url="http://upstream.test", page_size=10)
    failing = FakeUpstream(records(30), script={2: [Reply(500)] * 20})
    pipeline.execute_run(broken.pk, session=failing.session())
    return {
        "id": list(IngestRun.objects.values_list("pk", flat=True)),
        "customer_id": [str(pk) for pk in Customer.objects.values_list("customer_id", flat=True)[:10]],
    }


# Loaded once at collection: the schema is static, and each operation becomes its own test.
schema = schemathesis.openapi.from_wsgi("/api/schema", application)
# Ids of the runs and customers the current test created, for generated path parameters.
KNOWN: dict[str, list] = {}


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Generated ids almost never exist: half the time ask for a known run or customer instead."""
    name = next((name for name in KNOWN if name in (path_parameters or {})), None)
    if name is None:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters), st.sampled_from(KNOWN[name]).map(lambda value: {name: value}))


@pytest.fixture(autouse=True)
def api_data(db, settings, monkeypatch):
    """Customers, runs and failures behind the API, and an API that starts runs without running them."""
    settings.INGESTION_ALLOWED_HOSTS = ["upstream.test"]
    KNOWN.update(ingest_fixture_data())
    settings.INGESTION_SOURCE_URL = closed_loopback_url()
    # `?wait=` must not hold a request open while nobody runs the queued run.
    settings.INGESTION_MAX_WAIT_SECONDS = 0
    # Throttling has its own tests; here every generated request must reach the view.
    rates = dict.fromkeys(("reads", "ingest", "changes", "erasures"), "100000/minute")
    monkeypatch.setattr(ScopedWindowThrottle, "THROTTLE_RATES", rates)
    # So is the lockout: generated Authorization headers are failed token checks from one address.
    settings.ACCOUNTS_LOCKOUT_FAILURES = 1_000_000
    # The test transaction is the requests' connection: as Django's test client does, keep
    # the request signals from closing it between requests.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
    KNOWN.clear()


@pytest.fixture
def superuser_token(django_user_model) -> str:
    user = django_user_model.objects.create_superuser("contract-admin", password="unused")
    return Token.objects.create(user=user).key


@pytest.mark.django_db
@schema.parametrize()
@EXAMPLES
def test_api_matches_its_schema_for_a_superuser(case, superuser_token):
    response = case.call(headers={"Authorization": f"Token {superuser_token}"})
    case.validate_response(response, checks=CHECKS)


@pytest.mark.django_db
@schema.parametrize()
@EXAMPLES
def test_api_refuses_anonymous_requests(case):
    # No credentials of ours; the generated Authorization header and session cookie, if any, are random.
    response = case.call()

    assert response.status_code in (401, 403), f"{case.method} {case.formatted_path}: {response.status_code}"
    case.validate_response(response, checks=CHECKS)
