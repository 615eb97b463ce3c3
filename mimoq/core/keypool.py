"""PURE: the configured MiMo keys, each with its host, grouped into accounts.

Keys come from ``MIMO_API_KEY``, ``MIMO_API_KEYS`` (space- or comma-separated) and every
``MIMO_<N>_API_KEY`` preset. Each key's host follows from its prefix as for the single key
(``sk-`` → pay-as-you-go, ``tp-`` → the Token Plan cluster of its region) unless a base URL
is configured. Keys are grouped into accounts — the unit MiMo counts quota and balance in —
by ``MIMO_<N>_ACCOUNT`` (and ``MIMOQ_LIMIT_ACCOUNT`` for the unnumbered keys), else one
account per key, named by the key's fingerprint. Nothing here ever shows a key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import urlsplit

from mimoq.core.errors import ConfigurationError
from mimoq.core.settings import PAYG_BASE_URL, TOKEN_PLAN_BASE_URL, Settings

Family = Literal["payg", "token_plan"]
#: The account of a fleet with no key at all (a simulator that needs none).
ANONYMOUS: Final = "anonymous"
PAYG_HOST: Final = "api.xiaomimimo.com"


def fingerprint(secret: str | None) -> str:
    """A stable, non-reversible id of a key: the first 16 hex of its SHA-256.

    The same formula the limiter has always used to name a single key's account, so a
    fleet upgraded to the key pool keeps its limiter state.
    """
    if not secret:
        return ANONYMOUS
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def family_of_key(secret: str) -> Family:
    """Which host family a key belongs to, from its prefix (``tp-``: Token Plan)."""
    return "token_plan" if secret.startswith("tp-") else "payg"


def family_of_url(url: str) -> Family | None:
    """The host family a base URL belongs to; None for any other host (a simulator, a proxy)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == PAYG_HOST:
        return "payg"
    if host.startswith("token-plan-") and host.endswith(".xiaomimimo.com"):
        return "token_plan"
    return None


@dataclass(frozen=True)
class PoolKey:
    """One configured key. ``problem`` says why it cannot work (then ``base_url`` may be None)."""

    source: str  # the variable it came from, e.g. MIMO_2_API_KEY
    secret: str = field(repr=False)
    fingerprint: str
    family: Family
    region: str | None
    base_url: str | None
    base_url_explicit: bool
    problem: str | None = None


@dataclass(frozen=True)
class PoolAccount:
    """An account: its name (fingerprint of its only key, or the configured name) and keys."""

    name: str
    keys: tuple[PoolKey, ...]


def _key(
    source: str,
    secret: str,
    *,
    region: str | None,
    base_url: str | None,
    region_var: str,
) -> PoolKey:
    family = family_of_key(secret)
    problem = None
    url = base_url
    if url is None:
        if family == "token_plan":
            if region is None:
                problem = (
                    f"{source} is a Token Plan key (tp-...), whose cluster cannot be guessed: "
                    f"set {region_var} to cn, sgp or ams"
                )
            else:
                url = TOKEN_PLAN_BASE_URL.format(region=region)
        else:
            url = PAYG_BASE_URL
    elif (host_family := family_of_url(url)) is not None and host_family != family:
        kind = "a Token Plan key (tp-...)" if family == "token_plan" else "a pay-as-you-go key"
        problem = (
            f"{source} is {kind} but its base URL {url} is the other host family's: MiMo will "
            "answer 401; drop the base URL (the host follows from the key) or fix it"
        )
    return PoolKey(
        source=source,
        secret=secret,
        fingerprint=fingerprint(secret),
        family=family,
        region=region,
        base_url=url,
        base_url_explicit=base_url is not None,
        problem=problem,
    )


def pool_keys(settings: Settings) -> list[tuple[PoolKey, str | None]]:
    """Every distinct configured key, in order, with the account name configured for it."""
    found: list[tuple[PoolKey, str | None]] = []
    seen: set[str] = set()

    def add(key: PoolKey, account: str | None) -> None:
        if key.secret not in seen:
            seen.add(key.secret)
            found.append((key, account))

    region, base = settings.mimo.region, settings.mimo.base_url
    if settings.mimo.key is not None:
        secret = settings.mimo.key.get_secret_value().strip()
        add(
            _key("MIMO_API_KEY", secret, region=region, base_url=base, region_var="MIMO_REGION"),
            settings.limiter.account,
        )
    if settings.mimo.keys is not None:
        text = settings.mimo.keys.get_secret_value().replace(",", " ")
        for i, secret in enumerate(text.split(), 1):
            source = f"MIMO_API_KEYS[{i}]"
            add(
                _key(source, secret, region=region, base_url=base, region_var="MIMO_REGION"),
                settings.limiter.account,
            )
    for n, preset in settings.mimo.numbered_keys.items():
        key = _key(
            f"MIMO_{n}_API_KEY",
            preset.api_key.get_secret_value(),
            region=preset.region or region,
            base_url=preset.base_url or base,
            region_var=f"MIMO_{n}_REGION",
        )
        add(key, preset.account)
    return found


def key_pool(settings: Settings) -> list[PoolAccount]:
    """The configured keys grouped into accounts, in the order the accounts first appear."""
    accounts: dict[str, list[PoolKey]] = {}
    for key, account in pool_keys(settings):
        accounts.setdefault(account or key.fingerprint, []).append(key)
    return [PoolAccount(name=name, keys=tuple(keys)) for name, keys in accounts.items()]


def has_key(settings: Settings) -> bool:
    """True when at least one MiMo key is configured, from any of the variables."""
    return bool(pool_keys(settings))


def usable_pool(settings: Settings) -> list[PoolAccount]:
    """The pool a worker calls through; raises ``ConfigurationError`` naming a broken key.

    With no key at all: one anonymous account with no key (a simulator needs none).
    """
    accounts = key_pool(settings)
    problems = [k.problem for a in accounts for k in a.keys if k.problem]
    if problems:
        raise ConfigurationError("; ".join(problems))
    if not accounts:
        anonymous = PoolKey(
            source="none",
            secret="",
            fingerprint=ANONYMOUS,
            family="payg",
            region=None,
            base_url=settings.base_url(),
            base_url_explicit=settings.mimo.base_url is not None,
        )
        name = settings.limiter.account or ANONYMOUS
        return [PoolAccount(name=name, keys=(anonymous,))]
    return accounts


def pool_secrets(settings: Settings) -> list[str]:
    """Every configured key, for the log scrubber (never for anything that is shown)."""
    return [key.secret for key, _ in pool_keys(settings)]


def no_key_error() -> ConfigurationError:
    """The one line a command that must call MiMo prints when no key is configured."""
    return ConfigurationError(
        "no MiMo API key",
        fix="set MIMO_API_KEY (or MIMO_API_KEYS, MIMO_<N>_API_KEY); "
        "to try mimoq without one, run `mimoq demo` (it uses the bundled simulator)",
    )
