import socket
import ssl
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import urllib3

from ingestion import pipeline, runs
from ingestion.models import IngestRun
from ingestion.source import ClientSettings, UpstreamClient, UpstreamError
from ingestion.source_url import PinnedAdapter, SourceURLRefused, check_source_url
from mocksource.dataset import write_dataset
from mocksource.faults import FaultConfig
from tests.ingestion.fakes import FakeUpstream
from tests.records import records
from tests.upstream import running_mocksource, serving_pages


def resolver(*addresses):
    def resolve(host, port, proto=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, proto, "", (address, port)) for address in addresses]

    return resolve


@pytest.fixture
def production(settings):
    settings.INGESTION_SOURCE_URL = "https://upstream.example.com"
    settings.INGESTION_ALLOWED_HOSTS = ["backup.example.com"]
    settings.INGESTION_ALLOW_PRIVATE_NETWORKS = False
    return settings


def test_configured_and_listed_public_hosts_are_allowed(production):
    check_source_url("https://upstream.example.com/v1", resolve=resolver("93.184.216.34"))
    check_source_url("https://backup.example.com", resolve=resolver("93.184.216.35"))


def test_a_host_outside_the_allowlist_is_refused(production):
    with pytest.raises(SourceURLRefused, match=r"'evil\.example\.net' is not an allowed upstream"):
        check_source_url("https://evil.example.net", resolve=resolver("93.184.216.34"))


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "192.168.1.10", "169.254.169.254", "::1", "fd00::1"])
def test_allowed_host_resolving_to_a_non_public_address_is_refused(production, address):
    with pytest.raises(SourceURLRefused, match=f"non-public address {address}"):
        check_source_url("https://upstream.example.com", resolve=resolver(address))


def test_private_addresses_pass_when_explicitly_allowed(production):
    production.INGESTION_ALLOW_PRIVATE_NETWORKS = True
    check_source_url("https://upstream.example.com", resolve=resolver("10.0.0.5"))


@pytest.mark.parametrize(
    "url",
    ["ftp://upstream.example.com", "file:///etc/passwd", "upstream.example.com", "http://user:pw@upstream.example.com"],
)
def test_urls_that_are_not_plain_http_are_refused(production, url):
    with pytest.raises(SourceURLRefused):
        check_source_url(url, resolve=resolver("93.184.216.34"))


@pytest.mark.django_db
def test_a_run_for_a_refused_url_is_never_created(production):
    with pytest.raises(runs.RunRefused, match="not an allowed upstream"):
        runs.create_run(trigger="command", source_url="http://169.254.169.254/latest/meta-data")
    assert not IngestRun.objects.exists()


def test_every_address_a_host_resolves_to_must_be_public(production):
    with pytest.raises(SourceURLRefused, match=r"non-public address 10\.0\.0\.5"):
        check_source_url("https://upstream.example.com", resolve=resolver("93.184.216.34", "10.0.0.5"))


def test_the_checked_addresses_are_returned_in_resolver_order_once_each(production):
    resolve = resolver("93.184.216.35", "93.184.216.34", "93.184.216.35")
    assert check_source_url("https://upstream.example.com", resolve=resolve) == ("93.184.216.35", "93.184.216.34")


def test_the_urls_own_port_is_the_one_resolved(production):
    asked = []
    production.INGESTION_ALLOWED_PORTS = [80, 443, 8443]

    def resolve(host, port, proto=0):
        asked.append((host, port))
        return resolver("93.184.216.34")(host, port, proto)

    check_source_url("https://upstream.example.com:8443", resolve=resolve)
    check_source_url("http://upstream.example.com", resolve=resolve)
    assert asked == [("upstream.example.com", 8443), ("upstream.example.com", 80)]


def test_with_private_networks_allowed_nothing_is_resolved_or_pinned(production):
    production.INGESTION_ALLOW_PRIVATE_NETWORKS = True

    def resolve(*args, **kwargs):
        raise AssertionError("resolved")

    assert check_source_url("https://upstream.example.com", resolve=resolve) is None


def test_a_port_outside_the_allowlist_is_refused_naming_the_setting(production):
    with pytest.raises(
        SourceURLRefused, match=r"Port 8080 is not an allowed upstream port; add it to INGESTION_ALLOWED_PORTS"
    ):
        check_source_url("http://upstream.example.com:8080", resolve=resolver("93.184.216.34"))


def test_default_ports_listed_ports_and_the_configured_urls_port_are_allowed(production):
    production.INGESTION_SOURCE_URL = "https://upstream.example.com:8443"
    production.INGESTION_ALLOWED_PORTS = [80, 443, 9443]
    for url in ("http://backup.example.com", "https://backup.example.com:443", "https://backup.example.com:8443",
                "https://backup.example.com:9443"):  # fmt: skip
        check_source_url(url, resolve=resolver("93.184.216.34"))


def test_an_invalid_port_is_refused(production):
    with pytest.raises(SourceURLRefused, match="invalid port"):
        check_source_url("http://upstream.example.com:99999", resolve=resolver("93.184.216.34"))


@pytest.mark.django_db
def test_a_run_for_a_refused_port_is_never_created(production):
    with pytest.raises(runs.RunRefused, match="Port 22 is not an allowed upstream port"):
        runs.create_run(trigger="command", source_url="http://upstream.example.com:22")
    assert not IngestRun.objects.exists()


@pytest.mark.django_db
def test_a_run_whose_port_is_no_longer_allowed_fails_at_execution(settings):
    settings.INGESTION_ALLOWED_PORTS = [80, 443, 8080]
    run = runs.create_run(trigger="command", source_url="http://upstream.test:8080", page_size=10)
    settings.INGESTION_ALLOWED_PORTS = [80, 443]
    run = pipeline.execute_run(run.pk, session=FakeUpstream(records(5)).session())
    assert run.status == "failed"
    assert "Port 8080 is not an allowed upstream port; add it to INGESTION_ALLOWED_PORTS" in run.error
    assert run.fetched == 0


# Connections: a scripted resolver stands in for DNS and a fake create_connection for the
# socket connect; it records the address each connection was dialled to, then connects to
# a server of the test's on 127.0.0.1. Everything between (requests, urllib3, TLS) is real.

PUBLIC, OTHER_PUBLIC = "93.184.216.34", "93.184.216.35"
TLS = Path(__file__).parent / "tls"


class FakeDNS:
    """`socket.getaddrinfo` for the names a test scripts: each lookup takes the next answer,
    the last one repeats. Other names (IP literals, the test servers') resolve as usual."""

    def __init__(self, real):
        self.real = real
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: Counter = Counter()

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        if host not in self.answers:
            return self.real(host, port, family, type, proto, flags)
        self.lookups[host] += 1
        answers = self.answers[host]
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port)) for address in addresses]


class Dialler:
    """urllib3's create_connection: records where each connection goes, as the real one would
    (a name is looked up now), then connects to `target` on 127.0.0.1 instead."""

    def __init__(self, real):
        self.real = real
        self.target: tuple[str, int] | None = None
        self.dialled: list[str] = []
        self.refusing: set[str] = set()

    def __call__(self, address, timeout=None, source_address=None, socket_options=None):
        host, port = address
        ip = socket.getaddrinfo(host.strip("[]"), port, 0, socket.SOCK_STREAM)[0][4][0]
        self.dialled.append(ip)
        if ip in self.refusing:
            raise ConnectionRefusedError(f"{ip} refuses connections")
        return self.real(self.target, timeout, source_address, socket_options)


@pytest.fixture
def network(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    dns, dial = FakeDNS(socket.getaddrinfo), Dialler(urllib3.util.connection.create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", dial)
    return SimpleNamespace(dns=dns, dial=dial)


def pinned_client(url, **settings):
    """The client a run builds: its addresses from the check at execution start."""
    options = {"max_retries": 0, "concurrency": 1, **settings}
    return UpstreamClient(url, page_size=10, settings=ClientSettings(**options), addresses=check_source_url(url))


@pytest.mark.django_db
def test_a_host_rebound_to_loopback_after_the_check_is_never_connected_to(production, network, tmp_path):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(120), path)
    # Public for the checks at create and at execution start; loopback for anyone who asks later.
    network.dns.answers["upstream.example.com"] = [[PUBLIC], [PUBLIC], ["127.0.0.1"]]
    with running_mocksource(path) as base_url:
        network.dial.target = ("127.0.0.1", int(base_url.rsplit(":", 1)[1]))
        run = runs.create_run(trigger="command", source_url="http://upstream.example.com", page_size=10)
        run = pipeline.execute_run(run.pk)
    assert (run.status, run.inserted) == ("succeeded", 120)
    # mocksource closes every connection: each of the 12 pages was a new connection, none to loopback.
    assert set(network.dial.dialled) == {PUBLIC} and len(network.dial.dialled) >= 12
    assert network.dns.lookups["upstream.example.com"] == 2


@pytest.mark.django_db
def test_reconnects_after_dropped_connections_still_go_to_the_pinned_address(production, network, tmp_path):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(100), path)
    network.dns.answers["upstream.example.com"] = [[PUBLIC], [PUBLIC], ["169.254.169.254"]]
    production.INGESTION_MAX_RETRIES = 10
    with running_mocksource(path, faults=FaultConfig(disconnect_rate=0.4, seed=5)) as base_url:
        network.dial.target = ("127.0.0.1", int(base_url.rsplit(":", 1)[1]))
        run = runs.create_run(trigger="command", source_url="http://upstream.example.com", page_size=10)
        run = pipeline.execute_run(run.pk)
    assert (run.status, run.inserted) == ("succeeded", 100)
    assert run.retries_by_reason.get("connection", 0) > 0
    assert set(network.dial.dialled) == {PUBLIC}
    assert network.dns.lookups["upstream.example.com"] == 2


def test_a_pinned_client_keeps_its_connection_alive_across_pages(production, network):
    network.dns.answers["upstream.example.com"] = [[PUBLIC], ["127.0.0.1"]]
    with serving_pages(records(100)) as served:
        network.dial.target = ("127.0.0.1", served.port)
        client = pinned_client("http://upstream.example.com")
        pages = [client.fetch_page(number) for number in range(1, 11)]
    assert sum(len(page.records) for page in pages) == 100
    assert served.connections == 1 and network.dial.dialled == [PUBLIC]
    assert set(served.hosts) == {"upstream.example.com"}
    assert network.dns.lookups["upstream.example.com"] == 1


def test_a_host_with_several_addresses_connects_only_to_the_checked_ones(production, network):
    network.dns.answers["upstream.example.com"] = [[PUBLIC, OTHER_PUBLIC], ["127.0.0.1"]]
    network.dial.refusing = {PUBLIC}
    with serving_pages(records(30)) as served:
        network.dial.target = ("127.0.0.1", served.port)
        page = pinned_client("http://upstream.example.com").fetch_page(2)
    assert len(page.records) == 10
    assert network.dial.dialled == [PUBLIC, OTHER_PUBLIC]


def test_an_ip_literal_host_is_dialled_as_itself(production, network):
    production.INGESTION_ALLOWED_HOSTS = [PUBLIC]
    with serving_pages(records(10)) as served:
        network.dial.target = ("127.0.0.1", served.port)
        pinned_client(f"http://{PUBLIC}").fetch_page(1)
    assert network.dial.dialled == [PUBLIC] and served.hosts == [PUBLIC]


def test_an_ipv6_literal_host_is_dialled_as_itself(production, network):
    address = "2606:2800:220:1:248:1893:25c8:1946"
    production.INGESTION_ALLOWED_HOSTS = [address]
    with serving_pages(records(10)) as served:
        network.dial.target = ("127.0.0.1", served.port)
        pinned_client(f"http://[{address}]").fetch_page(1)
    assert network.dial.dialled == [address] and served.hosts == [f"[{address}]"]


def test_a_loopback_ipv6_literal_is_refused(production):
    production.INGESTION_ALLOWED_HOSTS = ["::1"]
    with pytest.raises(SourceURLRefused, match="non-public address ::1"):
        check_source_url("http://[::1]")


def server_tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS / "upstream.pem", TLS / "upstream.key")
    return context


def test_https_verifies_the_certificate_for_the_name_while_dialling_the_pinned_address(
    production, network, monkeypatch
):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(TLS / "ca.pem"))
    network.dns.answers["upstream.example.com"] = [[PUBLIC], ["127.0.0.1"]]
    with serving_pages(records(10), tls=server_tls()) as served:
        network.dial.target = ("127.0.0.1", served.port)
        page = pinned_client("https://upstream.example.com").fetch_page(1)
    assert len(page.records) == 10
    assert network.dial.dialled == [PUBLIC]
    # The name, not the address, went into the TLS handshake (SNI) and the Host header.
    assert served.server_names == ["upstream.example.com"] and served.hosts == ["upstream.example.com"]


def test_https_refuses_a_certificate_that_is_not_for_the_name(production, network, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(TLS / "ca.pem"))
    network.dns.answers["backup.example.com"] = [[PUBLIC]]
    with serving_pages(records(10), tls=server_tls()) as served:
        network.dial.target = ("127.0.0.1", served.port)
        with pytest.raises(UpstreamError, match="certificate verify failed"):
            pinned_client("https://backup.example.com").fetch_page(1)
    assert network.dial.dialled == [PUBLIC] and served.hosts == []


def test_through_a_proxy_only_the_proxy_is_dialled_and_it_is_sent_the_name(production, network, monkeypatch, caplog):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    network.dns.answers["upstream.example.com"] = [[PUBLIC], ["127.0.0.1"]]
    network.dns.answers["proxy.internal"] = [["10.1.2.3"]]
    with serving_pages(records(10)) as served:
        network.dial.target = ("127.0.0.1", served.port)
        pinned_client("http://upstream.example.com").fetch_page(1)
    # The proxy is the connection target and resolves the upstream's name itself.
    assert network.dial.dialled == ["10.1.2.3"]
    assert served.targets == ["http://upstream.example.com/api/customers?page=1&limit=10"]
    assert network.dns.lookups["upstream.example.com"] == 1
    assert "through a proxy" in caplog.text


def test_a_pinned_transport_connects_to_no_other_host(network):
    session = requests.Session()
    adapter = PinnedAdapter("upstream.example.com", (PUBLIC,))
    session.mount("http://", adapter)
    with pytest.raises(requests.ConnectionError, match=r"only to upstream\.example\.com"):
        session.get("http://backup.example.com/api/customers", timeout=1)
    assert network.dial.dialled == []
