"""One validated settings object, read from the environment once per entrypoint."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mimoq.errors import ConfigurationError

PAYG_BASE_URL = "https://api.xiaomimimo.com/v1"
TOKEN_PLAN_BASE_URL = "https://token-plan-{region}.xiaomimimo.com/v1"
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
        default=120.0, gt=0, validation_alias="MIMOQ_REQUEST_TIMEOUT_S",
        description="Read timeout of one MiMo call; long TTS takes 20-60 s, so keep it well above.",
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, validation_alias="MIMOQ_CONNECT_TIMEOUT_S")

    # --- Redis and storage ------------------------------------------------------------
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    data_dir: Path = Field(default=Path("./mimoq-data"), validation_alias="MIMOQ_DATA_DIR")
    result_ttl_s: int = Field(default=7 * 86_400, gt=0, validation_alias="MIMOQ_RESULT_TTL_S")

    # --- Retries ----------------------------------------------------------------------
    max_tries: int = Field(default=8, ge=1, le=100, validation_alias="MIMOQ_MAX_TRIES")
    backoff_base_s: float = Field(default=1.0, gt=0, validation_alias="MIMOQ_BACKOFF_BASE_S")
    backoff_max_s: float = Field(default=300.0, gt=0, validation_alias="MIMOQ_BACKOFF_MAX_S")

    # --- Worker -----------------------------------------------------------------------
    concurrency: int = Field(
        default=32, ge=1, le=1000, validation_alias="MIMOQ_CONCURRENCY",
        description="Jobs in flight per worker process. Little's law: 100 RPM at 8 s p50 needs ~14.",
    )
    job_timeout_s: float = Field(default=600.0, gt=0, validation_alias="MIMOQ_JOB_TIMEOUT_S")
    poll_delay_s: float = Field(
        default=0.2, gt=0, validation_alias="MIMOQ_POLL_DELAY_S",
        description="How often an idle worker polls the queue (arq's poll_delay).",
    )

    # --- Callbacks (owned by worker/callbacks.py) ------------------------------------------
    webhook_secret: SecretStr | None = Field(default=None, validation_alias="MIMOQ_WEBHOOK_SECRET")
    callback_timeout_s: float = Field(default=15.0, gt=0, validation_alias="MIMOQ_CALLBACK_TIMEOUT_S")
    # --- end callbacks ----------------------------------------------------------------------

    # --- Limiter (owned by worker/limiter.py) -----------------------------------------------
    # --- end limiter ------------------------------------------------------------------------

    @field_validator("mimo_api_key", "webhook_secret", "mimo_base_url", "redis_url", mode="before")
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
