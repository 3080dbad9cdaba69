"""Which upstreams PSM may fetch, decided on what is really used (the SSRF gate).

- `upstream_url_problem` checks every URL before it is requested (a mirror's source when it is
  saved, every URL an index gives, every redirect hop): http(s) only, read the same way by
  urllib3 (which requests connects with) and by urllib.parse, a plain host on the allowlist;
- the connection itself (`CheckedAdapter`'s connections) resolves the host, refuses loopback,
  private, link-local and other special addresses unless the allowlist names them, and connects
  to the address it checked, so a name that resolves differently later (DNS rebinding) gains
  nothing.
Through a proxy (PSM_HTTP_PROXY, or the HTTP(S)_PROXY variables) PSM connects to the proxy, not
the upstream: only the URL check applies, and the proxy must refuse internal addresses itself.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection, parse_url

from .errors import UpstreamRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class _Allowlist:
    names: tuple[str, ...]  # a name allows itself and its subdomains
    networks: tuple[IPNetwork, ...]  # an address or CIDR entry allows the addresses in it
    any_name: bool  # "*": any name, and any public address


def _allowlist(entries: list[str] | None = None) -> _Allowlist:
    """The allowlist (the setting's by default), parsed once per distinct list: it is read
    for every URL and every connection."""
    return _parse_allowlist(tuple(settings.PSM_UPSTREAM_ALLOWLIST if entries is None else entries))


@functools.lru_cache(maxsize=16)
def _parse_allowlist(entries: tuple[str, ...]) -> _Allowlist:
    names: list[str] = []
    networks: list[IPNetwork] = []
    any_name = False
    for raw in entries:
        entry = raw.strip().lower()
        if entry == "*":
            any_name = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            names.append(entry.strip("."))
    return _Allowlist(tuple(names), tuple(networks), any_name)


# A DNS name as resolvers read it: ASCII letters, digits, "-" and "_" in non-empty labels.
_HOST_NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}\.?")
# A last label that URL parsers and inet_aton read as a number: the host is then an address.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


def odd_character(text: str) -> str:
    """Name the first character URL parsers disagree about (backslash, space, control,
    non-ASCII), or ""."""
    for char in text:
        if char == "\\":
            return "a backslash"
        if char.isspace() or not " " < char < "\x7f":
            return f"the character {char!r}"
    return ""


def upstream_url_problem(url: str, allowlist: list[str] | None = None) -> str:
    """Say why PSM must not fetch `url` ("" when it may), without touching the network."""
    odd = odd_character(url)
    if odd:
        return (
            f"the URL contains {odd}, which URL parsers read differently; percent-encode it "
            "(in a host name, use its xn-- form)"
        )
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError as exc:  # a bad port or IPv6 bracket; the message quotes no secret
        return f"the URL cannot be read: {exc}"
    try:
        parsed = parse_url(url)  # what requests and urllib3 connect to
    except ValueError:  # its message quotes the whole URL, secrets and all
        return "the URL cannot be read: its host or port is malformed"
    scheme = split.scheme.lower()
    if scheme not in ("http", "https"):
        return f"only http and https URLs are fetched, not {scheme or 'a URL without a scheme'}"
    userinfo, _, hostport = split.netloc.rpartition("@")
    if "@" in userinfo:
        return "the URL has more than one '@' before its host"
    host = split.hostname or ""
    if not host:
        return "the URL has no host"
    if port == 0:
        return "the URL names port 0"
    if (parsed.scheme, (parsed.host or "").strip("[]"), parsed.port) != (scheme, host, port):
        return "URL parsers disagree on the scheme, host or port of the URL"
    address: IPAddress | None = None
    if hostport.startswith("["):
        try:
            ipv6 = ipaddress.IPv6Address(host)
        except ValueError:
            return f"the host [{host}] is not an IPv6 address"
        if ipv6.scope_id:
            return "the URL names an IPv6 zone"
        address = ipv6.ipv4_mapped or ipv6  # the same IPv4 host: IPv4 entries apply
    elif not _HOST_NAME.fullmatch(host):
        return f"the host {host!r} is not a plain DNS name or IP address"
    elif _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            return (
                f"the host {host!r} is an address in a non-standard form; write IPv4 addresses "
                "as four decimal numbers (a.b.c.d)"
            )
    rules = _allowlist(allowlist)
    if address is None:
        name = host.rstrip(".")
        if rules.any_name or any(name == n or name.endswith("." + n) for n in rules.names):
            return ""
    elif rules.any_name or any(address in network for network in rules.networks):
        return address_problem(str(address), allowlist)
    return (
        f"the host {host} is not on the upstream allowlist; an administrator can add it to "
        "PSM_UPSTREAM_ALLOWLIST"
    )


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits


def _special_kind(ip: IPAddress) -> str:
    """What makes `ip` no public Internet address ("" when it is one)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64:  # a gateway forwards it to the IPv4 address inside: that one counts
            return _special_kind(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None and (kind := _special_kind(embedded)):
            return kind
        if ip.is_site_local:
            return "site-local"
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified or (ip.version == 4 and ip.packed[0] == 0):
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return "private"
    return ""


def address_problem(address: str, allowlist: list[str] | None = None) -> str:
    """Say why PSM must not connect to the IP `address` ("" when it may).

    Public addresses may be used. Others only when PSM_UPSTREAM_ALLOWLIST names the address or a
    network containing it, or, for private and loopback ones, PSM_UPSTREAM_ALLOW_PRIVATE is on.
    """
    try:
        ip: IPAddress = ipaddress.ip_address(address)
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # the same IPv4 host: IPv4 entries apply
    if any(ip in network for network in _allowlist(allowlist).networks):
        return ""
    kind = _special_kind(ip)
    if not kind:
        return ""
    if kind in ("private", "loopback"):
        if settings.PSM_UPSTREAM_ALLOW_PRIVATE:
            return ""
        remedy = " (or set PSM_UPSTREAM_ALLOW_PRIVATE=true)"
    else:
        remedy = ""
    return (
        f"{ip} is not a public address ({kind}); an administrator can allow it by listing it, "
        f"or a network containing it, in PSM_UPSTREAM_ALLOWLIST{remedy}"
    )


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order, without repeats."""
    family = connection.allowed_gai_family()
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _CheckedConnection(HTTPConnection):
    """Connects only to an address the upstream rules allow: resolved, checked, then used.

    The host name stays the connection's `host`, so TLS sends it (SNI) and verifies the
    certificate against it as usual.
    """

    def _new_conn(self) -> socket.socket:
        try:
            addresses = resolve_host(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        problems = {address: address_problem(address) for address in addresses}
        allowed = [address for address, problem in problems.items() if not problem]
        if not allowed:
            scheme = "https" if isinstance(self, HTTPSConnection) else "http"
            shown = self.host if ":" not in self.host else f"[{self.host}]"
            reason = "; ".join(problems.values()) or "the host resolves to no address"
            if addresses != [self._dns_host.strip("[]")]:
                reason = f"{self.host} resolves to {', '.join(addresses)}: {reason}"
            raise UpstreamRefused(f"{scheme}://{shown}:{self.port}/", reason)
        error: Exception | None = None
        for address in allowed:
            try:
                return connection.create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                error = ConnectTimeoutError(
                    self, f"Connection to {self.host} ({address}) timed out: {exc}"
                )
                error.__cause__ = exc  # raised below, outside this block: keep the cause
            except OSError as exc:
                error = NewConnectionError(
                    self, f"Failed to establish a new connection to {address}: {exc}"
                )
                error.__cause__ = exc
        assert error is not None
        raise error


class _CheckedHTTPSConnection(_CheckedConnection, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class CheckedAdapter(HTTPAdapter):
    """An adapter whose direct connections go through `_CheckedConnection` (proxied ones go to
    the proxy, through requests' own proxy manager)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _CheckedHTTPPool,
            "https": _CheckedHTTPSPool,
        }
