"""Whole-run knobs of the MiMo simulator, from code, the environment (MIMOQ_SIM_*) or CLI flags."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final

from mimoq.core.errors import ConfigurationError
from mimoq.sim.faults import Fault, parse_faults
from mimoq.sim.quota import QuotaAlgorithm, QuotaConfig, SimQuota, TokenAccounting
from mimoq.sim.quota_protocol import QuotaPolicy

ENV_PREFIX: Final = "MIMOQ_SIM_"
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8808  # the port docker-compose and `mimoq sim` use


@dataclass
class SimConfig:
    """How the simulated MiMo behaves for a whole run (per-request faults live in ``faults``).

    Latency of a successful answer = ``latency_ms`` + ``latency_ms_per_char`` * text length
    + (when ``latency_median_ms`` > 0) a lognormal sample with that median and
    ``latency_sigma``, drawn from an RNG seeded with ``seed``.
    """

    latency_ms: float = 0.0
    latency_median_ms: float = 0.0
    latency_sigma: float = 0.0
    latency_ms_per_char: float = 0.0
    seed: int = 0
    #: Share of valid requests answered with a random status from ``fail_statuses``.
    fail_rate: float = 0.0
    fail_statuses: tuple[int, ...] = (429, 500, 502, 503)
    #: When set, requests must carry it (``Authorization: Bearer`` or ``api-key``) or get 401.
    api_key: str | None = field(default=None, repr=False)
    #: More keys the simulator accepts; each key is an account (see ``mimoq.sim.sim_accounts``).
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    #: The host family played: ``payg`` answers tp- keys with 401, ``token_plan`` sk- keys.
    family: str | None = None
    #: Give each account (key) its own copy of ``quota`` instead of one shared quota.
    per_key_quota: bool = False
    speech_seconds_per_char: float = 0.06
    min_speech_s: float = 0.3
    #: Sample rate of generated WAV files (``pcm16`` is always 24 kHz, as MiMo documents).
    sample_rate: int = 24_000
    #: Force every TTS answer to carry this many bytes of samples, whatever the text.
    audio_bytes_override: int | None = None
    #: TTS texts longer than this are refused with a 400 (None: no limit, like the docs say).
    max_text_chars: int | None = None
    #: Leave ``usage`` out of answers (the docs say it may be missing).
    omit_usage: bool = False
    #: Put the spoken text in a LIST/INFO/ICMT chunk before ``data`` (ASR reads it back).
    wav_text_chunk: bool = True
    #: Bytes of audio per base64 chunk of a streamed TTS body.
    stream_chunk_bytes: int = 64 * 1024
    #: Faults for the whole run: a request that takes no queued fault (``/_sim/faults``)
    #: gets the first of these that matches; they are never used up (``times`` is ignored).
    faults: tuple[Fault, ...] = ()
    quota: QuotaPolicy | None = None
    #: Send ``Retry-After`` on quota 429s; None defers to the policy's ``send_retry_after``.
    quota_retry_after: bool | None = None

    def __post_init__(self) -> None:
        problems = [
            name
            for name, ok in (
                ("latency_ms", self.latency_ms >= 0),
                ("latency_median_ms", self.latency_median_ms >= 0),
                ("latency_sigma", self.latency_sigma >= 0),
                ("latency_ms_per_char", self.latency_ms_per_char >= 0),
                ("fail_rate", 0.0 <= self.fail_rate <= 1.0),
                (
                    "fail_statuses",
                    bool(self.fail_statuses) and all(400 <= s <= 599 for s in self.fail_statuses),
                ),
                ("speech_seconds_per_char", self.speech_seconds_per_char > 0),
                ("min_speech_s", self.min_speech_s > 0),
                ("sample_rate", 1_000 <= self.sample_rate <= 384_000),
                (
                    "audio_bytes_override",
                    self.audio_bytes_override is None or self.audio_bytes_override >= 0,
                ),
                ("max_text_chars", self.max_text_chars is None or self.max_text_chars > 0),
                ("stream_chunk_bytes", self.stream_chunk_bytes >= 1024),
                ("family", self.family in (None, "payg", "token_plan")),
            )
            if not ok
        ]
        if problems:
            raise ConfigurationError(f"invalid simulator setting(s): {', '.join(problems)}")

    def sample_latency_ms(self, rng: random.Random, text_chars: int = 0) -> float:
        """One answer's latency in ms, for a TTS text of ``text_chars`` (0 for ASR)."""
        ms = self.latency_ms + self.latency_ms_per_char * text_chars
        if self.latency_median_ms > 0:
            ms += rng.lognormvariate(math.log(self.latency_median_ms), self.latency_sigma)
        return ms

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> SimConfig:
        """Build from ``MIMOQ_SIM_<FIELD>`` variables (e.g. ``MIMOQ_SIM_FAIL_RATE=0.1``).

        ``quota`` is a ``SimQuota`` built from ``MIMOQ_SIM_QUOTA`` and
        ``MIMOQ_SIM_QUOTA_<KNOB>`` (see ``quota_from_options``), unless passed as an override.
        """
        env = os.environ if environ is None else environ
        values = _parse_env(env, _PARSERS)
        if "quota" not in overrides:
            values["quota"] = quota_from_options(**_quota_env(env))
        values.update(overrides)
        return cls(**values)


def _parse_env(
    env: Mapping[str, str], parsers: Mapping[str, Callable[[str], Any]], prefix: str = ENV_PREFIX
) -> dict[str, Any]:
    """``prefix + NAME.upper()`` of each parser's name, parsed; blank means unset."""
    values: dict[str, Any] = {}
    for name, parse in parsers.items():
        raw = env.get(prefix + name.upper())
        if raw is None or not raw.strip():
            continue
        try:
            values[name] = parse(raw.strip())
        except ValueError as exc:  # pydantic's ValidationError is a ValueError too
            raise ConfigurationError(f"{prefix}{name.upper()}: {exc}") from None
    return values


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _statuses(raw: str) -> tuple[int, ...]:
    return tuple(int(part) for part in raw.replace(",", " ").split())


def _keys(raw: str) -> tuple[str, ...]:
    return tuple(raw.replace(",", " ").split())


def _optional_int(raw: str) -> int | None:
    return None if raw.lower() in ("none", "null") else int(raw)


# --- the quota (mimoq.sim.quota) from text --------------------------------------------


def _limit(model: str, raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValueError(f"{model}: the limit must be a whole number, got {raw!r}")
    value = int(raw)
    if value < 0:
        raise ValueError(f"{model}: the limit must not be negative")
    return value


def parse_limits(raw: str) -> dict[str, int]:
    """Per-model limits: a JSON object, or ``model=N`` items (comma or space separated).

    A bare ``N`` is stored under ``"*"``: the default of every model not named.
    """
    text = raw.strip()
    if text.startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object of model: limit")
        return {str(m): _limit(str(m), n) for m, n in data.items()}
    limits: dict[str, int] = {}
    for item in text.replace(",", " ").split():
        model, sep, value = item.rpartition("=")
        name = model.strip() if sep else "*"
        if not name or not value.strip().isdigit():
            raise ValueError(f"{item!r} is neither model=N nor N")
        limits[name] = _limit(name, value.strip())
    return limits


def parse_algorithm(raw: str) -> QuotaAlgorithm:
    """``sliding_window`` or ``token_bucket`` (dashes accepted)."""
    return QuotaAlgorithm(raw.strip().lower().replace("-", "_"))


def parse_accounting(raw: str) -> TokenAccounting:
    """``admission`` or ``completion``."""
    return TokenAccounting(raw.strip().lower())


#: The quota's knobs: ``MIMOQ_SIM_QUOTA_<NAME>`` and ``--quota-<name>``.
_QUOTA_PARSERS: Final[dict[str, Callable[[str], Any]]] = {
    "rpm": parse_limits,
    "tpm": parse_limits,
    "window_s": float,
    "algorithm": parse_algorithm,
    "max_concurrency": _optional_int,
    "token_accounting": parse_accounting,
}


def _quota_env(env: Mapping[str, str]) -> dict[str, Any]:
    options = _parse_env(env, _QUOTA_PARSERS, ENV_PREFIX + "QUOTA_")
    options.update(_parse_env(env, {"quota": _bool}))
    if "quota" in options:
        options["enabled"] = options.pop("quota")
    return options


def quota_from_options(
    *,
    enabled: bool | None = None,
    rpm: Mapping[str, int] | None = None,
    tpm: Mapping[str, int] | None = None,
    window_s: float | None = None,
    algorithm: QuotaAlgorithm | None = None,
    max_concurrency: int | None = None,
    token_accounting: TokenAccounting | None = None,
) -> SimQuota | None:
    """The simulator's quota policy, or None for none.

    ``enabled`` True turns on MiMo's official quota (100 requests per minute per model,
    10K tokens per minute for ASR); giving any other option turns it on too, changing that
    part. ``rpm``/``tpm`` are merged over the official limits: ``"*"`` sets the request
    default of every model, and a token limit of 0 removes a model's token limit.
    """
    knobs = (rpm, tpm, window_s, algorithm, max_concurrency, token_accounting)
    if enabled is False or (enabled is None and all(k is None for k in knobs)):
        return None
    base = QuotaConfig()
    requests = dict(rpm or {})
    if any(n <= 0 for n in requests.values()):
        raise ConfigurationError("simulator quota: request limits must be positive")
    tokens = {**base.tpm, **(tpm or {})}
    if "*" in tokens:
        raise ConfigurationError("simulator quota: name the model of a token limit (model=N)")
    try:
        config = QuotaConfig(
            window_s=base.window_s if window_s is None else window_s,
            default_rpm=requests.pop("*", base.default_rpm),
            rpm=requests,
            tpm={m: n for m, n in tokens.items() if n > 0},
            algorithm=algorithm or base.algorithm,
            max_concurrency=max_concurrency,
            token_accounting=token_accounting or base.token_accounting,
        )
    except ValueError as exc:
        raise ConfigurationError(f"simulator quota: {exc}") from None
    return SimQuota(config)


_PARSERS: Final[dict[str, Callable[[str], Any]]] = {
    "latency_ms": float,
    "latency_median_ms": float,
    "latency_sigma": float,
    "latency_ms_per_char": float,
    "seed": int,
    "fail_rate": float,
    "fail_statuses": _statuses,
    "api_key": str,
    "speech_seconds_per_char": float,
    "min_speech_s": float,
    "sample_rate": int,
    "audio_bytes_override": _optional_int,
    "max_text_chars": _optional_int,
    "omit_usage": _bool,
    "wav_text_chunk": _bool,
    "stream_chunk_bytes": int,
    "quota_retry_after": _bool,
    "faults": parse_faults,
    "api_keys": _keys,
    "family": str,
    "per_key_quota": _bool,
}
# Every field but ``quota`` (see ``_QUOTA_PARSERS``) must be settable from the environment:
# fail at import on drift.
assert set(_PARSERS) | {"quota"} == {f.name for f in fields(SimConfig)}

#: CLI flag -> (field, parser, help). Flags default to None so unset ones keep the env value.
_FLAGS: Final[dict[str, tuple[str, Callable[[str], Any], str]]] = {
    "--latency-ms": ("latency_ms", float, "fixed latency of every answer, ms"),
    "--latency-median-ms": ("latency_median_ms", float, "median of an added lognormal latency, ms"),
    "--latency-sigma": ("latency_sigma", float, "sigma of the lognormal latency"),
    "--latency-ms-per-char": ("latency_ms_per_char", float, "latency added per TTS text char, ms"),
    "--seed": ("seed", int, "seed of the latency and failure RNG"),
    "--fail-rate": ("fail_rate", float, "share of requests failed at random (0..1)"),
    "--fail-statuses": ("fail_statuses", _statuses, "statuses of random failures, e.g. 429,503"),
    "--api-key": ("api_key", str, "require this key (prefer MIMOQ_SIM_API_KEY: argv is visible)"),
    "--seconds-per-char": ("speech_seconds_per_char", float, "seconds of speech per text char"),
    "--sample-rate": ("sample_rate", int, "sample rate of generated WAVs, Hz"),
    "--audio-bytes": ("audio_bytes_override", int, "force every TTS answer to this many bytes"),
    "--max-text-chars": ("max_text_chars", int, "refuse longer TTS texts with a 400"),
    "--api-keys": ("api_keys", _keys, "accept these keys too, one account each (prefer the env)"),
    "--family": ("family", str, "host family played: payg (401 for tp- keys) or token_plan"),
    "--faults": (
        "faults",
        parse_faults,
        'whole-run faults as JSON, e.g. \'[{"kind": "status", '
        '"status": 503, "match": "poison"}]\' (see mimoq.sim.faults)',
    ),
}
_SWITCHES: Final[dict[str, tuple[str, str]]] = {
    "--omit-usage": ("omit_usage", "leave usage out of answers"),
    "--wav-text-chunk": ("wav_text_chunk", "embed the spoken text in generated WAVs"),
    "--quota-retry-after": ("quota_retry_after", "send Retry-After on quota 429s"),
    "--per-key-quota": ("per_key_quota", "a separate quota per account (key)"),
}
#: Quota flag -> (knob of ``quota_from_options``, help); parsers from ``_QUOTA_PARSERS``.
_QUOTA_FLAGS: Final[dict[str, tuple[str, str]]] = {
    "--quota-rpm": (
        "rpm",
        "requests per window: N for every model and/or model=N items, or JSON (default: 100 each)",
    ),
    "--quota-tpm": (
        "tpm",
        "tokens per window as model=N items or JSON; 0 removes a limit "
        "(default: mimo-v2.5-asr=10000)",
    ),
    "--quota-window-s": ("window_s", "length of the quota window, s (default: 60)"),
    "--quota-algorithm": ("algorithm", "sliding_window (default, strict) or token_bucket"),
    "--quota-max-concurrency": (
        "max_concurrency",
        "requests in flight per account (default: no cap)",
    ),
    "--quota-token-accounting": (
        "token_accounting",
        "charge tokens at admission (default) or at completion",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per simulator knob (flags beat MIMOQ_SIM_*); the caller adds host/port."""
    for flag, (dest, parse, help_text) in _FLAGS.items():
        parser.add_argument(
            flag,
            dest=f"sim_{dest}",
            type=parse,
            default=None,
            help=help_text,
            metavar=flag[2:].upper().replace("-", "_"),
        )
    for flag, (dest, help_text) in _SWITCHES.items():
        parser.add_argument(
            flag,
            dest=f"sim_{dest}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=help_text,
        )
    parser.add_argument(
        "--quota",
        dest="sim_quota",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="enforce MiMo's quota (implied by any --quota-* knob; MIMOQ_SIM_QUOTA)",
    )
    for flag, (knob, help_text) in _QUOTA_FLAGS.items():
        parser.add_argument(
            flag,
            dest=f"sim_quota_{knob}",
            type=_QUOTA_PARSERS[knob],
            default=None,
            help=help_text,
            metavar=knob.upper(),
        )


def config_from_args(ns: argparse.Namespace, environ: Mapping[str, str] | None = None) -> SimConfig:
    """The config for parsed ``add_arguments`` flags, on top of the MIMOQ_SIM_* environment."""
    env = os.environ if environ is None else environ
    base = SimConfig.from_env(env, quota=None)
    dests = [dest for dest, _, _ in _FLAGS.values()] + [dest for dest, _ in _SWITCHES.values()]
    given = {d: getattr(ns, f"sim_{d}") for d in dests if getattr(ns, f"sim_{d}", None) is not None}
    # Quota flags beat the quota's environment knob by knob, like every other flag.
    options = _quota_env(env)
    for knob in _QUOTA_PARSERS:
        if (value := getattr(ns, f"sim_quota_{knob}", None)) is not None:
            options[knob] = value
    if (enabled := getattr(ns, "sim_quota", None)) is not None:
        options["enabled"] = enabled
    return replace(base, quota=quota_from_options(**options), **given)
