"""The address a request is counted under: REMOTE_ADDR, or what the nearest trusted proxy saw.

With DJANGO_TRUSTED_PROXY_COUNT=N (N proxies in front of gunicorn, each appending the
address it saw to X-Forwarded-For), the client is the N-th entry from the right; anything
further left was written by the client and is ignored. With 0 (the default) the header is
never read: anyone can send it.
"""

import ipaddress

from django.conf import settings

# One IPv6 host usually holds a whole /64: counting single addresses would give it 2**64 tries.
IPV6_PREFIX = 64


def client_address(request) -> str:
    """The client's IPv4 address, or its IPv6 /64, as text ("unknown" without an IP address)."""
    address = client_ip(request)
    if address is None:  # e.g. a Unix socket; never echo what is there
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


def client_ip(request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's exact address (an IPv4-mapped IPv6 one as IPv4), for matching against networks."""
    address = _forwarded_for(request) or _parse(request.META.get("REMOTE_ADDR", ""))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_for(request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    count = settings.TRUSTED_PROXY_COUNT
    if not count:
        return None
    entries = [entry.strip() for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    # Fewer entries than proxies: the request skipped one; it is counted under the nearest.
    return _parse(entries[-count]) if len(entries) >= count else None


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
