"""One HTTP attempt, with the transport injected (httpx.MockTransport): no sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from mimoq.core.settings import Settings
from mimoq.core.webhooks import Delivery, DeliveryVerdict
from mimoq.worker.callback_delivery import send_attempt
from tests.callbacks.conftest import SECRET_A

PUBLIC = "93.184.215.14"


async def public_dns(host: str, port: int) -> Sequence[str]:
    return [PUBLIC]


def _delivery(url: str = "https://hooks.example/cb?token=abc") -> Delivery:
    return Delivery(
        delivery_id="cb-j",
        job_id="j",
        url=url,
        headers={"X-Trace": "t-1"},
        body='{"type":"job.succeeded","text":"héllo"}',
        created_at=0.0,
    )


def _client(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=handler)


async def test_the_request_goes_to_the_checked_ip_with_name_host_header_and_sni() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    settings = Settings(callbacks={"secret": SECRET_A})
    async with _client(httpx.MockTransport(handler)) as client:
        outcome = await send_attempt(client, _delivery(), settings, resolver=public_dns)

    assert outcome == type(outcome)(DeliveryVerdict.delivered, 204, None, None)
    [request] = seen
    assert str(request.url) == f"https://{PUBLIC}/cb?token=abc"
    assert request.headers["host"] == "hooks.example"
    assert request.extensions["sni_hostname"] == "hooks.example"
    assert request.headers["x-trace"] == "t-1"
    assert request.content == _delivery().body.encode()
    Webhook(SECRET_A).verify(request.content, dict(request.headers))


async def test_only_a_capped_amount_of_the_answer_is_read() -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 1024
            yield b"x" * 1024

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    settings = Settings(callbacks={"max_response_bytes": 10_000})
    async with _client(httpx.MockTransport(handler)) as client:
        outcome = await send_attempt(client, _delivery(), settings, resolver=public_dns)

    assert outcome.verdict is DeliveryVerdict.delivered
    assert 10_000 <= produced <= 11_264  # stopped within a chunk of the cap


@pytest.mark.parametrize(
    ("status", "headers", "verdict", "retry_after"),
    [
        (503, {"Retry-After": "120"}, DeliveryVerdict.retry, 120.0),
        (429, {}, DeliveryVerdict.retry, None),
        (301, {"Location": "http://10.0.0.1/"}, DeliveryVerdict.redirect, None),
        (410, {"Retry-After": "5"}, DeliveryVerdict.gone, None),
        (422, {}, DeliveryVerdict.final, None),
    ],
)
async def test_status_mapping(
    status: int, headers: dict[str, str], verdict: DeliveryVerdict, retry_after: float | None
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers)

    async with _client(httpx.MockTransport(handler)) as client:
        outcome = await send_attempt(client, _delivery(), Settings(), resolver=public_dns)

    assert (outcome.verdict, outcome.status_code, outcome.retry_after_s) == (
        verdict,
        status,
        retry_after,
    )
    if verdict is DeliveryVerdict.redirect:  # where it pointed is kept; the message shows no path
        assert outcome.location == "http://10.0.0.1/"
        assert outcome.error == f"HTTP {status} redirect to http://10.0.0.1:80"
    else:
        assert outcome.error == f"HTTP {status}"


async def test_transport_errors_are_retryable_and_do_not_quote_the_url() -> None:
    url = "https://hooks.example/cb?token=abc"

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {url}", request=request)

    async with _client(httpx.MockTransport(handler)) as client:
        outcome = await send_attempt(client, _delivery(url), Settings(), resolver=public_dns)

    assert outcome.verdict is DeliveryVerdict.retry and outcome.status_code is None
    assert outcome.error == "ConnectError: cannot reach https://hooks.example:443"


async def test_a_refused_address_never_reaches_the_transport() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("must not be called")

    async def private_dns(host: str, port: int) -> Sequence[str]:
        return ["10.9.8.7"]

    async with _client(httpx.MockTransport(handler)) as client:
        outcome = await send_attempt(client, _delivery(), Settings(), resolver=private_dns)

    assert (outcome.verdict, outcome.refused) == (DeliveryVerdict.final, True)
    assert "10.9.8.7 (private)" in (outcome.error or "")


async def test_dns_failure_is_retryable() -> None:
    async def no_dns(host: str, port: int) -> Sequence[str]:
        raise OSError(-3, "Temporary failure in name resolution")

    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("must not be called")

    async with _client(httpx.MockTransport(handler)) as client:
        outcome = await send_attempt(client, _delivery(), Settings(), resolver=no_dns)

    assert (outcome.verdict, outcome.refused) == (DeliveryVerdict.retry, False)
    assert "Temporary failure in name resolution" in (outcome.error or "")
