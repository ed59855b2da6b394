"""Which address a request is counted under: REMOTE_ADDR, or what a trusted proxy saw."""

import pytest
from django.test import RequestFactory
from rest_framework.test import APIClient

from accounts.client_address import client_address

pytestmark = pytest.mark.django_db


def request(remote: str = "10.0.0.2", forwarded: str | None = None):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return RequestFactory().get("/", REMOTE_ADDR=remote, **headers)


def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(settings):
    settings.TRUSTED_PROXY_COUNT = 0

    assert client_address(request("10.0.0.2", "203.0.113.5")) == "10.0.0.2"


@pytest.mark.parametrize(
    ("count", "forwarded", "expected"),
    [
        (1, "203.0.113.5", "203.0.113.5"),
        # A client can send any X-Forwarded-For; the proxy appends what it saw, so count from the right.
        (1, "192.0.2.66, 203.0.113.5", "203.0.113.5"),
        (2, "192.0.2.66, 203.0.113.5, 10.0.0.9", "203.0.113.5"),
        (1, " 203.0.113.5 ", "203.0.113.5"),
    ],
)
def test_a_trusted_proxy_count_takes_that_many_entries_from_the_right(settings, count, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = count

    assert client_address(request("10.0.0.2", forwarded)) == expected


@pytest.mark.parametrize(
    ("count", "forwarded"),
    [(1, None), (1, ""), (1, "not-an-address"), (1, "203.0.113.5, "), (2, "203.0.113.5")],
)
def test_a_missing_short_or_malformed_header_falls_back_to_remote_addr(settings, count, forwarded):
    # A request that did not come through every proxy is counted under the nearest one.
    settings.TRUSTED_PROXY_COUNT = count

    assert client_address(request("10.0.0.2", forwarded)) == "10.0.0.2"


def test_ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4(settings):
    settings.TRUSTED_PROXY_COUNT = 0

    assert client_address(request("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert client_address(request("2001:db8:1:2:bbbb::7")) == "2001:db8:1:2::/64"
    assert client_address(request("::ffff:203.0.113.5")) == "203.0.113.5"


def test_behind_a_trusted_proxy_clients_are_locked_out_apart(settings, clock):
    settings.TRUSTED_PROXY_COUNT = 1

    def get(token, client):
        return APIClient().get(
            "/api/customers", HTTP_AUTHORIZATION=f"Token {token}", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=client
        )

    for number in range(5):
        get(f"unknown-{number}", "203.0.113.5")

    assert get("unknown", "203.0.113.5").status_code == 429
    assert get("unknown", "192.0.2.1").status_code == 401


def test_without_a_trusted_proxy_a_forged_header_does_not_escape_the_lockout(settings, clock):
    settings.TRUSTED_PROXY_COUNT = 0
    for number in range(5):
        APIClient().get(
            "/api/customers",
            HTTP_AUTHORIZATION=f"Token unknown-{number}",
            REMOTE_ADDR="203.0.113.5",
            HTTP_X_FORWARDED_FOR=f"192.0.2.{number}",
        )

    response = APIClient().get(
        "/api/customers", HTTP_AUTHORIZATION="Token x", REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="192.0.2.99"
    )
    assert response.status_code == 429
