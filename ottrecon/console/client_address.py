"""Who is signing in: the TCP peer, or the client a configured trusted proxy says it forwards for.

X-Forwarded-For is written by whoever sends the request, so it is believed only when the peer is
one of OTTRECON_CONSOLE_TRUSTED_PROXIES; then the right-most address that is not itself a trusted
proxy is the client (the proxies append; anything left of that could be forged by the client).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDED_FOR = "X-Forwarded-For"


def parse_trusted_proxies(text: str) -> tuple[Network, ...]:
    """Parse ``ADDRESS_OR_CIDR[,…]`` (e.g. ``10.0.0.5,192.168.0.0/24``); ValueError names each bad entry."""
    networks, problems = [], []
    for position, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            problems.append(f"entry {position} is not an IP address or network")
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(networks)


def client_address(request: web.Request, trusted: Sequence[Network]) -> str:
    """The address to throttle sign-ins by; never raises, whatever the headers hold."""
    peer = request.remote or "unknown"
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for header in request.headers.getall(FORWARDED_FOR, []) for hop in header.split(",")]
    for hop in reversed(hops):
        if not _is_address(hop):
            break  # not written by our proxy: do not let it name the client
        if not _is_trusted(hop, trusted):
            return str(ipaddress.ip_address(hop))
    return peer


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(text: str, trusted: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(address in network for network in trusted)
