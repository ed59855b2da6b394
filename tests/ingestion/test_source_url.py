import socket

import pytest

from ingestion import runs
from ingestion.source_url import SourceURLRefused, check_source_url


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
    from ingestion.models import IngestRun

    assert not IngestRun.objects.exists()
