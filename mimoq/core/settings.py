"""The settings, one model per subsystem, read from the environment once per entrypoint.

Each subsystem (``mimo``, ``storage``, ``retry``, ``worker``, ``ops``, ``callbacks``,
``limiter``, ``http``, ``accounts``, ``audio``, ``usage``) is its own pydantic-settings model
that reads its own variables; ``Settings`` composes them and is what entrypoints build and
pass down. The environment names are the public contract and do not depend on this shape:
the table in docs/configuration.md is checked against these models by a test.

In code a setting is named by its group and field, never by its variable::

    Settings(limiter={"window_s": 10}, worker={"concurrency": 4})
    Settings(limiter=LimiterSettings(window_s=10))  # the same
    settings.updated(limiter={"window_s": 10})  # a copy; the rest as in ``settings``

A group given as a dict (or built as its model) takes the fields not given from the
environment, like ``Settings()``. A keyword that is not a field is an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mimoq.core.errors import ConfigurationError
from mimoq.core.keyenv import NumberedKey, numbered_keys
from mimoq.core.pacing import AUTO, auto_target
from mimoq.core.splitting.split_limits import MAX_LONG_AUDIO_BYTES
from mimoq.core.ssrf import parse_networks
from mimoq.core.tenant_limits import TenantLimits, TenantLimitsError, parse_tenant_limits
from mimoq.core.webhooks import DEFAULT_SCHEDULE_S, decode_secret, parse_schedule

PAYG_BASE_URL = "https://api.xiaomimimo.com/v1"
TOKEN_PLAN_BASE_URL = "https://token-plan-{region}.xiaomimimo.com/v1"  # noqa: S105 (a URL)
Region = Literal["cn", "sgp", "ams"]


class _SettingsModel(BaseSettings):
    """What every settings model shares (a literal config: the pydantic mypy plugin reads
    no other, and it also checks the keywords of ``LimiterSettings(window_s=10)``)."""

    # extra="forbid": a keyword that names no field is an error, not silently dropped (the
    # environment sources read only the fields' own names, so other variables stay ignored).
    # pydantic-settings also reads a field's plain name from the environment
    # (populate_by_name): the prefix turns those into MIMOQ_SETTINGS_FIELD_PORT and the like,
    # so that a `PORT` or `CONCURRENCY` exported for something else configures nothing.
    # Aliases are not prefixed. hide_input_in_errors: an error names the setting, never its
    # value (which may be a secret, also one passed under a name that is not a field).
    model_config = SettingsConfigDict(
        extra="forbid",
        populate_by_name=True,
        frozen=True,
        env_prefix="MIMOQ_SETTINGS_FIELD_",
        hide_input_in_errors=True,
    )


def _blank_is_none(value: object) -> object:
    # `FOO=` in a .env or compose file means "not set", not "set to the empty string".
    return None if isinstance(value, str) and not value.strip() else value


class MimoSettings(_SettingsModel):
    """The MiMo API: keys, host, timeouts."""

    key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MIMO_API_KEY", "XIAOMI_API_KEY"),
    )
    base_url: str | None = Field(default=None, validation_alias="MIMO_BASE_URL")
    region: Region | None = Field(default=None, validation_alias="MIMO_REGION")
    request_timeout_s: float = Field(
        default=120.0,
        gt=0,
        validation_alias="MIMOQ_REQUEST_TIMEOUT_S",
        description="Read timeout of one MiMo call; long TTS takes 20-60 s, so keep it well above.",
    )
    connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias="MIMOQ_CONNECT_TIMEOUT_S",
    )
    keys: SecretStr | None = Field(
        default=None,
        validation_alias="MIMO_API_KEYS",
        description="More keys, space- or comma-separated; each is its own account unless "
        "MIMOQ_LIMIT_ACCOUNT names one for all of them.",
    )
    numbered_keys: dict[str, NumberedKey] = Field(
        # Found by pattern (pydantic-settings reads fixed names only); the alias is the
        # pattern's documented spelling, which no environment variable can have.
        default_factory=lambda: numbered_keys(os.environ),
        validation_alias="MIMO_<N>_API_KEY",
        description="Key presets: MIMO_<N>_API_KEY with optional MIMO_<N>_REGION, "
        "MIMO_<N>_BASE_URL and MIMO_<N>_ACCOUNT (keys sharing an account share its quota).",
    )

    _blank_unset = field_validator("key", "keys", "base_url", mode="before")(_blank_is_none)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _base_url_is_derivable(self) -> MimoSettings:
        self.resolved_base_url()  # fail at start-up, not at the first job
        return self

    def resolved_base_url(self) -> str:
        """The MiMo base URL: explicit configuration wins, else derived from the key prefix."""
        if self.base_url:
            return self.base_url
        key = self.key.get_secret_value() if self.key else ""
        if key.startswith("tp-"):
            if self.region is None:
                raise ConfigurationError(
                    "MIMO_API_KEY is a Token Plan key (tp-...), whose cluster cannot be guessed",
                    fix="set MIMO_REGION to cn, sgp or ams (or MIMO_BASE_URL explicitly)",
                )
            return TOKEN_PLAN_BASE_URL.format(region=self.region)
        return PAYG_BASE_URL


class StorageSettings(_SettingsModel):
    """Where outputs and local inputs live, and how long results are kept."""

    data_dir: Path = Field(default=Path("./mimoq-data"), validation_alias="MIMOQ_DATA_DIR")
    result_ttl_s: int = Field(
        default=7 * 86_400,
        gt=0,
        validation_alias="MIMOQ_RESULT_TTL_S",
    )
    input_roots: str = Field(
        default="",
        validation_alias="MIMOQ_INPUT_ROOTS",
        description="Folders (separated by ':') whose files a job may name as local input; "
        "default: MIMOQ_DATA_DIR. Paths outside, and symlinks leading out, are refused.",
    )
    # --- shared storage (owned by core/storage.py, core/objstore.py, core/remote.py) ---------
    url: str | None = Field(
        default=None,
        validation_alias="MIMOQ_STORAGE_URL",
        description="Where outputs go: file:///path, s3://bucket/prefix, gs://..., az://..., "
        "memory:// (tests). Default: file:// of MIMOQ_DATA_DIR.",
    )
    presign_ttl_s: int | None = Field(
        default=None,
        gt=0,
        le=7 * 86_400,
        validation_alias="MIMOQ_PRESIGN_TTL_S",
        description="When set, results and callbacks carry a presigned https URL of the output "
        "that is valid this long (object stores only).",
    )
    input_max_bytes: int = Field(
        default=MAX_LONG_AUDIO_BYTES,
        gt=0,
        validation_alias="MIMOQ_INPUT_MAX_BYTES",
        description="Largest remote input (object store or https) a worker fetches.",
    )
    part_bytes: int = Field(
        default=5 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        validation_alias="MIMOQ_STORAGE_PART_BYTES",
        description="Part size of streamed multipart uploads (S3's minimum: 5 MiB); a TTS "
        "upload holds about two parts in memory.",
    )

    _blank_unset = field_validator("url", mode="before")(_blank_is_none)

    @field_validator("url")
    @classmethod
    def _known_storage(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in ("file", "s3", "gs", "az", "memory") or not rest:
            # ConfigurationError: pydantic would echo the value, which may carry a token.
            raise ConfigurationError(
                "MIMOQ_STORAGE_URL must be file:///path, s3://bucket[/prefix], "
                "gs://bucket[/prefix], az://container[/prefix] or memory://name"
            )
        return value.rstrip("/")

    def location(self) -> str:
        """The storage URL, defaulting to the data directory as a file:// URL."""
        return self.url or self.data_dir.expanduser().resolve().as_uri()


class RetrySettings(_SettingsModel):
    """How often, and how far apart, a retryable job is tried."""

    max_tries: int = Field(default=8, ge=1, le=100, validation_alias="MIMOQ_MAX_TRIES")
    backoff_base_s: float = Field(default=1.0, gt=0, validation_alias="MIMOQ_BACKOFF_BASE_S")
    backoff_max_s: float = Field(default=300.0, gt=0, validation_alias="MIMOQ_BACKOFF_MAX_S")


class WorkerSettings(_SettingsModel):
    """One worker process: concurrency, timeouts, polling."""

    concurrency: int = Field(
        default=32,
        ge=1,
        le=1000,
        validation_alias="MIMOQ_CONCURRENCY",
        description="Jobs in flight per worker process (Little's law: 100 RPM at 8 s needs ~14).",
    )
    job_timeout_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias="MIMOQ_JOB_TIMEOUT_S",
        description="A job running longer is retried; a killed worker's job re-runs after +15 s.",
    )
    shutdown_grace_s: float = Field(
        default=60.0,
        ge=0,
        validation_alias="MIMOQ_SHUTDOWN_GRACE_S",
        description="On SIGTERM, how long in-flight jobs get to finish before they are re-queued.",
    )
    poll_delay_s: float = Field(
        default=0.2,
        gt=0,
        validation_alias="MIMOQ_POLL_DELAY_S",
        description="How often an idle worker polls the queue (arq's poll_delay).",
    )
    orphan_recovery: bool = Field(
        default=True,
        validation_alias="MIMOQ_ORPHAN_RECOVERY",
        description="Re-queue a dead worker's in-flight jobs as soon as its heartbeat lapses.",
    )
    redis_retry_s: float = Field(
        default=300.0,
        ge=0,
        validation_alias="MIMOQ_REDIS_RETRY_S",
        description="How long workers and mimoq batch wait for a lost Redis before giving up.",
    )


class OpsSettings(_SettingsModel):
    """Operations: the metrics endpoint and heartbeats (worker/metrics.py, worker/heartbeat.py)."""

    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65_535,
        validation_alias="MIMOQ_METRICS_PORT",
        description="Port of `mimoq worker`'s Prometheus endpoint (/metrics, /healthz); 0 turns "
        "it off. Embedded workers (speak/transcribe without REDIS_URL) never serve it.",
    )
    metrics_host: str = Field(
        # Prometheus scrapes from another host or container: listen on every interface.
        default="0.0.0.0",  # noqa: S104
        validation_alias="MIMOQ_METRICS_HOST",
        description="Address the metrics endpoint listens on (127.0.0.1: this host only).",
    )
    heartbeat_interval_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias="MIMOQ_HEARTBEAT_INTERVAL_S",
        description="How often each worker writes its heartbeat record; it expires after 3.",
    )


class CallbackSettings(_SettingsModel):
    """Callback delivery (worker/callback_delivery.py): signing, schedule, limits, SSRF policy."""

    secret: SecretStr | None = Field(default=None, validation_alias="MIMOQ_WEBHOOK_SECRET")
    timeout_s: float = Field(
        default=15.0,
        gt=0,
        validation_alias="MIMOQ_CALLBACK_TIMEOUT_S",
        description="Deadline of one delivery attempt (DNS, connect, send, response).",
    )
    inline: bool = Field(
        default=True,
        validation_alias="MIMOQ_CALLBACK_INLINE",
        description=(
            "The worker that finished a job makes its callback's first attempt itself (its "
            "delivery job waits as a backstop); false: every attempt is a delivery job."
        ),
    )
    schedule_s: Annotated[tuple[float, ...], NoDecode] = Field(
        default=DEFAULT_SCHEDULE_S,
        validation_alias="MIMOQ_CALLBACK_SCHEDULE_S",
        description="Wait before each delivery attempt, in seconds (Svix-like: about a day).",
    )
    jitter: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        validation_alias="MIMOQ_CALLBACK_JITTER",
        description="Retry waits vary by +/- this share, so receivers aren't retried in lockstep.",
    )
    retry_after_max_s: float = Field(
        default=3600.0,
        ge=0,
        le=86_400,
        validation_alias="MIMOQ_CALLBACK_RETRY_AFTER_MAX_S",
        description="A receiver's Retry-After is honoured up to this many seconds.",
    )
    max_response_bytes: int = Field(
        default=65_536,
        ge=0,
        validation_alias="MIMOQ_CALLBACK_MAX_RESPONSE_BYTES",
        description="At most this much of a receiver's answer is read, then the connection closed.",
    )
    allow_networks: str = Field(
        default="",
        validation_alias="MIMOQ_CALLBACK_ALLOW_NETWORKS",
        description="Comma-separated CIDRs that callbacks may reach although not public.",
    )
    https_only: bool = Field(
        default=False,
        validation_alias="MIMOQ_CALLBACK_HTTPS_ONLY",
    )
    dead_letter_ttl_s: int = Field(
        default=30 * 86_400,
        gt=0,
        validation_alias="MIMOQ_DEAD_LETTER_TTL_S",
        description="How long a dead letter is kept (from when it died) for list and replay.",
    )

    _blank_unset = field_validator("secret", mode="before")(_blank_is_none)

    @property
    def inline_first(self) -> bool:
        """Whether a finishing worker makes the first attempt itself: ``inline``, and the
        schedule's first wait is none (a first wait is kept by the delivery job)."""
        return self.inline and self.schedule_s[0] <= 0

    @field_validator("schedule_s", mode="before")
    @classmethod
    def _schedule(cls, value: object) -> tuple[float, ...]:
        return parse_schedule(value)

    @field_validator("allow_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> str:
        if not isinstance(value, str | list | tuple):
            raise ValueError("allowed networks must be comma-separated CIDRs")
        items = value if isinstance(value, str) else [str(v) for v in value]
        return ",".join(str(n) for n in parse_networks(items))

    @model_validator(mode="after")
    def _secrets_usable(self) -> CallbackSettings:
        for number, secret in enumerate(self.secrets(), 1):
            try:
                decode_secret(secret)
            except ValueError as exc:
                # ConfigurationError, not ValueError: pydantic would echo the input (the secret).
                raise ConfigurationError(f"MIMOQ_WEBHOOK_SECRET, secret #{number}: {exc}") from None
        return self

    def secrets(self) -> list[str]:
        """All configured signing secrets; several (space separated) while rotating."""
        return self.secret.get_secret_value().split() if self.secret else []


class LimiterSettings(_SettingsModel):
    """The fleet-wide quota limiter and scheduler (worker/limiter/)."""

    enabled: bool = Field(
        default=True,
        validation_alias="MIMOQ_LIMITS_ENABLED",
        description="Reserve MiMo quota in Redis before every call. Off only for an upstream "
        "without quotas (e.g. the simulator with no quota policy).",
    )
    account: str | None = Field(
        default=None,
        validation_alias="MIMOQ_LIMIT_ACCOUNT",
        description="Name of the MiMo account whose quota the fleet shares. Default: the first 16 "
        "hex of the SHA-256 of MIMO_API_KEY (never the key). Set the same name on fleets that "
        "use different keys of one account: MiMo sums the quota over all its keys.",
    )
    default_rpm: int = Field(
        default=100,
        gt=0,
        validation_alias="MIMOQ_LIMIT_DEFAULT_RPM",
        description="Requests per window for every model not named in MIMOQ_LIMIT_RPM "
        "(official: 100 per minute for each model).",
    )
    rpm: dict[str, int] = Field(
        default_factory=dict,
        validation_alias="MIMOQ_LIMIT_RPM",
        description="Per-model overrides of the requests per window, as JSON: "
        "'{\"mimo-v2.5-tts\": 60}'.",
    )
    tpm: dict[str, int] = Field(
        default_factory=dict,
        validation_alias="MIMOQ_LIMIT_TPM",
        description="Per-model overrides of the tokens per window, as JSON (official: 10000 "
        "for mimo-v2.5-asr; no token limit is enforced for other models). 0 removes a limit.",
    )
    window_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias="MIMOQ_LIMIT_WINDOW_S",
        description="Length of the quota window (MiMo: a minute). Benchmarks shorten it.",
    )
    target: float = Field(
        default=AUTO,
        gt=0,
        le=1,
        validate_default=True,
        validation_alias="MIMOQ_LIMIT_TARGET",
        description="Fraction of the quota the limiter paces to; the rest absorbs the spread "
        "between our send times and MiMo's receive times. `auto`: the highest of 0.995, 0.99, "
        "0.985, 0.98 whose guard margin still covers a 0.25 s grant-to-send lag at the window "
        "(0.99 at 60 s, 0.98 at 10 s and shorter).",
    )
    burst: int = Field(
        default=1,
        ge=1,
        validation_alias="MIMOQ_LIMIT_BURST",
        description="Requests that may start back to back after an idle spell (1: even spacing).",
    )
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        validation_alias="MIMOQ_LIMIT_MAX_IN_FLIGHT",
        description="Cap on MiMo calls in flight per model across the fleet (unset: no cap).",
    )
    # Scheduling: lanes and tenants (docs/scheduling.md)
    bulk_min_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        validation_alias="MIMOQ_LIMIT_BULK_MIN_SHARE",
        description="Share of a model's grants that bulk jobs keep while interactive jobs "
        "compete with them (0: interactive always goes first).",
    )

    @field_validator("target", mode="before")
    @classmethod
    def _auto_target(cls, value: Any, info: ValidationInfo) -> Any:
        """``auto`` (the default) becomes a number here, from the window (core/pacing.py)."""
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return auto_target(float(info.data.get("window_s", 60.0)))
        return value


class HttpSettings(_SettingsModel):
    """`mimoq serve` (mimoq/http)."""

    tokens: SecretStr | None = Field(
        default=None,
        validation_alias="MIMOQ_API_TOKENS",
        description="Bearer tokens of `mimoq serve`, comma or space separated, each `token` or "
        "`name:token` (the name is the caller's tenant). Unset: serve binds to loopback only.",
    )
    host: str = Field(default="127.0.0.1", validation_alias="MIMOQ_HTTP_HOST")
    port: int = Field(default=8080, ge=0, le=65_535, validation_alias="MIMOQ_HTTP_PORT")
    max_json_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        validation_alias="MIMOQ_HTTP_MAX_JSON_BYTES",
        description="Largest JSON request body (a voice-clone sample is up to 10 MB of base64).",
    )
    max_upload_bytes: int = Field(
        default=512 * 1024 * 1024,
        gt=0,
        validation_alias="MIMOQ_HTTP_MAX_UPLOAD_BYTES",
        description="Largest multipart upload (transcription audio, batch input files).",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias="MIMOQ_HTTP_HEADER_TIMEOUT_S",
        description="A connection that has not sent a whole request head in this long is closed.",
    )
    body_idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias="MIMOQ_HTTP_BODY_IDLE_TIMEOUT_S",
        description="A request body that stalls this long between chunks is refused (408).",
    )
    body_timeout_s: float = Field(
        default=900.0,
        gt=0,
        validation_alias="MIMOQ_HTTP_BODY_TIMEOUT_S",
        description="A request body that takes longer than this in all is refused (408).",
    )
    wait_timeout_s: float = Field(
        default=600.0,
        gt=0,
        validation_alias="MIMOQ_HTTP_WAIT_TIMEOUT_S",
        description="How long a synchronous request waits for its job before answering 504 "
        "(the job goes on: poll the Location given).",
    )
    upload_sweep_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias="MIMOQ_HTTP_UPLOAD_SWEEP_S",
        description="How often `mimoq serve` deletes the uploads of finished jobs.",
    )
    cors_origins: str = Field(
        default="",
        validation_alias="MIMOQ_HTTP_CORS_ORIGINS",
        description="Comma-separated origins browsers may call the API from (none by default).",
    )
    dashboard_tenants: str = Field(
        default="",
        validation_alias="MIMOQ_HTTP_DASHBOARD_TENANTS",
        description="Comma-separated tenants who may open the dashboard (it shows the whole "
        "fleet); empty: every token's tenant.",
    )

    metrics_token: SecretStr | None = Field(
        default=None,
        validation_alias="MIMOQ_METRICS_TOKEN",
        description="Bearer token Prometheus scrapes `mimoq serve`'s /metrics with; unset: a "
        "token of a tenant who may open the dashboard. Workers' /metrics are not affected.",
    )

    _blank_unset = field_validator("tokens", "metrics_token", mode="before")(_blank_is_none)

    def token_list(self) -> list[str]:
        """The configured bearer-token entries, as written (``token`` or ``name:token``)."""
        if self.tokens is None:
            return []
        return self.tokens.get_secret_value().replace(",", " ").split()


class AccountSettings(_SettingsModel):
    """The per-account circuit breaker (worker/accounts/)."""

    probe_base_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias="MIMOQ_ACCOUNT_PROBE_BASE_S",
        description="First wait before one request probes a paused account; doubles per probe.",
    )
    probe_max_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias="MIMOQ_ACCOUNT_PROBE_MAX_S",
        description="Cap of the wait between probes of a paused account.",
    )
    pause_max_s: float = Field(
        default=86_400.0,
        gt=0,
        validation_alias="MIMOQ_ACCOUNT_PAUSE_MAX_S",
        description="A pause longer than this fails the jobs waiting for the account.",
    )
    trip_429s: int = Field(
        default=20,
        ge=1,
        validation_alias="MIMOQ_ACCOUNT_TRIP_429S",
        description="Consecutive 429s (no success in between, cool-downs honoured) that pause "
        "the account like a 402.",
    )


class AudioSettings(_SettingsModel):
    """Segments and silence compaction of long recordings (core/splitting/)."""

    segment_max_s: float = Field(
        default=30.0,
        ge=2,
        le=200,
        validation_alias="MIMOQ_SEGMENT_MAX_S",
        description="timestamps: segment -- the longest segment; longer speech is cut.",
    )
    segment_min_pause_s: float = Field(
        default=0.4,
        gt=0,
        validation_alias="MIMOQ_SEGMENT_MIN_PAUSE_S",
        description="timestamps: segment -- every pause at least this long ends a segment.",
    )
    compact_silence_min_s: float = Field(
        default=1.0,
        gt=0,
        validation_alias="MIMOQ_COMPACT_SILENCE_MIN_S",
        description="compact_silence -- pauses longer than this are shortened.",
    )
    compact_silence_keep_s: float = Field(
        default=0.3,
        ge=0.04,
        validation_alias="MIMOQ_COMPACT_SILENCE_KEEP_S",
        description="compact_silence -- what is left of each shortened pause.",
    )


class UsageSettings(_SettingsModel):
    """Per-tenant usage totals and limits (core/tenant_limits.py, worker/tenant_gate.py)."""

    tenant_limits: str = Field(
        default="",
        validation_alias="MIMOQ_TENANT_LIMITS",
        description="What each tenant may use per window, e.g. "
        "'alpha:requests=5000/1d,audio_s=36000/1d;*:requests=20000/1d'.",
    )

    @field_validator("tenant_limits", mode="before")
    @classmethod
    def _limits(cls, value: object) -> str:
        text = "" if value is None else str(value)
        try:
            parse_tenant_limits(text)
        except TenantLimitsError as exc:
            # fatal at start-up, one line (a ValueError would become pydantic's long report)
            raise ConfigurationError(str(exc)) from None
        return text

    def limits(self) -> TenantLimits:
        return parse_tenant_limits(self.tenant_limits)


#: The subsystem models, by the name of their field on ``Settings``.
GROUPS: Final[dict[str, type[BaseSettings]]] = {
    "mimo": MimoSettings,
    "storage": StorageSettings,
    "retry": RetrySettings,
    "worker": WorkerSettings,
    "ops": OpsSettings,
    "callbacks": CallbackSettings,
    "limiter": LimiterSettings,
    "http": HttpSettings,
    "accounts": AccountSettings,
    "audio": AudioSettings,
    "usage": UsageSettings,
}


class Settings(_SettingsModel):
    """Everything configurable, one model per subsystem. See the docs/configuration.md."""

    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")

    mimo: MimoSettings = Field(default_factory=MimoSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    callbacks: CallbackSettings = Field(default_factory=CallbackSettings)
    limiter: LimiterSettings = Field(default_factory=LimiterSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    accounts: AccountSettings = Field(default_factory=AccountSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)

    _blank_unset = field_validator("redis_url", mode="before")(_blank_is_none)

    # A group given as a dict (``Settings(limiter={"window_s": 10})``) is built through its
    # model's own __init__ (pydantic calls a model's custom __init__ for nested input, and
    # BaseSettings has one), so the group's other fields still come from the environment.

    def updated(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated): ``redis_url=...``, and per group a
        dict of its fields, ``updated(limiter={"window_s": 10})``. Every value set is kept; a
        field never set is derived again, as ``Settings()`` would (the ``auto`` target follows
        the new window)."""
        values: dict[str, Any] = {"redis_url": self.redis_url}
        for name in GROUPS:
            values[name] = getattr(self, name)
        for name, change in changes.items():
            group = values.get(name)
            if isinstance(group, BaseSettings) and isinstance(change, Mapping):
                change = GROUPS[name](**{**group.model_dump(exclude_unset=True), **change})
            values[name] = change  # anything else is validated (or refused) as it is
        return type(self)(**values)

    def base_url(self) -> str:
        """The MiMo base URL: explicit configuration wins, else derived from the key prefix."""
        return self.mimo.resolved_base_url()

    def api_key(self) -> str | None:
        return self.mimo.key.get_secret_value() if self.mimo.key else None

    def webhook_secrets(self) -> list[str]:
        """All configured signing secrets; several (space separated) while rotating."""
        return self.callbacks.secrets()
