"""Standard Webhooks signing (verified by the reference library) and the retry policy."""

from __future__ import annotations

import base64
import time
from email.utils import formatdate

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mimoq.core.errors import ConfigurationError
from mimoq.core.http_headers import parse_retry_after
from mimoq.core.settings import Settings
from mimoq.core.webhooks import (
    DEFAULT_SCHEDULE_S,
    MAX_DELAY_S,
    Delivery,
    DeliveryVerdict,
    classify_status,
    decode_secret,
    delivery_headers,
    parse_schedule,
    retry_delay_s,
    signature,
)
from tests.callbacks.conftest import SECRET_A, SECRET_B

NOW = 1_800_000_000.0


def _delivery(**overrides: object) -> Delivery:
    values: dict[str, object] = {
        "delivery_id": "cb-job-1",
        "job_id": "job-1",
        "url": "https://hooks.example/x",
        "headers": {"Authorization": "Bearer receiver-token"},
        "body": '{"type":"job.succeeded","text":"naïve ☃"}',
        "created_at": NOW,
    }
    values.update(overrides)
    return Delivery.model_validate(values)


def _signed(secrets: list[str]) -> tuple[bytes, dict[str, str]]:
    delivery = _delivery()
    body = delivery.body.encode()
    return body, delivery_headers(delivery, timestamp=int(time.time()), body=body, secrets=secrets)


@pytest.mark.parametrize("secret", [SECRET_A, SECRET_B])
def test_single_secret_verifies_with_the_reference_library(secret: str) -> None:
    body, headers = _signed([secret])
    assert Webhook(secret).verify(body, headers) == {"type": "job.succeeded", "text": "naïve ☃"}


@pytest.mark.parametrize("verifier", [SECRET_A, SECRET_B])
def test_rotation_signs_once_per_secret_and_verifies_under_either(verifier: str) -> None:
    body, headers = _signed([SECRET_A, SECRET_B])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert all(s.startswith("v1,") for s in headers["webhook-signature"].split(" "))
    Webhook(verifier).verify(body, headers)


def test_a_different_secret_or_a_changed_body_does_not_verify() -> None:
    body, headers = _signed([SECRET_A])
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_B).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify(body + b" ", headers)


def test_signature_covers_id_timestamp_and_body() -> None:
    base = signature([SECRET_A], "cb-1", 100, b"{}")
    assert base != signature([SECRET_A], "cb-2", 100, b"{}")
    assert base != signature([SECRET_A], "cb-1", 101, b"{}")
    assert base != signature([SECRET_A], "cb-1", 100, b"{ }")


def test_headers_without_secret_carry_id_and_timestamp_but_no_signature() -> None:
    delivery = _delivery()
    headers = delivery_headers(delivery, timestamp=123, body=b"{}", secrets=[])
    assert headers["webhook-id"] == "cb-job-1"
    assert headers["webhook-timestamp"] == "123"
    assert "webhook-signature" not in headers
    assert headers["content-type"] == "application/json"
    assert headers["Authorization"] == "Bearer receiver-token"


def test_user_headers_cannot_override_the_webhook_headers() -> None:
    delivery = _delivery(headers={"Webhook-Id": "forged", "Content-Type": "text/plain", "X-A": "1"})
    headers = delivery_headers(delivery, timestamp=5, body=b"{}", secrets=[])
    assert {k.lower(): v for k, v in headers.items()}["webhook-id"] == "cb-job-1"
    assert [k for k in headers if k.lower() == "content-type"] == ["content-type"]
    assert headers["X-A"] == "1"


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"),
        ("whsec_not*base64", "base64"),
        ("whsec_", "empty"),
    ],
)
def test_malformed_secrets_are_refused_without_echoing_them(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        decode_secret(secret)
    assert secret not in str(info.value) or secret == "whsec_"
    with pytest.raises(ConfigurationError) as config_info:
        Settings(callbacks={"secret": f"{SECRET_A} {secret}"})
    assert "secret #2" in config_info.value.message
    assert SECRET_A not in config_info.value.message
    assert secret not in config_info.value.message or secret == "whsec_"


def test_decode_secret_returns_the_base64_key() -> None:
    assert decode_secret(SECRET_A) == base64.b64decode(SECRET_A.removeprefix("whsec_"))


def test_settings_repr_never_shows_the_secret() -> None:
    settings = Settings(callbacks={"secret": f"{SECRET_A} {SECRET_B}"})
    assert settings.webhook_secrets() == [SECRET_A, SECRET_B]
    assert SECRET_A not in repr(settings) and SECRET_B not in repr(settings)
    assert SECRET_A.removeprefix("whsec_") not in str(settings)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, DeliveryVerdict.delivered),
        (201, DeliveryVerdict.delivered),
        (204, DeliveryVerdict.delivered),
        (299, DeliveryVerdict.delivered),
        (301, DeliveryVerdict.redirect),
        (302, DeliveryVerdict.redirect),
        (307, DeliveryVerdict.redirect),
        (308, DeliveryVerdict.redirect),
        (400, DeliveryVerdict.final),
        (401, DeliveryVerdict.final),
        (403, DeliveryVerdict.final),
        (404, DeliveryVerdict.final),
        (413, DeliveryVerdict.final),
        (422, DeliveryVerdict.final),
        (408, DeliveryVerdict.retry),
        (429, DeliveryVerdict.retry),
        (410, DeliveryVerdict.gone),
        (500, DeliveryVerdict.retry),
        (502, DeliveryVerdict.retry),
        (503, DeliveryVerdict.retry),
        (504, DeliveryVerdict.retry),
        (599, DeliveryVerdict.retry),
        (100, DeliveryVerdict.retry),
    ],
)
def test_classify_status(status: int, verdict: DeliveryVerdict) -> None:
    assert classify_status(status) is verdict


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", None),
        ("soon", None),
        (formatdate(NOW + 90, usegmt=True), 90.0),
        (formatdate(NOW - 90, usegmt=True), 0.0),  # a date in the past: now
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: not an HTTP date
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    ("value", "schedule"),
    [
        ("0,5,300", (0.0, 5.0, 300.0)),
        (" 0, 0.5 ,1 ", (0.0, 0.5, 1.0)),
        ([0, 1, 2.5], (0.0, 1.0, 2.5)),
        ("0,5,300,1800,7200,18000,36000,36000", DEFAULT_SCHEDULE_S),
    ],
)
def test_parse_schedule(value: object, schedule: tuple[float, ...]) -> None:
    assert parse_schedule(value) == schedule


@pytest.mark.parametrize("value", ["", "0,x", "0,-1", "0,nan", "0,inf", f"0,{MAX_DELAY_S + 1}", 5])
def test_parse_schedule_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="schedule"):
        parse_schedule(value)


def test_default_schedule_is_svix_like_about_a_day() -> None:
    schedule = Settings().callbacks.schedule_s
    assert schedule == DEFAULT_SCHEDULE_S
    assert 86_400 <= sum(schedule) <= 2 * 86_400


def test_schedule_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMOQ_CALLBACK_SCHEDULE_S", "0,1,2")
    monkeypatch.setenv("MIMOQ_CALLBACK_ALLOW_NETWORKS", "10.0.0.0/8, ::1")
    monkeypatch.setenv("MIMOQ_CALLBACK_HTTPS_ONLY", "true")
    settings = Settings()
    assert settings.callbacks.schedule_s == (0.0, 1.0, 2.0)
    assert settings.callbacks.allow_networks == "10.0.0.0/8,::1/128"
    assert settings.callbacks.https_only is True


def test_bad_allow_network_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="not a network"):
        Settings(callbacks={"allow_networks": "10.0.0.0/8,localhost"})


SCHEDULE = (0.0, 10.0, 100.0)


@pytest.mark.parametrize(
    ("attempt", "rand", "retry_after", "expected"),
    [
        (1, 0.5, None, 10.0),  # rand 0.5 = no jitter
        (1, 0.0, None, 9.0),  # -10 %
        (1, 0.99999, None, 10.99998),  # just under +10 %
        (2, 0.5, None, 100.0),
        (3, 0.5, None, None),  # exhausted: three attempts made
        (4, 0.5, None, None),
        (1, 0.5, 30.0, 30.0),  # Retry-After longer than the schedule wins
        (2, 0.5, 30.0, 100.0),  # ... but never shortens it
        (1, 0.5, 99_999.0, 50.0),  # capped at retry_after_max_s
    ],
)
def test_retry_delay(
    attempt: int, rand: float, retry_after: float | None, expected: float | None
) -> None:
    delay = retry_delay_s(
        SCHEDULE,
        attempt,
        jitter=0.1,
        retry_after_s=retry_after,
        retry_after_max_s=50.0,
        rand=lambda: rand,
    )
    assert delay == (pytest.approx(expected) if expected is not None else None)


def test_retry_delay_never_exceeds_arqs_retry_counter_lifetime() -> None:
    delay = retry_delay_s(
        (0.0, MAX_DELAY_S),
        1,
        jitter=0.1,
        retry_after_s=None,
        retry_after_max_s=0,
        rand=lambda: 0.999,
    )
    assert delay == MAX_DELAY_S
