"""The simulator's accounts: GET /v1/models, the host-family rule, per-key quotas, states."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from mimoq.core import dialect_constants as dc
from mimoq.sim import SimApp, SimConfig, create_app
from mimoq.sim.sim_accounts import account_name
from mimoq.sim.sim_config import quota_from_options
from tests.simulator.sim_helpers import tts

CHAT = "/v1/chat/completions"
SK, TP = "sk-sim-account-a", "tp-sim-account-b"
Make = Callable[..., tuple[httpx.AsyncClient, SimApp]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    clients: list[httpx.AsyncClient] = []

    def build(**kw: Any) -> tuple[httpx.AsyncClient, SimApp]:
        app = create_app(SimConfig(**kw))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")
        clients.append(client)
        return client, app

    yield build
    for client in clients:
        await client.aclose()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_models_lists_the_audio_models_to_a_known_key(make: Make) -> None:
    client, _ = make(api_keys=(SK,))
    answer = await client.get("/v1/models", headers=auth(SK))
    assert answer.status_code == 200
    assert {m["id"] for m in answer.json()["data"]} == set(dc.ALL_MODELS)
    assert (await client.get("/v1/models", headers=auth("sk-unknown"))).status_code == 401


async def test_the_payg_host_answers_a_token_plan_key_with_401(make: Make) -> None:
    client, _ = make(family="payg")
    denied = await client.post(CHAT, json=tts(), headers=auth(TP))
    assert denied.status_code == 401
    assert (await client.get("/v1/models", headers=auth(TP))).status_code == 401
    assert (await client.post(CHAT, json=tts(), headers=auth(SK))).status_code == 200
    client, _ = make(family="token_plan")
    assert (await client.post(CHAT, json=tts(), headers=auth(SK))).status_code == 401


@pytest.mark.parametrize(
    ("state", "status", "body"),
    [
        ("insufficient_funds", 402, {"error"}),
        ("burst_402", 402, {"type", "message"}),
        ("revoked", 401, {"error"}),
        ("forbidden", 403, {"error"}),
    ],
)
async def test_an_account_state_answers_its_requests(
    make: Make, state: str, status: int, body: set[str]
) -> None:
    client, _ = make(api_keys=(SK, TP))
    switched = await client.post(
        "/_sim/accounts", json={"account": account_name(SK), "state": state}
    )
    assert switched.status_code == 200
    answer = await client.post(CHAT, json=tts(), headers=auth(SK))
    assert answer.status_code == status
    assert set(answer.json()) == body
    if state == "burst_402":
        assert answer.json() == {
            "type": "server_error",
            "message": "Upstream request failed: Insufficient account funds",
        }
    # The other account is untouched; the first comes back when switched back.
    assert (await client.post(CHAT, json=tts(), headers=auth(TP))).status_code == 200
    await client.post("/_sim/accounts", json={"account": "*", "state": "ok"})
    assert (await client.post(CHAT, json=tts(), headers=auth(SK))).status_code == 200
    described = (await client.get("/_sim/accounts")).json()
    assert described["requests"][account_name(SK)] == 2


async def test_a_bad_state_request_is_a_400_naming_the_shape(make: Make) -> None:
    client, _ = make()
    answer = await client.post("/_sim/accounts", content=json.dumps({"state": "broke"}))
    assert answer.status_code == 400
    assert "insufficient_funds" in answer.text


async def test_per_key_quotas_are_separate(make: Make) -> None:
    quota = quota_from_options(rpm={"*": 2}, window_s=60)
    client, _ = make(quota=quota, per_key_quota=True)
    statuses = {
        key: [(await client.post(CHAT, json=tts(), headers=auth(key))).status_code
              for _ in range(3)]
        for key in (SK, "sk-second-account")
    }  # fmt: skip
    assert statuses == {SK: [200, 200, 429], "sk-second-account": [200, 200, 429]}
    shared, _ = make(quota=quota_from_options(rpm={"*": 2}, window_s=60))
    codes = [(await shared.post(CHAT, json=tts(), headers=auth(k))).status_code
             for k in (SK, "sk-second-account", "sk-third")]  # fmt: skip
    assert codes == [200, 200, 429]
