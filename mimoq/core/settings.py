"""One validated settings object, read from the environment once per entrypoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mimoq.core.errors import ConfigurationError
from mimoq.core.keyenv import NumberedKey, numbered_keys
from mimoq.core.ssrf import parse_networks
from mimoq.core.webhooks import DEFAULT_SCHEDULE_S

PAYG_BASE_URL = "https://api.xiaomimimo.com/v1"
TOKEN_PLAN_BASE_URL = "https://token-plan-{region}.xiaomimimo.com/v1"  # noqa: S105 (a URL)
Region = Literal["cn", "sgp", "ams"]


class Settings(BaseSettings):
    """Everything configurable, with units in the names. See the README's configuration table."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    # --- MiMo -------------------------------------------------------------------------
    mimo_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MIMO_API_KEY", "XIAOMI_API_KEY")
    )
    mimo_base_url: str | None = Field(default=None, validation_alias="MIMO_BASE_URL")
    mimo_region: Region | None = Field(default=None, validation_alias="MIMO_REGION")
    request_timeout_s: float = Field(
        default=120.0,
        gt=0,
        validation_alias="MIMOQ_REQUEST_TIMEOUT_S",
        description="Read timeout of one MiMo call; long TTS takes 20-60 s, so keep it well above.",
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, validation_alias="MIMOQ_CONNECT_TIMEOUT_S")

    # --- Redis and storage ------------------------------------------------------------
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    data_dir: Path = Field(default=Path("./mimoq-data"), validation_alias="MIMOQ_DATA_DIR")
    result_ttl_s: int = Field(default=7 * 86_400, gt=0, validation_alias="MIMOQ_RESULT_TTL_S")

    # --- Inputs (owned by core/inputs.py) --------------------------------------------------
    input_roots: str = Field(
        default="",
        validation_alias="MIMOQ_INPUT_ROOTS",
        description="Folders (separated by ':') whose files a job may name as local input; "
        "default: MIMOQ_DATA_DIR. Paths outside, and symlinks leading out, are refused.",
    )

    # --- end inputs -------------------------------------------------------------------------

    # --- Retries ----------------------------------------------------------------------
    max_tries: int = Field(default=8, ge=1, le=100, validation_alias="MIMOQ_MAX_TRIES")
    backoff_base_s: float = Field(default=1.0, gt=0, validation_alias="MIMOQ_BACKOFF_BASE_S")
    backoff_max_s: float = Field(default=300.0, gt=0, validation_alias="MIMOQ_BACKOFF_MAX_S")

    # --- Worker -----------------------------------------------------------------------
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

    # --- Operations (owned by worker/metrics.py, worker/heartbeat.py) -----------------------
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
    # --- end operations ---------------------------------------------------------------------

    # --- Resilience (owned by worker/orphans.py, core/redis_retry.py) -----------------------
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
    # --- end resilience ---------------------------------------------------------------------

    # --- Callbacks (owned by worker/callbacks.py) ------------------------------------------
    webhook_secret: SecretStr | None = Field(default=None, validation_alias="MIMOQ_WEBHOOK_SECRET")
    callback_timeout_s: float = Field(
        default=15.0,
        gt=0,
        validation_alias="MIMOQ_CALLBACK_TIMEOUT_S",
        description="Deadline of one delivery attempt (DNS, connect, send, response).",
    )
    # Kept as the env text (validated and normalized); callback_schedule() gives the numbers.
    callback_schedule_s: str = Field(
        default=",".join(f"{s:g}" for s in DEFAULT_SCHEDULE_S),
        validation_alias="MIMOQ_CALLBACK_SCHEDULE_S",
        description="Wait before each delivery attempt, in seconds (Svix-like: about a day).",
    )
    callback_jitter: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        validation_alias="MIMOQ_CALLBACK_JITTER",
        description="Retry waits vary by +/- this share, so receivers aren't retried in lockstep.",
    )
    callback_retry_after_max_s: float = Field(
        default=3600.0,
        ge=0,
        le=86_400,
        validation_alias="MIMOQ_CALLBACK_RETRY_AFTER_MAX_S",
        description="A receiver's Retry-After is honoured up to this many seconds.",
    )
    callback_max_response_bytes: int = Field(
        default=65_536,
        ge=0,
        validation_alias="MIMOQ_CALLBACK_MAX_RESPONSE_BYTES",
        description="At most this much of a receiver's answer is read, then the connection closed.",
    )
    callback_allow_networks: str = Field(
        default="",
        validation_alias="MIMOQ_CALLBACK_ALLOW_NETWORKS",
        description="Comma-separated CIDRs that callbacks may reach although not public.",
    )
    callback_https_only: bool = Field(default=False, validation_alias="MIMOQ_CALLBACK_HTTPS_ONLY")

    @field_validator("callback_schedule_s", mode="before")
    @classmethod
    def _callback_schedule(cls, value: object) -> str:
        from mimoq.core.webhooks import (
            parse_schedule,  # local: keeps settings free of import cycles
        )

        return ",".join(f"{s:g}" for s in parse_schedule(value))

    @field_validator("callback_allow_networks", mode="before")
    @classmethod
    def _callback_networks(cls, value: object) -> str:
        if not isinstance(value, str | list | tuple):
            raise ValueError("allowed networks must be comma-separated CIDRs")
        items = value if isinstance(value, str) else [str(v) for v in value]
        return ",".join(str(n) for n in parse_networks(items))

    @model_validator(mode="after")
    def _webhook_secrets_usable(self) -> Settings:
        from mimoq.core.webhooks import decode_secret

        for number, secret in enumerate(self.webhook_secrets(), 1):
            try:
                decode_secret(secret)
            except ValueError as exc:
                # ConfigurationError, not ValueError: pydantic would echo the input (the secret).
                raise ConfigurationError(f"MIMOQ_WEBHOOK_SECRET, secret #{number}: {exc}") from None
        return self

    def callback_schedule(self) -> tuple[float, ...]:
        """The retry schedule in seconds: entry i is the wait before attempt i + 1."""
        return tuple(float(s) for s in self.callback_schedule_s.split(","))

    # --- end callbacks ----------------------------------------------------------------------

    # --- Limiter (owned by worker/limiter.py) -----------------------------------------------
    limits_enabled: bool = Field(
        default=True,
        validation_alias="MIMOQ_LIMITS_ENABLED",
        description="Reserve MiMo quota in Redis before every call. Off only for an upstream "
        "without quotas (e.g. the simulator with no quota policy).",
    )
    limit_account: str | None = Field(
        default=None,
        validation_alias="MIMOQ_LIMIT_ACCOUNT",
        description="Name of the MiMo account whose quota the fleet shares. Default: the first 16 "
        "hex of the SHA-256 of MIMO_API_KEY (never the key). Set the same name on fleets that "
        "use different keys of one account: MiMo sums the quota over all its keys.",
    )
    limit_default_rpm: int = Field(
        default=100,
        gt=0,
        validation_alias="MIMOQ_LIMIT_DEFAULT_RPM",
        description="Requests per window for every model not named in MIMOQ_LIMIT_RPM "
        "(official: 100 per minute for each model).",
    )
    limit_rpm: dict[str, int] = Field(
        default_factory=dict,
        validation_alias="MIMOQ_LIMIT_RPM",
        description="Per-model overrides of the requests per window, as JSON: "
        "'{\"mimo-v2.5-tts\": 60}'.",
    )
    limit_tpm: dict[str, int] = Field(
        default_factory=dict,
        validation_alias="MIMOQ_LIMIT_TPM",
        description="Per-model overrides of the tokens per window, as JSON (official: 10000 "
        "for mimo-v2.5-asr; no token limit is enforced for other models). 0 removes a limit.",
    )
    limit_window_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias="MIMOQ_LIMIT_WINDOW_S",
        description="Length of the quota window (MiMo: a minute). Benchmarks shorten it.",
    )
    limit_target: float = Field(
        default=0.98,
        gt=0,
        le=1,
        validation_alias="MIMOQ_LIMIT_TARGET",
        description="Fraction of the quota the limiter paces to; the rest absorbs the spread "
        "between our send times and MiMo's receive times.",
    )
    limit_margin_s: float = Field(
        default=0.5,
        ge=0,
        validation_alias="MIMOQ_LIMIT_MARGIN_S",
        description="Seconds added to the window by the hard guard (never more than the quota "
        "in any window this long): the worst send-to-receive spread expected. Capped at half "
        "the pacing slack, window x (1/target - 1) / 2, so the guard never paces below target.",
    )
    limit_burst: int = Field(
        default=1,
        ge=1,
        validation_alias="MIMOQ_LIMIT_BURST",
        description="Requests that may start back to back after an idle spell (1: even spacing).",
    )
    limit_max_in_flight: int | None = Field(
        default=None,
        ge=1,
        validation_alias="MIMOQ_LIMIT_MAX_IN_FLIGHT",
        description="Cap on MiMo calls in flight per model across the fleet (unset: no cap).",
    )
    limit_lease_ttl_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias="MIMOQ_LIMIT_LEASE_TTL_S",
        description="An in-flight lease of a worker that died expires after this; keep it above "
        "the longest MiMo call.",
    )
    limit_ticket_grace_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias="MIMOQ_LIMIT_TICKET_GRACE_S",
        description="A deferred job's reserved slot stays claimable this long after its time.",
    )
    limit_cooldown_s: float = Field(
        default=2.0,
        ge=0,
        validation_alias="MIMOQ_LIMIT_COOLDOWN_S",
        description="Fleet-wide pause of a model after a 429 that carried no Retry-After.",
    )
    limit_decrease: float = Field(
        default=0.7,
        gt=0,
        lt=1,
        validation_alias="MIMOQ_LIMIT_DECREASE",
        description="After a 429 the paced rate is multiplied by this (multiplicative decrease).",
    )
    limit_recovery_per_window: float = Field(
        default=0.1,
        gt=0,
        le=1,
        validation_alias="MIMOQ_LIMIT_RECOVERY_PER_WINDOW",
        description="Share of the target rate regained per window without a 429 "
        "(additive increase).",
    )
    limit_tokens_per_call: float = Field(
        default=21.0,
        ge=0,
        validation_alias="MIMOQ_LIMIT_TOKENS_PER_CALL",
        description="Fixed token cost of a call of a token-limited model (the ASR prompt's text).",
    )
    limit_tokens_per_audio_s: float = Field(
        default=11.25,
        gt=0,
        validation_alias="MIMOQ_LIMIT_TOKENS_PER_AUDIO_S",
        description="Starting tokens per second of audio (the documented 4 s clip: 25 audio + 20 "
        "completion tokens); calibrated fleet-wide from the usage of finished calls.",
    )
    # Scheduling: lanes and tenants (README, "Scheduling")
    limit_bulk_min_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        validation_alias="MIMOQ_LIMIT_BULK_MIN_SHARE",
        description="Share of a model's grants that bulk jobs keep while interactive jobs "
        "compete with them (0: interactive always goes first).",
    )
    limit_lookahead_s: float = Field(
        default=2.0,
        gt=0,
        validation_alias="MIMOQ_LIMIT_LOOKAHEAD_S",
        description="Seconds of a model's slots that waiting bulk jobs are admitted into the "
        "queue ahead of time (at least 2 jobs); the rest wait in mimoq:wait:*.",
    )
    limit_first_decrease: float = Field(
        default=0.9,
        gt=0,
        lt=1,
        validation_alias="MIMOQ_LIMIT_FIRST_DECREASE",
        description="After a 429 that follows a clean window (none in the last 3 windows) the "
        "paced rate is multiplied by this, and regains the step within one window.",
    )

    # --- end limiter ------------------------------------------------------------------------

    # --- Accounts: key pool and circuit breaker (owned by core/keypool.py, worker/accounts/) --
    mimo_api_keys: SecretStr | None = Field(
        default=None,
        validation_alias="MIMO_API_KEYS",
        description="More keys, space- or comma-separated; each is its own account unless "
        "MIMOQ_LIMIT_ACCOUNT names one for all of them.",
    )
    mimo_numbered_keys: dict[str, NumberedKey] = Field(
        # Found by pattern (pydantic-settings reads fixed names only); the alias is the
        # pattern's documented spelling, which no environment variable can have.
        default_factory=lambda: numbered_keys(os.environ),
        validation_alias="MIMO_<N>_API_KEY",
        description="Key presets: MIMO_<N>_API_KEY with optional MIMO_<N>_REGION, "
        "MIMO_<N>_BASE_URL and MIMO_<N>_ACCOUNT (keys sharing an account share its quota).",
    )

    account_probe_base_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias="MIMOQ_ACCOUNT_PROBE_BASE_S",
        description="First wait before one request probes a paused account; doubles per probe.",
    )
    account_probe_max_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias="MIMOQ_ACCOUNT_PROBE_MAX_S",
        description="Cap of the wait between probes of a paused account.",
    )
    account_pause_max_s: float = Field(
        default=86_400.0,
        gt=0,
        validation_alias="MIMOQ_ACCOUNT_PAUSE_MAX_S",
        description="A pause longer than this fails the jobs waiting for the account.",
    )
    account_trip_429s: int = Field(
        default=20,
        ge=1,
        validation_alias="MIMOQ_ACCOUNT_TRIP_429S",
        description="Consecutive 429s (no success in between, cool-downs honoured) that pause "
        "the account like a 402.",
    )

    @field_validator("mimo_api_keys", mode="before")
    @classmethod
    def _blank_keys_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    # --- end accounts -----------------------------------------------------------------------

    # --- HTTP front door (owned by mimoq/http) ----------------------------------------------
    api_tokens: SecretStr | None = Field(
        default=None,
        validation_alias="MIMOQ_API_TOKENS",
        description="Bearer tokens of `mimoq serve`, comma or space separated, each `token` or "
        "`name:token` (the name is the caller's tenant). Unset: serve binds to loopback only.",
    )
    http_host: str = Field(default="127.0.0.1", validation_alias="MIMOQ_HTTP_HOST")
    http_port: int = Field(default=8080, ge=0, le=65_535, validation_alias="MIMOQ_HTTP_PORT")
    http_max_json_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        validation_alias="MIMOQ_HTTP_MAX_JSON_BYTES",
        description="Largest JSON request body (a voice-clone sample is up to 10 MB of base64).",
    )
    http_max_upload_bytes: int = Field(
        default=512 * 1024 * 1024,
        gt=0,
        validation_alias="MIMOQ_HTTP_MAX_UPLOAD_BYTES",
        description="Largest multipart upload (transcription audio, batch input files).",
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias="MIMOQ_HTTP_HEADER_TIMEOUT_S",
        description="A connection that has not sent a whole request head in this long is closed.",
    )
    http_body_idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias="MIMOQ_HTTP_BODY_IDLE_TIMEOUT_S",
        description="A request body that stalls this long between chunks is refused (408).",
    )
    http_body_timeout_s: float = Field(
        default=900.0,
        gt=0,
        validation_alias="MIMOQ_HTTP_BODY_TIMEOUT_S",
        description="A request body that takes longer than this in all is refused (408).",
    )
    http_wait_timeout_s: float = Field(
        default=600.0,
        gt=0,
        validation_alias="MIMOQ_HTTP_WAIT_TIMEOUT_S",
        description="How long a synchronous request waits for its job before answering 504 "
        "(the job goes on: poll the Location given).",
    )
    http_upload_sweep_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias="MIMOQ_HTTP_UPLOAD_SWEEP_S",
        description="How often `mimoq serve` deletes the uploads of finished jobs.",
    )
    http_cors_origins: str = Field(
        default="",
        validation_alias="MIMOQ_HTTP_CORS_ORIGINS",
        description="Comma-separated origins browsers may call the API from (none by default).",
    )

    http_dashboard_tenants: str = Field(
        default="",
        validation_alias="MIMOQ_HTTP_DASHBOARD_TENANTS",
        description="Comma-separated tenants who may open the dashboard (it shows the whole "
        "fleet); empty: every token's tenant.",
    )

    def api_token_list(self) -> list[str]:
        """The configured bearer-token entries, as written (``token`` or ``name:token``)."""
        if self.api_tokens is None:
            return []
        return self.api_tokens.get_secret_value().replace(",", " ").split()

    # --- end HTTP front door ----------------------------------------------------------------

    # --- segments and silence (transcription) ------------------------------------------
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

    @field_validator(
        "mimo_api_key", "webhook_secret", "api_tokens", "mimo_base_url", "redis_url", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `FOO=` in a .env or compose file means "not set", not "set to the empty string".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("mimo_base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _base_url_is_derivable(self) -> Settings:
        self.base_url()  # fail at start-up, not at the first job
        return self

    def base_url(self) -> str:
        """The MiMo base URL: explicit configuration wins, else derived from the key prefix."""
        if self.mimo_base_url:
            return self.mimo_base_url
        key = self.mimo_api_key.get_secret_value() if self.mimo_api_key else ""
        if key.startswith("tp-"):
            if self.mimo_region is None:
                raise ConfigurationError(
                    "MIMO_API_KEY is a Token Plan key (tp-...), whose cluster cannot be guessed: "
                    "set MIMO_REGION to cn, sgp or ams (or MIMO_BASE_URL explicitly)"
                )
            return TOKEN_PLAN_BASE_URL.format(region=self.mimo_region)
        return PAYG_BASE_URL

    def api_key(self) -> str | None:
        return self.mimo_api_key.get_secret_value() if self.mimo_api_key else None

    def webhook_secrets(self) -> list[str]:
        """All configured signing secrets; several (space separated) while rotating."""
        if self.webhook_secret is None:
            return []
        return self.webhook_secret.get_secret_value().split()
