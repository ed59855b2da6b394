"""Which upstream URLs a run may fetch from.

The URL comes only from settings or the command line, never from an API request. Even
so, a run refuses hosts outside INGESTION_ALLOWED_HOSTS and, unless
INGESTION_ALLOW_PRIVATE_NETWORKS is on, any host that resolves to a loopback, private,
link-local or otherwise non-public address (cloud metadata endpoints live there).
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class SourceURLRefused(Exception):
    pass


def allowed_hosts() -> set[str]:
    configured = urlsplit(settings.INGESTION_SOURCE_URL).hostname or ""
    return {host.lower() for host in [configured, *settings.INGESTION_ALLOWED_HOSTS] if host}


def check_source_url(url: str, *, resolve=socket.getaddrinfo) -> None:
    """Raise SourceURLRefused with a sentence when `url` may not be fetched."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceURLRefused(f"Source URL must be an http(s) URL with a host, not {url!r}.")
    if parts.username or parts.password:
        raise SourceURLRefused("Source URL must not carry credentials.")
    host = parts.hostname.lower()
    if host not in allowed_hosts():
        raise SourceURLRefused(
            f"Host {host!r} is not an allowed upstream; add it to INGESTION_ALLOWED_HOSTS to use it."
        )
    if settings.INGESTION_ALLOW_PRIVATE_NETWORKS:
        return
    try:
        addresses = {info[4][0] for info in resolve(host, parts.port or 443, proto=socket.IPPROTO_TCP)}
    except OSError as exc:
        raise SourceURLRefused(f"Host {host!r} does not resolve: {exc}.") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global:
            raise SourceURLRefused(
                f"Host {host!r} resolves to non-public address {ip}; "
                "set INGESTION_ALLOW_PRIVATE_NETWORKS=true to allow it (for a local upstream)."
            )
