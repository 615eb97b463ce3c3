"""What `mimoq usage` and the dashboard show of usage and limits, from one report."""

from __future__ import annotations

import json

from arq.connections import ArqRedis

from mimoq.cli.usage import render
from mimoq.core import wire
from mimoq.core.tenant_limits import DAY_S, HOUR_S, parse_tenant_limits
from mimoq.core.usage_windows import UsageEntry, record, usage_report
from mimoq.http.dashboard_html import usage_section

T0 = 1_765_000_800.0
LIMITS = parse_tenant_limits("alpha:requests=2/1h;*:requests=100/1d")


async def report_with_alpha_held(backend: ArqRedis) -> dict[str, object]:
    windows = LIMITS.windows()
    for tenant, model in (("alpha", "mimo-v2.5-tts"), ("alpha", "mimo-v2.5-asr"),
                          ("beta", "mimo-v2.5-tts")):  # fmt: skip
        await record(backend, UsageEntry(tenant, model, {"requests": 1, "chars": 5}), windows, T0)
    mark = {"frees_at": int(T0) + HOUR_S, "reason": "tenant_limit: ..."}
    await backend.set(wire.tenant_held_key("alpha"), json.dumps(mark), ex=60)
    return await usage_report(backend, LIMITS, since_s=DAY_S, now=T0 + 1)


async def test_the_report_names_each_tenants_limits_and_who_is_held(backend: ArqRedis) -> None:
    report = await report_with_alpha_held(backend)
    limits = {(r["tenant"], r["metric"], r["window"]): r for r in report["limits"]}  # type: ignore[attr-defined]
    alpha = limits[("alpha", "requests", "1h")]
    assert alpha["used"] == 2 and alpha["held"] and alpha["frees_at"] == int(T0) + HOUR_S
    beta = limits[("beta", "requests", "1d")]  # the * default
    assert beta["used"] == 1 and not beta["held"]
    assert report["held"] == {"alpha": int(T0) + HOUR_S}
    only = await usage_report(backend, LIMITS, since_s=DAY_S, now=T0 + 1, tenant="beta",
                              only_tenant=True)  # fmt: skip
    assert {r["tenant"] for r in only["usage"]} == {"beta"}
    assert [r["tenant"] for r in only["limits"]] == ["beta"] and only["held"] == {}


async def test_the_table_and_the_dashboard_show_a_held_tenant_and_when_it_frees(
    backend: ArqRedis,
) -> None:
    report = await report_with_alpha_held(backend)
    text = render(report)
    frees = "2025-12-06 07:00 UTC"  # T0 + 1 h
    assert "alpha   requests=2/1h" in text and f"{frees}  held" in text
    assert "beta    requests=100/1d" in text
    html = usage_section({"usage": report})
    assert "held until 2025-12-06 07:00:00 UTC" in html
    assert html.count("held until") == 1 and "mimo-v2.5-asr" in html
