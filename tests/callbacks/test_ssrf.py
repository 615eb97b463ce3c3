"""SSRF defence: every odd spelling of a private address is refused; public ones pinned."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import pytest

from mimoq.core.errors import InvalidRequestError
from mimoq.core.settings import Settings
from mimoq.core.ssrf import (
    AddressKind,
    CallbackDnsError,
    CallbackUrlRefusedError,
    check_callback_url,
    classify,
    redact_url,
    resolve_checked,
    system_resolver,
)

PUBLIC_V4 = "93.184.215.14"


class FakeDns:
    """An injected resolver: a fixed answer per name, and a log of what was asked."""

    def __init__(self, answers: dict[str, Sequence[str]] | None = None) -> None:
        self.answers = answers or {}
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


DEFAULT = Settings()

# (URL, kind, the address the refusal names). Literal hosts must never reach the resolver.
REFUSED = [
    ("http://2130706433/hook", AddressKind.loopback, "127.0.0.1"),  # decimal
    ("http://0177.0.0.1/", AddressKind.loopback, "127.0.0.1"),  # octal
    ("http://0x7f.1/", AddressKind.loopback, "127.0.0.1"),  # hex, short
    ("http://0x7f000001/", AddressKind.loopback, "127.0.0.1"),  # one hex number
    ("http://127.1/", AddressKind.loopback, "127.0.0.1"),  # short form
    ("http://127.0.0.1./", AddressKind.loopback, "127.0.0.1"),  # trailing dot
    ("http://user:pw@127.0.0.1:8080/", AddressKind.loopback, "127.0.0.1"),  # userinfo
    ("http://169.254.169.254/latest/meta-data/", AddressKind.link_local, "169.254.169.254"),
    ("http://[::1]/", AddressKind.loopback, "::1"),
    ("http://[::ffff:127.0.0.1]/", AddressKind.loopback, "::ffff:7f00:1"),  # IPv4-mapped
    ("http://[::ffff:7f00:1]/", AddressKind.loopback, "::ffff:7f00:1"),
    ("http://[::ffff:169.254.169.254]/", AddressKind.link_local, "::ffff:a9fe:a9fe"),
    ("http://[64:ff9b::a00:1]/", AddressKind.private, "64:ff9b::a00:1"),  # NAT64 of 10.0.0.1
    ("http://[2002:7f00:1::]/", AddressKind.loopback, "2002:7f00:1::"),  # 6to4 of 127.0.0.1
    ("http://[fc00::1]/", AddressKind.unique_local, "fc00::1"),
    ("http://[fd12:3456::1]/", AddressKind.unique_local, "fd12:3456::1"),
    ("http://[fe80::1]/", AddressKind.link_local, "fe80::1"),
    ("http://[fec0::1]/", AddressKind.site_local, "fec0::1"),
    ("http://0.0.0.0/", AddressKind.unspecified, "0.0.0.0"),
    ("http://0/", AddressKind.unspecified, "0.0.0.0"),
    ("http://[::]/", AddressKind.unspecified, "::"),
    ("http://224.0.0.1/", AddressKind.multicast, "224.0.0.1"),
    ("http://[ff02::1]/", AddressKind.multicast, "ff02::1"),
    ("http://240.0.0.1/", AddressKind.reserved, "240.0.0.1"),
    ("http://255.255.255.255/", AddressKind.reserved, "255.255.255.255"),
    ("http://10.1.2.3/", AddressKind.private, "10.1.2.3"),
    ("http://172.16.0.1/", AddressKind.private, "172.16.0.1"),
    ("http://172.31.255.254/", AddressKind.private, "172.31.255.254"),
    ("http://192.168.1.1/", AddressKind.private, "192.168.1.1"),
    ("http://100.64.0.1/", AddressKind.shared, "100.64.0.1"),
    ("http://192.0.2.10/", AddressKind.special, "192.0.2.10"),  # documentation
    ("http://198.18.0.1/", AddressKind.special, "198.18.0.1"),  # benchmarking
    ("http://localhost:8080/", AddressKind.loopback, "127.0.0.1"),
    ("http://LOCALHOST./", AddressKind.loopback, "127.0.0.1"),
    ("http://api.localhost/", AddressKind.loopback, "127.0.0.1"),
]


@pytest.mark.parametrize(("url", "kind", "address"), REFUSED)
async def test_refused_at_enqueue_and_at_delivery(
    url: str, kind: AddressKind, address: str
) -> None:
    dns = FakeDns()
    with pytest.raises(InvalidRequestError) as enqueue:
        await check_callback_url(url, DEFAULT, resolver=dns)
    assert enqueue.value.param == "callback.url"
    assert f"{address} ({kind})" in enqueue.value.message
    assert "MIMOQ_CALLBACK_ALLOW_NETWORKS=" in enqueue.value.message
    with pytest.raises(CallbackUrlRefusedError):
        await resolve_checked(url, DEFAULT, resolver=dns)
    assert dns.asked == []  # literals and localhost are judged without asking DNS


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("127.0.0.1", AddressKind.loopback),
        ("10.0.0.5", AddressKind.private),
        ("169.254.169.254", AddressKind.link_local),
        ("::1", AddressKind.loopback),
        ("::ffff:10.0.0.5", AddressKind.private),
        ("fd00::5", AddressKind.unique_local),
        ("fe80::1%2", AddressKind.link_local),
    ],
)
async def test_a_name_resolving_to_a_private_address_is_refused(
    answer: str, kind: AddressKind
) -> None:
    dns = FakeDns({"hooks.example": [answer]})
    with pytest.raises(InvalidRequestError, match=rf"'hooks.example' resolves to .* \({kind}\)"):
        await check_callback_url("https://hooks.example/cb", DEFAULT, resolver=dns)
    assert dns.asked == [("hooks.example", 443)]


async def test_one_private_address_among_public_ones_refuses_the_host() -> None:
    dns = FakeDns({"mixed.example": [PUBLIC_V4, "10.0.0.1"]})
    with pytest.raises(CallbackUrlRefusedError, match=r"10\.0\.0\.1"):
        await resolve_checked("http://mixed.example/", DEFAULT, resolver=dns)


async def test_the_refusal_names_the_fix() -> None:
    with pytest.raises(InvalidRequestError) as info:
        await check_callback_url("http://localhost:9000/cb", DEFAULT)
    message = info.value.message
    assert "callback.url" in message
    assert "127.0.0.1 (loopback)" in message
    assert "MIMOQ_CALLBACK_ALLOW_NETWORKS=127.0.0.0/8" in message


@pytest.mark.parametrize(
    ("url", "connect_to"),
    [
        ("http://8.8.8.8/", "8.8.8.8"),
        ("http://134744072/", "8.8.8.8"),  # decimal spelling of a public address
        ("http://172.32.0.1/", "172.32.0.1"),  # just outside 172.16/12
        ("http://100.128.0.1/", "100.128.0.1"),  # just outside 100.64/10
        ("http://[2001:4860:4860::8888]/", "2001:4860:4860::8888"),
        ("http://[::ffff:8.8.8.8]/", "8.8.8.8"),  # mapped: connect over IPv4
        ("http://[64:ff9b::808:808]/", "64:ff9b::808:808"),  # NAT64 of a public address
        ("https://hooks.example/", PUBLIC_V4),
    ],
)
async def test_public_addresses_pass(url: str, connect_to: str) -> None:
    dns = FakeDns({"hooks.example": [PUBLIC_V4]})
    target = await resolve_checked(url, DEFAULT, resolver=dns)
    assert target.address == ipaddress.ip_address(connect_to)
    await check_callback_url(url, DEFAULT, resolver=dns)


async def test_the_request_is_pinned_to_the_checked_address() -> None:
    dns = FakeDns({"hooks.example": [PUBLIC_V4, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})
    url = "https://user:pw@Hooks.Example:8443/p/a?token=s3cret#frag"
    target = await resolve_checked(url, DEFAULT, resolver=dns)
    assert dns.asked == [("hooks.example", 8443)]  # asked once, and the first answer is used
    assert target.connect_url == f"https://user:pw@{PUBLIC_V4}:8443/p/a?token=s3cret"
    assert target.host_header == "hooks.example:8443"
    assert target.sni_hostname == "hooks.example"
    assert target.extensions() == {"sni_hostname": "hooks.example"}
    assert target.origin == "https://hooks.example:8443"


async def test_ipv6_pinning_brackets_the_address_and_default_ports_stay_implicit() -> None:
    dns = FakeDns({"v6.example": ["2001:4860:4860::8888"]})
    target = await resolve_checked("http://v6.example/cb", DEFAULT, resolver=dns)
    assert target.connect_url == "http://[2001:4860:4860::8888]/cb"
    assert target.host_header == "v6.example"
    assert target.sni_hostname is None  # plain http: no TLS
    assert target.extensions() == {}


async def test_international_names_are_resolved_in_their_ascii_form() -> None:
    dns = FakeDns({"xn--mnchen-3ya.example": [PUBLIC_V4]})
    target = await resolve_checked("https://münchen.example/", DEFAULT, resolver=dns)
    assert target.host_header == "xn--mnchen-3ya.example"
    assert target.sni_hostname == "xn--mnchen-3ya.example"


async def test_https_to_an_ip_literal_sends_no_sni_name() -> None:
    target = await resolve_checked("https://8.8.8.8:443/", DEFAULT)
    assert target.sni_hostname is None
    assert target.connect_url == "https://8.8.8.8/"  # an explicit default port is implicit


async def test_odd_spellings_are_pinned_to_their_real_address() -> None:
    settings = Settings(callbacks={"allow_networks": "127.0.0.0/8"})
    target = await resolve_checked("http://0177.0.0.1:8080/x?y=1", settings)
    assert target.connect_url == "http://127.0.0.1:8080/x?y=1"
    assert target.host_header == "0177.0.0.1:8080"


@pytest.mark.parametrize(
    ("networks", "url", "allowed"),
    [
        ("127.0.0.0/8", "http://127.0.0.1:8080/", True),
        ("127.0.0.0/8", "http://0x7f.1/", True),
        ("127.0.0.0/8", "http://localhost/", True),
        ("127.0.0.0/8", "http://[::ffff:127.0.0.1]/", True),  # the mapped IPv4 is allowed
        ("127.0.0.0/8", "http://[::1]/", False),
        ("127.0.0.0/8", "http://10.0.0.1/", False),
        ("127.0.0.0/8", "http://169.254.169.254/", False),
        ("10.20.0.0/16", "http://10.20.3.4/", True),
        ("10.20.0.0/16", "http://10.21.0.1/", False),
        ("10.20.0.0/16,::1/128", "http://[::1]:9/", True),
        ("fd00::/8", "http://[fd00::7]/", True),
    ],
)
async def test_allow_list(networks: str, url: str, allowed: bool) -> None:
    settings = Settings(callbacks={"allow_networks": networks})
    if allowed:
        await check_callback_url(url, settings)
        await resolve_checked(url, settings)
    else:
        with pytest.raises(CallbackUrlRefusedError):
            await check_callback_url(url, settings)


async def test_https_only_refuses_http() -> None:
    settings = Settings(callbacks={"https_only": True})
    with pytest.raises(InvalidRequestError, match="must be https://") as info:
        await check_callback_url("http://8.8.8.8/", settings)
    assert info.value.param == "callback.url"
    await check_callback_url("https://8.8.8.8/", settings)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://8.8.8.8/",
        "not a url",
        "http:///path-only",
        "http://exa mple.com/",
        "http://host:99999/",
        "http://[fe80::1%25eth0]/",
        "http://bad_host!.example/",
        "http://1.2.3.4 extra/",
    ],
)
async def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(CallbackUrlRefusedError) as info:
        await check_callback_url(url, DEFAULT, resolver=FakeDns())
    assert info.value.param == "callback.url"


async def test_a_host_that_does_not_resolve_passes_enqueue_but_not_delivery() -> None:
    dns = FakeDns()
    await check_callback_url("https://not-yet.example/cb", DEFAULT, resolver=dns)
    with pytest.raises(CallbackDnsError, match=r"not-yet\.example"):
        await resolve_checked("https://not-yet.example/cb", DEFAULT, resolver=dns)


async def test_dns_rebinding_public_at_enqueue_then_loopback_at_delivery_is_refused() -> None:
    answers = iter([[PUBLIC_V4], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> Sequence[str]:
        return next(answers)

    await check_callback_url("http://rebind.example/cb", DEFAULT, resolver=rebinding)
    with pytest.raises(CallbackUrlRefusedError, match=r"127\.0\.0\.1 \(loopback\)"):
        await resolve_checked("http://rebind.example/cb", DEFAULT, resolver=rebinding)


async def test_system_resolver_uses_getaddrinfo() -> None:
    assert await system_resolver("127.0.0.1", 80) == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://user:pw@hooks.example/p?token=abc", "https://hooks.example:443"),
        ("http://hooks.example:8080/a/b", "http://hooks.example:8080"),
        ("http://[::1]/x", "http://[::1]:80"),
        ("http://[bad", "<invalid url>"),
    ],
)
def test_redact_url_keeps_only_the_origin(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
        ("0.1.2.3", AddressKind.unspecified),
        ("127.255.255.255", AddressKind.loopback),
        ("::ffff:0:0", AddressKind.unspecified),
        ("2001::1", AddressKind.special),  # Teredo
        ("::127.0.0.1", AddressKind.reserved),  # IPv4-compatible (deprecated)
    ],
)
def test_classify(address: str, kind: AddressKind | None) -> None:
    assert classify(ipaddress.ip_address(address)) == kind
