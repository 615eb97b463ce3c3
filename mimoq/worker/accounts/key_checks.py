"""``mimoq doctor``'s checks: is each configured key usable, and if not, why and what to do.

Per key, in order, stopping at the first failure: the configuration (prefix and host family
agree, ``tp-`` keys have a region), the connection (DNS, TCP, TLS) with ``GET /v1/models``,
the models it lists (TTS and ASR), and with ``probe`` one tiny TTS call through chat
completions. Every failure is mapped to its likely cause and fix. Keys are shown by
fingerprint only; upstream messages are scrubbed of the key before they are kept.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Final

import httpx

from mimoq.core import dialect_constants as dc
from mimoq.core.dialect import auth_headers, describe_error_body
from mimoq.core.keypool import PoolAccount, PoolKey, family_of_url

#: The probe: the cheapest call that exercises chat completions with an audio model.
PROBE_BODY: Final = {
    "model": dc.TTS_MODEL,
    "messages": [{"role": "assistant", "content": "ok"}],
    "audio": {"format": "wav", "voice": dc.DEFAULT_VOICE},
}
HOSTS: Final = (
    "sk- keys belong to https://api.xiaomimimo.com/v1, tp- keys to "
    "https://token-plan-<region>.xiaomimimo.com/v1"
)


class CheckOutcome(StrEnum):
    OK = "ok"
    WARN = "warn"  # usable, but something deserves a look (quota exhausted, a model missing)
    FAIL = "fail"  # the key cannot be used as configured


@dataclass(frozen=True)
class Check:
    """One check of one key: what was checked, how it went, and if not well, why and how to fix."""

    check: str
    outcome: CheckOutcome
    detail: str
    cause: str | None = None
    fix: str | None = None


@dataclass
class KeyReport:
    """Everything doctor found out about one key (never the key itself)."""

    source: str
    fingerprint: str
    account: str
    family: str
    base_url: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return all(c.outcome is not CheckOutcome.FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["usable"] = self.usable
        return out


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "[redacted]") if secret else text


def _status_check(name: str, status: int, body: bytes, key: PoolKey) -> Check:
    """A non-2xx answer mapped to its likely cause and fix."""
    detail = f"HTTP {status}: {_scrub(describe_error_body(body), key.secret)}"[:300]
    if status == 401:
        other = "pay-as-you-go" if key.family == "token_plan" else "Token Plan"
        return Check(
            name,
            CheckOutcome.FAIL,
            detail,
            cause=f"the key was refused: revoked or mistyped, or a {other} key's host "
            "(each host family takes only its own keys)",
            fix=f"check the key in MiMo's console and the host: {HOSTS}",
        )
    if status == 402:
        return Check(
            name,
            CheckOutcome.FAIL,
            detail,
            cause="the account is out of funds",
            fix="top up the account (or use another account's key)",
        )
    if status == 403:
        return Check(
            name,
            CheckOutcome.FAIL,
            detail,
            cause="the key may not use this resource",
            fix="check the key's permissions and plan in MiMo's console",
        )
    if status == 404:
        return Check(
            name,
            CheckOutcome.FAIL,
            detail,
            cause="no such endpoint here: the wrong host family or a base URL without /v1",
            fix=f"drop the base URL or fix it: {HOSTS}",
        )
    if status == 429:
        return Check(
            name,
            CheckOutcome.WARN,
            detail,
            cause="the account's quota is used up now",
            fix="wait for the quota window, or spread work over more accounts",
        )
    if status >= 500:
        return Check(
            name,
            CheckOutcome.WARN,
            detail,
            cause="MiMo (or a proxy) is failing",
            fix="try again later; mimoq workers retry these",
        )
    return Check(
        name,
        CheckOutcome.FAIL,
        detail,
        cause="an unexpected answer",
        fix="check the base URL points at MiMo's API",
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything behind it (httpx wraps the OS error it got)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        if isinstance(current, BaseExceptionGroup):
            todo += list(current.exceptions)


def _network_check(exc: httpx.HTTPError, url: str) -> Check:
    """A failure before any HTTP answer: DNS, refused, TLS or a timeout."""
    text = f"{type(exc).__name__}: {exc}"
    chain = list(_chain(exc))
    lowered = " ".join(f"{type(e).__name__}: {e}" for e in chain).lower()
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        lowered += " refused"
    if any(isinstance(e, socket.gaierror) for e in chain):
        lowered += " getaddrinfo"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        lowered += " ssl"
    if isinstance(exc, httpx.TimeoutException):
        return Check(
            "connect",
            CheckOutcome.FAIL,
            text,
            cause=f"no answer from {url} in time",
            fix="check the network path (firewall, proxy) to the host",
        )
    if (
        "name or service not known" in lowered
        or "nodename" in lowered
        or ("name resolution" in lowered or "getaddrinfo" in lowered)
    ):
        return Check(
            "connect",
            CheckOutcome.FAIL,
            text,
            cause="DNS: the host name does not resolve",
            fix="check the host name and this machine's DNS",
        )
    if "ssl" in lowered or "certificate" in lowered or "tls" in lowered:
        return Check(
            "connect",
            CheckOutcome.FAIL,
            text,
            cause="TLS: the secure connection failed",
            fix="check the system's CA certificates, clock and any TLS-inspecting proxy",
        )
    if "refused" in lowered:
        return Check(
            "connect",
            CheckOutcome.FAIL,
            text,
            cause=f"nothing accepts connections at {url}",
            fix="check the base URL's host and port, and that the service is up",
        )
    return Check(
        "connect",
        CheckOutcome.FAIL,
        text,
        cause="the connection failed",
        fix="check the network path to the host",
    )


def _models_check(body: bytes) -> Check:
    try:
        data = json.loads(body).get("data")
        ids = {m.get("id") for m in data if isinstance(m, dict)}
    except (ValueError, AttributeError, TypeError):
        return Check(
            "models",
            CheckOutcome.WARN,
            "GET /v1/models answered 200 with no model list",
            cause="an unexpected answer",
            fix="check the base URL points at MiMo",
        )
    missing = [m for m in (dc.TTS_MODEL, dc.ASR_MODEL) if m not in ids]
    if missing:
        return Check(
            "models",
            CheckOutcome.WARN,
            f"not listed: {', '.join(missing)}",
            cause="the key's plan may not include these models",
            fix="check the plan in MiMo's console",
        )
    return Check("models", CheckOutcome.OK, f"{dc.TTS_MODEL} and {dc.ASR_MODEL} listed")


async def check_api_key(
    http: httpx.AsyncClient, key: PoolKey, account: str, *, probe: bool
) -> KeyReport:
    """Run the checks of one key, stopping at the first failure."""
    report = KeyReport(key.source, key.fingerprint, account, key.family, key.base_url)
    if key.problem or key.base_url is None:
        report.checks.append(
            Check(
                "config",
                CheckOutcome.FAIL,
                key.problem or "no base URL",
                cause="the configuration cannot work",
                fix="set the variable the message names",
            )
        )
        return report
    host_family = family_of_url(key.base_url)
    where = "MiMo's" if host_family else "a custom host's (simulator or proxy)"
    report.checks.append(
        Check("config", CheckOutcome.OK, f"{key.family} key, {where} {key.base_url}")
    )
    base = key.base_url.rstrip("/")
    headers = auth_headers(key.secret or None)
    try:
        answer = await http.get(f"{base}/models", headers=headers)
    except httpx.HTTPError as exc:
        report.checks.append(_network_check(exc, base))
        return report
    report.checks.append(Check("connect", CheckOutcome.OK, f"{base} answered"))
    if answer.status_code != 200:
        report.checks.append(_status_check("models", answer.status_code, answer.content, key))
        return report
    report.checks.append(_models_check(answer.content))
    if probe:
        try:
            answer = await http.post(f"{base}/chat/completions", headers=headers, json=PROBE_BODY)
        except httpx.HTTPError as exc:
            report.checks.append(_network_check(exc, base))
            return report
        if answer.status_code == 200:
            report.checks.append(Check("probe", CheckOutcome.OK, "a one-word TTS call succeeded"))
        else:
            report.checks.append(_status_check("probe", answer.status_code, answer.content, key))
    return report


async def diagnose(
    http: httpx.AsyncClient, accounts: Sequence[PoolAccount], *, probe: bool
) -> list[KeyReport]:
    """Check every key of every account, one after another (a doctor is not in a hurry)."""
    return [
        await check_api_key(http, key, account.name, probe=probe)
        for account in accounts
        for key in account.keys
    ]
