"""Which upstream URLs a run may fetch from, and where its connections may go.

The URL comes only from settings or the command line, never from an API request. Even
so, a run refuses hosts outside INGESTION_ALLOWED_HOSTS, ports outside
INGESTION_ALLOWED_PORTS and, unless INGESTION_ALLOW_PRIVATE_NETWORKS is on, any host that
resolves to a loopback, private, link-local or otherwise non-public address (cloud
metadata endpoints live there).

A check alone would not hold: requests looks the name up again for every new connection,
and a short-lived DNS record can point those at 127.0.0.1 once the check has passed (DNS
rebinding). So the addresses checked when a run starts are the only ones its connections
dial (`PinnedAdapter`), while the Host header, TLS SNI and certificate stay the name's.
"""

import ipaddress
import socket
import sys
from urllib.parse import SplitResult, urlsplit

from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection

DEFAULT_PORTS = {"http": 80, "https": 443}


class SourceURLRefused(Exception):
    pass


def allowed_hosts() -> set[str]:
    configured = urlsplit(settings.INGESTION_SOURCE_URL).hostname or ""
    return {host.lower() for host in [configured, *settings.INGESTION_ALLOWED_HOSTS] if host}


def allowed_ports() -> set[int]:
    configured = _port_of(urlsplit(settings.INGESTION_SOURCE_URL))
    return {port for port in [configured, *settings.INGESTION_ALLOWED_PORTS] if port}


def check_source_url(url: str, *, resolve=None) -> tuple[str, ...] | None:
    """Raise SourceURLRefused with a sentence when `url` may not be fetched.

    Otherwise return the addresses the host resolved to, every one public, in the
    resolver's order; None when INGESTION_ALLOW_PRIVATE_NETWORKS lets any address pass.
    """
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise SourceURLRefused(f"Source URL must be an http(s) URL with a host, not {url!r}.")
    if parts.username or parts.password:
        raise SourceURLRefused("Source URL must not carry credentials.")
    host, port = parts.hostname.lower(), _port_of(parts)
    if port is None:
        raise SourceURLRefused(f"Source URL has an invalid port: {url!r}.")
    if host not in allowed_hosts():
        raise SourceURLRefused(
            f"Host {host!r} is not an allowed upstream; add it to INGESTION_ALLOWED_HOSTS to use it."
        )
    if port not in allowed_ports():
        raise SourceURLRefused(
            f"Port {port} is not an allowed upstream port; add it to INGESTION_ALLOWED_PORTS to use it."
        )
    if settings.INGESTION_ALLOW_PRIVATE_NETWORKS:
        return None
    # Looked up at call time, not bound as a default: tests stand in for DNS with socket.getaddrinfo.
    resolve = resolve or socket.getaddrinfo
    try:
        found = resolve(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise SourceURLRefused(f"Host {host!r} does not resolve: {exc}.") from None
    addresses = tuple(dict.fromkeys(info[4][0] for info in found))
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global:
            raise SourceURLRefused(
                f"Host {host!r} resolves to non-public address {ip}; "
                "set INGESTION_ALLOW_PRIVATE_NETWORKS=true to allow it (for a local upstream)."
            )
    return addresses


def _port_of(parts: SplitResult) -> int | None:
    try:
        return parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # out of range or not a number
        return None


class PinnedAdapter(HTTPAdapter):
    """A requests transport whose new connections dial only `addresses`, those checked for `host`.

    Its pools still address `host` by name, so the Host header, TLS SNI and the certificate's
    hostname check are the name's; only the socket's destination is fixed, so no connection
    (a reconnect after an error included) asks DNS again. Through a proxy, requests uses its
    own proxy pools instead: the proxy is then the only connection target, and it resolves
    the name.
    """

    def __init__(self, host: str, addresses: tuple[str, ...], **kwargs):
        self.pinned_host, self.pinned_addresses = _comparable(host), tuple(addresses)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": self._pinned(HTTPConnectionPool, HTTPConnection),
            "https": self._pinned(HTTPSConnectionPool, HTTPSConnection),
        }

    def _pinned(self, pool: type, connection_class: type) -> type:
        # Made once per adapter (a run's session): the pools then create such connections
        # only when they need a new one, so a request costs nothing more than before.
        pinned = {"pinned_host": self.pinned_host, "pinned_addresses": self.pinned_addresses}
        dialling = type(f"Pinned{connection_class.__name__}", (_PinnedConnection, connection_class), pinned)
        return type(f"Pinned{pool.__name__}", (pool,), {"ConnectionCls": dialling})


class _PinnedConnection:
    """Mixed into urllib3's connections: open the socket to a pinned address, never to a fresh lookup."""

    pinned_host: str
    pinned_addresses: tuple[str, ...]

    def _new_conn(self) -> socket.socket:
        if _comparable(self.host) != self.pinned_host:
            raise NewConnectionError(self, f"Refused {self.host}: connections go only to {self.pinned_host}.")
        error = None
        for address in self.pinned_addresses:  # in the resolver's order, as a lookup would have been tried
            try:
                sock = connection.create_connection(
                    (address, self.port), self.timeout, self.source_address, self.socket_options
                )
            except TimeoutError:
                error = ConnectTimeoutError(
                    self, f"Connection to {self.host} ({address}) timed out. (connect timeout={self.timeout})"
                )
            except OSError as exc:
                error = NewConnectionError(self, f"Failed to establish a new connection to {address}: {exc}")
            else:
                sys.audit("http.client.connect", self, address, self.port)
                return sock
        raise error or NewConnectionError(self, f"No checked address to connect {self.host} to.")


def _comparable(host: str) -> str:
    # urllib3 keeps an IPv6 literal in brackets; urlsplit does not. A final dot names the same host.
    return host.strip("[]").rstrip(".").lower()
