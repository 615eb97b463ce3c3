"""SSRF defence: callback URLs may only reach public addresses, unless allow-listed.

Checked twice: when a job is enqueued (a clear ``invalid_request_error`` for the user) and
again at every delivery attempt on the address actually connected to. The delivery check
resolves the host once, refuses if *any* address is not allowed, and pins the request to
the checked address (URL host rewritten to the IP, ``Host`` header and TLS SNI kept), so a
DNS answer that changes between check and connect (rebinding) cannot reach inside.

Hosts are read the way the resolver would read them: ``2130706433``, ``0177.0.0.1``,
``0x7f.1`` and ``127.1`` are all 127.0.0.1 to ``inet_aton`` (and to ``getaddrinfo``),
though not to :mod:`ipaddress`; IPv4 embedded in IPv6 (mapped, NAT64, 6to4) is judged by
the IPv4 inside; ``localhost`` and ``*.localhost`` are 127.0.0.1 whatever DNS says.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Final, Protocol
from urllib.parse import urlsplit

import httpx

from mimoq.core.errors import InvalidRequestError, RetryableError


class CallbackPolicy(Protocol):
    """The two callback settings the checks read."""

    @property
    def https_only(self) -> bool: ...

    @property
    def allow_networks(self) -> str: ...


class Policy(Protocol):
    """What the checks are given: ``Settings`` (a protocol, not the class itself, because the
    settings validate their allow-list with ``parse_networks`` from this module)."""

    @property
    def callbacks(self) -> CallbackPolicy: ...


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``(host, port) -> IP address strings``; injectable so tests can play DNS games.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

PARAM: Final = "callback.url"
ALLOW_ENV: Final = "MIMOQ_CALLBACK_ALLOW_NETWORKS"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_LOCALHOST: Final = ipaddress.IPv4Address("127.0.0.1")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED: Final = ipaddress.IPv4Network("100.64.0.0/10")
_THIS_NETWORK: Final = ipaddress.IPv4Network("0.0.0.0/8")
_UNIQUE_LOCAL: Final = ipaddress.IPv6Network("fc00::/7")
_PRIVATE_V4: Final = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
#: Only digits, dots and hex: the candidates for inet_aton's forms. The guard matters:
#: glibc's inet_aton accepts "1.2.3.4 anything" (it stops at the first space).
_NUMERIC_HOST: Final = re.compile(r"[0-9a-fx.]+")
_LABEL: Final = r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_HOSTNAME: Final = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


class AddressKind(StrEnum):
    """Why an address is not public (the refusal message names it)."""

    loopback = "loopback"
    private = "private"
    shared = "shared"  # 100.64.0.0/10, carrier-grade NAT
    link_local = "link-local"  # includes 169.254.169.254, the cloud metadata service
    unspecified = "unspecified"
    multicast = "multicast"
    unique_local = "unique-local"
    site_local = "site-local"
    reserved = "reserved"
    special = "special-purpose"  # documentation, benchmarking, Teredo, ...


class CallbackUrlRefusedError(InvalidRequestError):
    """The callback URL is malformed or reaches an address that is not allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param=PARAM)


class CallbackDnsError(RetryableError):
    """The callback host did not resolve (now); a later attempt may succeed."""


@dataclass(frozen=True)
class ResolvedTarget:
    """A checked callback destination: connect to ``address``, present as ``host``."""

    scheme: str
    host: str  # ASCII (IDNA) host as written in the URL, without IPv6 brackets
    port: int
    address: Address
    connect_url: str  # the URL with its host replaced by ``address``: never log it
    host_header: str
    sni_hostname: str | None  # https to a name: the name TLS verifies, not the IP

    @property
    def origin(self) -> str:
        """``scheme://host:port``: the only part of a callback URL fit for logs."""
        return f"{self.scheme}://{_bracket(self.host)}:{self.port}"

    def extensions(self) -> dict[str, str]:
        """httpx request extensions that keep TLS checking the name, not the pinned IP."""
        return {"sni_hostname": self.sni_hostname} if self.sni_hostname else {}


def parse_networks(value: str | Sequence[str]) -> tuple[Network, ...]:
    """CIDRs from ``"127.0.0.0/8, ::1/128"`` (or a sequence); ValueError if one is bad."""
    items = value.split(",") if isinstance(value, str) else list(value)
    networks: list[Network] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network like 10.0.0.0/8 or ::1/128") from None
    return tuple(networks)


@lru_cache(maxsize=8)
def _allowed(value: str) -> tuple[Network, ...]:
    return parse_networks(value)


def literal_address(host: str) -> Address | None:
    """The address a host names literally (every inet_aton form, IPv6), or None for a name."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None  # e.g. "cafe.be": hex-looking, but a name
    return None


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 IPv6 address."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def classify(address: Address) -> AddressKind | None:
    """The kind of non-public address this is, or None when it is public."""
    inner = embedded_ipv4(address)
    if inner is not None:
        # The IPv4 inside decides: a NAT64 or 6to4 gateway forwards to it (and ipaddress
        # files all of 64:ff9b::/96 under "reserved", public destinations included).
        return classify(inner)
    if address.is_unspecified or address in _THIS_NETWORK:
        return AddressKind.unspecified
    if address.is_loopback:
        return AddressKind.loopback
    if address.is_link_local:
        return AddressKind.link_local
    if address.is_multicast:
        return AddressKind.multicast
    if isinstance(address, ipaddress.IPv4Address):
        if address in _SHARED:
            return AddressKind.shared
        if any(address in net for net in _PRIVATE_V4):
            return AddressKind.private
    else:
        if address in _UNIQUE_LOCAL:
            return AddressKind.unique_local
        if address.is_site_local:
            return AddressKind.site_local
    if address.is_reserved:
        return AddressKind.reserved
    # ipaddress's is_global knows the IANA special-purpose registries; the checks above only
    # exist to give the common cases their own name in the message.
    if not address.is_global:
        return AddressKind.special
    return None


def _is_allowed(address: Address, allow: Sequence[Network]) -> bool:
    inner = embedded_ipv4(address)
    return any(address in net or (inner is not None and inner in net) for net in allow)


def _suggestion(address: Address) -> str:
    inner = embedded_ipv4(address)
    target = inner if inner is not None and classify(inner) is not None else address
    if isinstance(target, ipaddress.IPv4Address) and target.is_loopback:
        return "127.0.0.0/8"
    return f"{target}/{target.max_prefixlen}"


def _refusal(host: str, address: Address, kind: AddressKind, *, literal: bool) -> str:
    where = (
        f"points to {address}"
        if literal and str(address) == host
        else f"host {host!r} {'means' if literal else 'resolves to'} {address}"
    )
    return (
        f"{PARAM} {where} ({kind}): callbacks to non-public addresses are refused; "
        f"for a trusted receiver allow it with {ALLOW_ENV}={_suggestion(address)}"
    )


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def redact_url(url: str) -> str:
    """``scheme://host:port`` of a URL: no userinfo, path or query (they may hold tokens)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "<invalid url>"
    if not host:
        return "<invalid url>"
    scheme = parts.scheme.lower()
    return f"{scheme}://{_bracket(host)}:{port or _DEFAULT_PORTS.get(scheme, 0)}"


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the event loop's getaddrinfo (in its thread pool; never blocks the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    userinfo: str  # as written, with its "@", or ""
    host: str  # ASCII (IDNA) and lower case, as written otherwise: may end with a dot
    name: str  # the host without a trailing dot
    port: int
    explicit_port: bool
    target: str  # path and query
    literal: Address | None


def _parse(url: str, settings: Policy) -> _Parsed:
    # urlsplit, not httpx.URL: httpx refuses some spellings the resolver accepts (0177.0.0.1),
    # and those must be judged by their address, not turned away as "invalid".
    try:
        parts = urlsplit(url)
        host, explicit = parts.hostname, parts.port
        host = host.encode("idna").decode("ascii") if host else ""
    except (ValueError, UnicodeError):
        raise CallbackUrlRefusedError(f"{PARAM} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise CallbackUrlRefusedError(f"{PARAM} must be an http:// or https:// URL")
    if settings.callbacks.https_only and scheme != "https":
        raise CallbackUrlRefusedError(f"{PARAM} must be https:// (MIMOQ_CALLBACK_HTTPS_ONLY is on)")
    port = explicit if explicit is not None else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise CallbackUrlRefusedError(f"{PARAM} has port {port}: use 1-65535")
    name = host[:-1] if host.endswith(".") else host
    literal = literal_address(name)
    if literal is None and not _HOSTNAME.fullmatch(name):
        raise CallbackUrlRefusedError(f"{PARAM} has no valid host name")
    if isinstance(literal, ipaddress.IPv6Address) and literal.scope_id:
        raise CallbackUrlRefusedError(f"{PARAM} may not use a scoped IPv6 address (%zone)")
    userinfo = parts.netloc.rpartition("@")[0]
    return _Parsed(
        scheme=scheme,
        userinfo=userinfo + "@" if "@" in parts.netloc else "",
        host=host,
        name=name,
        port=port,
        explicit_port=explicit is not None and explicit != _DEFAULT_PORTS[scheme],
        target=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        literal=literal,
    )


def _check(parsed: _Parsed, addresses: Sequence[Address], settings: Policy) -> Address:
    """The address to connect to, after every resolved address passed; refuses otherwise."""
    allow = _allowed(settings.callbacks.allow_networks)
    for address in addresses:
        kind = classify(address)
        if kind is not None and not _is_allowed(address, allow):
            raise CallbackUrlRefusedError(
                _refusal(parsed.name, address, kind, literal=parsed.literal is not None)
            )
    first = addresses[0]
    if isinstance(first, ipaddress.IPv6Address) and first.ipv4_mapped is not None:
        return first.ipv4_mapped  # over IPv4: the same host, without dual-stack surprises
    return first


async def _addresses(parsed: _Parsed, resolver: Resolver) -> list[Address]:
    if parsed.literal is not None:
        return [parsed.literal]
    if parsed.name == "localhost" or parsed.name.endswith(".localhost"):
        return [_LOCALHOST]  # RFC 6761: loopback by definition, so DNS is not asked
    try:
        answers = await resolver(parsed.host, parsed.port)
        addresses = [ipaddress.ip_address(a) for a in answers]
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        message = f"callback host {parsed.name!r} did not resolve ({reason})"
        raise CallbackDnsError(message) from None
    if not addresses:
        raise CallbackDnsError(f"callback host {parsed.name!r} has no addresses")
    return addresses


async def resolve_checked(
    url: str, settings: Policy, *, resolver: Resolver | None = None
) -> ResolvedTarget:
    """Resolve a callback URL once, check every address, and pin the request to one.

    Raises CallbackUrlRefusedError (an InvalidRequestError: final) when the URL or any of
    its addresses is refused, CallbackDnsError (retryable) when the host does not resolve.
    """
    parsed = _parse(url, settings)
    address = _check(parsed, await _addresses(parsed, resolver or system_resolver), settings)
    port = f":{parsed.port}" if parsed.explicit_port else ""
    connect_url = (
        f"{parsed.scheme}://{parsed.userinfo}{_bracket(str(address))}{port}{parsed.target}"
    )
    try:
        httpx.URL(connect_url)  # what httpx cannot send is refused here, not at the socket
    except httpx.InvalidURL:
        raise CallbackUrlRefusedError(f"{PARAM} is not a valid URL") from None
    return ResolvedTarget(
        scheme=parsed.scheme,
        host=parsed.host,
        port=parsed.port,
        address=address,
        connect_url=connect_url,
        host_header=_bracket(parsed.host) + port,
        sni_hostname=parsed.name if parsed.scheme == "https" and parsed.literal is None else None,
    )


async def check_callback_url(
    url: str, settings: Policy, *, resolver: Resolver | None = None
) -> None:
    """The enqueue-time check: raises InvalidRequestError(param="callback.url") with the fix.

    A host that does not resolve *now* is accepted: the receiver's DNS may not exist yet
    when a long job is submitted, and every delivery attempt checks again anyway.
    """
    try:
        await resolve_checked(url, settings, resolver=resolver)
    except CallbackDnsError:
        return
