"""Loading the settings for a command: every way they can be wrong is one ConfigurationError
that names the variable, never a traceback, and never echoes a value (it may be a secret)."""

from __future__ import annotations

from pydantic import ValidationError

from mimoq.core.errors import ConfigurationError
from mimoq.core.settings import Settings


def load_settings() -> Settings:
    """The settings from the environment; ``ConfigurationError`` if they cannot work."""
    try:
        return Settings()
    except ValidationError as exc:
        raise invalid_setting(exc) from None


def invalid_setting(exc: ValidationError) -> ConfigurationError:
    """pydantic's refusal of an environment variable, as the variable and what is wrong."""
    problems = [
        (".".join(str(part) for part in error["loc"]) or exc.title, error["msg"])
        for error in exc.errors(include_input=False, include_url=False)
    ]
    names = ", ".join(dict.fromkeys(name for name, _ in problems))
    return ConfigurationError(
        "; ".join(f"{name}: {message}" for name, message in problems),
        fix=f"correct {names} or unset it for its default (docs/configuration.md)",
    )
