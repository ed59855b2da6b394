"""`GET /metrics` (config/metrics.py): the endpoint and the API request metrics, in one process or several."""

import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.database import subprocess_database_url
from tests.scraping import parse, scrape, value

ROOT = Path(__file__).resolve().parents[2]


# --- The endpoint --------------------------------------------------------------------


def test_metrics_is_open_to_scrapers_and_never_cached(client, db):
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert response["Cache-Control"] == "no-store"


def test_metrics_answers_get_only(client, db):
    assert client.post("/metrics").status_code == 405


# --- Who may scrape --------------------------------------------------------------------

TOKEN = "scrape-token-0123456789abcdef"


def test_with_a_token_set_a_scrape_without_one_is_refused_with_401_and_a_bearer_challenge(client, db, settings):
    settings.METRICS_TOKEN = TOKEN

    response = client.get("/metrics")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert response["Content-Type"].startswith("text/plain")
    assert b"http_requests_total" not in response.content


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", TOKEN])
def test_a_wrong_token_is_refused_with_401(client, db, settings, header):
    settings.METRICS_TOKEN = TOKEN

    response = client.get("/metrics", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_the_right_token_is_let_in(client, db, settings, scheme):
    settings.METRICS_TOKEN = TOKEN

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"{scheme} {TOKEN}")

    assert response.status_code == 200
    assert b"http_requests_total" in response.content or b"ingestion_metrics_up" in response.content


def _allow(settings, *networks: str, proxies: int = 0) -> None:
    settings.METRICS_ALLOWED_NETWORKS = tuple(ipaddress.ip_network(network) for network in networks)
    settings.TRUSTED_PROXY_COUNT = proxies


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.0.9", "2001:db8::5", "::ffff:10.0.0.7"])
def test_an_address_in_the_allowed_networks_is_let_in(client, db, settings, address):
    _allow(settings, "10.0.0.0/8", "192.168.0.0/24", "2001:db8::/32")

    assert client.get("/metrics", REMOTE_ADDR=address).status_code == 200


@pytest.mark.parametrize("address", ["203.0.113.5", "192.168.1.9", "2001:db9::5", "unix-socket"])
def test_an_address_outside_the_allowed_networks_is_refused_with_403(client, db, settings, address):
    _allow(settings, "10.0.0.0/8", "192.168.0.0/24", "2001:db8::/32")

    response = client.get("/metrics", REMOTE_ADDR=address)

    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/plain")


def test_without_a_trusted_proxy_x_forwarded_for_cannot_lend_an_allowed_address(client, db, settings):
    _allow(settings, "10.0.0.0/8")

    response = client.get("/metrics", REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="10.0.0.1")

    assert response.status_code == 403


@pytest.mark.parametrize(
    ("forwarded", "status"),
    [("10.2.3.4", 200), ("203.0.113.5", 403), ("10.9.9.9, 203.0.113.5", 403), ("203.0.113.5, 10.2.3.4", 200)],
)
def test_behind_a_trusted_proxy_the_address_it_saw_is_checked(client, db, settings, forwarded, status):
    # The proxy itself (REMOTE_ADDR) is inside the network; only what it wrote counts.
    _allow(settings, "10.0.0.0/8", proxies=1)

    response = client.get("/metrics", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)

    assert response.status_code == status


def test_with_a_token_and_networks_both_are_required(client, db, settings):
    _allow(settings, "10.0.0.0/8")
    settings.METRICS_TOKEN = TOKEN
    right = f"Bearer {TOKEN}"

    assert client.get("/metrics", REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION=right).status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.2").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.2", HTTP_AUTHORIZATION=right).status_code == 200


# --- What a scrape costs ----------------------------------------------------------------


def test_a_flood_of_scrapes_reads_the_ingestion_figures_once_per_cache_window(
    client, db, settings, clock, django_assert_num_queries
):
    settings.METRICS_CACHE_SECONDS = 5

    with django_assert_num_queries(4):  # the four small queries of ingestion/metrics.py
        for _ in range(20):
            assert client.get("/metrics").status_code == 200
            clock.advance(0.2)
    clock.advance(1.0)  # 5 s after the first read
    with django_assert_num_queries(4):
        samples = scrape(client)

    assert value(samples, "ingestion_metrics_up") == 1
    # Request metrics are not cached: they cost no query, and the last scrape sees the 20 before it.
    assert value(samples, "http_requests_total", method="GET", route="metrics", status="200") >= 20


def test_with_a_zero_cache_window_every_scrape_reads_the_figures(client, db, settings, django_assert_num_queries):
    settings.METRICS_CACHE_SECONDS = 0

    with django_assert_num_queries(8):
        client.get("/metrics")
        client.get("/metrics")


# --- API request metrics --------------------------------------------------------------


def test_a_request_is_counted_by_method_route_and_status_and_timed(client, db):
    labels = {"method": "GET", "route": "health"}
    before = scrape(client)

    client.get("/api/health")

    after = scrape(client)

    def increase(name, **more):
        return value(after, name, **labels, **more) - value(before, name, **labels, **more)

    assert increase("http_requests_total", status="200") == 1
    assert increase("http_request_duration_seconds_count") == 1
    assert increase("http_request_duration_seconds_bucket", le="+Inf") == 1


def test_route_is_the_url_pattern_name_never_the_path(client, db):
    client.get("/api/ingest/runs/424242")
    client.get("/no/such/page/ada@example.com")

    body = client.get("/metrics").content.decode()

    assert 'route="ingest-run-detail"' in body
    assert 'route="unresolved",status="404"' in body
    assert "424242" not in body
    assert "ada@example.com" not in body


def test_made_up_methods_share_one_label_value(client, db):
    client.generic("BREW", "/api/health")

    samples = scrape(client)

    assert value(samples, "http_requests_total", method="other", route="health", status="405") >= 1


# --- Several processes ---------------------------------------------------------------

ONE_REQUEST = """
import django
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
assert Client().get("/api/health").status_code == 200
"""


def _environment(**environ: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PROMETHEUS_"))}
    return env | {"DJANGO_SETTINGS_MODULE": "config.settings.test", **environ}


def test_multiprocess_mode_merges_the_request_counts_of_every_process(client, db, settings, tmp_path):
    # /api/health needs no database; nothing connects to this one.
    env = _environment(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), DATABASE_URL="postgres://unused@127.0.0.1:1/unused")
    workers = [
        subprocess.Popen([sys.executable, "-c", ONE_REQUEST], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for worker in workers:
        _, errors = worker.communicate(timeout=120)
        assert worker.returncode == 0, errors
    settings.METRICS_MULTIPROC_DIR = str(tmp_path)

    samples = scrape(client)

    labels = {"method": "GET", "route": "health"}
    assert value(samples, "http_requests_total", status="200", **labels) == 2
    assert value(samples, "http_request_duration_seconds_count", **labels) == 2
    assert value(samples, "ingestion_metrics_up") == 1


GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi:application"]


@pytest.mark.slow
@pytest.mark.django_db
def test_gunicorn_workers_all_report_the_same_server_wide_counts(tmp_path):
    metrics_dir = tmp_path / "metrics"
    listener = socket.create_server(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    env = _environment(
        DJANGO_SECRET_KEY="x" * 60,
        DJANGO_HTTPS="false",
        DATABASE_URL=subprocess_database_url(),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        GUNICORN_WORKERS="3",
        GUNICORN_THREADS="1",
        DJANGO_SETTINGS_MODULE="config.settings.base",
    )
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by an earlier server")
    # gunicorn binds to the socket made here, so there is no race for a free port.
    server = subprocess.Popen(
        [*GUNICORN, "--bind", f"fd://{listener.fileno()}", "--log-level", "warning", "--access-logfile", "/dev/null"],
        cwd=ROOT,
        env=env,
        pass_fds=[listener.fileno()],
    )
    listener.close()
    try:
        _wait_until_up(base_url)
        for _ in range(30):
            assert requests.get(f"{base_url}/api/health", timeout=5).status_code == 200

        scrapes = [parse(requests.get(f"{base_url}/metrics", timeout=5).text) for _ in range(6)]
    finally:
        server.terminate()
        server.wait(timeout=20)

    for samples in scrapes:
        # 30 counted requests plus the one that found the server up, whichever worker answers.
        assert value(samples, "http_requests_total", method="GET", route="health", status="200") == 31
    assert not (metrics_dir / "counter_1.db").exists()


def _wait_until_up(base_url: str) -> None:
    # The socket listens already: this one request waits in its backlog for a worker.
    assert requests.get(f"{base_url}/api/health", timeout=60).status_code == 200
