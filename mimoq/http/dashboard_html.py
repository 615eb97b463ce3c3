"""The dashboard's HTML: server-rendered from one fleet snapshot, with an inline SVG chart.

Everything a caller or a job wrote (ids, error messages, hosts) is escaped; the page loads
nothing from anywhere (no scripts, no fonts, no CDN) and refreshes itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any, Final

REFRESH_S: Final = 5
_STYLE: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;justify-content:space-between}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px;padding:16px}
section{background:#fff;border-radius:6px;padding:12px 16px;box-shadow:0 1px 2px #0002;
overflow-x:auto}#dead-letters,#failures,#runs{grid-column:1/-1}
h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #eee;font-size:13px;
overflow-wrap:anywhere}
.num{text-align:right;font-variant-numeric:tabular-nums}.big{font-size:28px;font-weight:600}
.bad{color:#b3261e}.ok{color:#1b7f3b}.muted{color:#777}.note{background:#eef6ee;padding:6px}
button{cursor:pointer}form{display:inline}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str = "none") -> str:
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>{body}</table>"


def _ago(ts: object, now: float) -> str:
    if not isinstance(ts, int | float):
        return ""
    seconds = max(0.0, now - ts)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


_DEPTH_STATES: Final = ("queued", "waiting", "deferred", "in_flight")


def queue_section(snapshot: Mapping[str, Any]) -> str:
    """Every job not finished yet, by lane and kind (rows) and state (columns): queued,
    waiting for admission, deferred, in flight."""
    queue = snapshot.get("queue", {})
    cells: dict[tuple[str, str], dict[str, int]] = {}
    for row in queue.get("depth", []):
        lane, kind, state = str(row["lane"]), str(row["kind"]), str(row["state"])
        cells.setdefault((lane, kind), {})[state] = int(row["count"])
    rows = [
        [_e(lane), _e(kind)]
        + [f'<span class="num" data-depth="{_e(state)}-{_e(lane)}-{_e(kind)}">'
           f"{counts.get(state, 0)}</span>" for state in _DEPTH_STATES]
        for (lane, kind), counts in sorted(cells.items())
    ]  # fmt: skip
    total = int(queue.get("total", 0))
    headers = ["lane", "kind", "queued", "waiting", "deferred", "in flight"]
    return (
        f'<section id="queue"><h2>Queue</h2><div class="big" id="queue-total">{total}</div>'
        f'<p class="muted">jobs not finished</p>{_table(headers, rows, "empty")}'
        "</section>"
    )


def _eta_text(run: Mapping[str, Any], now: float) -> str:
    eta_s, eta_at = run.get("eta_s"), run.get("eta_at")
    if not isinstance(eta_s, int | float) or not isinstance(eta_at, int | float):
        return "unknown"
    clock = time.strftime("%H:%M:%S", time.gmtime(eta_at))
    return f"in {eta_s:.0f} s ({clock} UTC)"


def runs_section(runs: Sequence[Mapping[str, Any]], csrf: str, now: float) -> str:
    """Each run or HTTP batch not ended yet: a progress bar, its counts, its ETA (the
    fleet's grant rate and its share among the tenants, see docs/cancel.md, "Runs") and a cancel
    button (a POST checked like replay)."""
    rows = []
    for run in runs:
        name = _e(run.get("run"))
        total, done = (
            int(run.get("total") or 0),
            sum(int(run.get(k) or 0) for k in ("succeeded", "failed", "cancelled")),
        )
        bar = (f'<progress max="{max(total, 1)}" value="{done}" data-progress="{name}">'
               f"{done}/{total}</progress> {done}/{total}")  # fmt: skip
        counts = (
            f'<span data-run-counts="{name}">{int(run.get("succeeded") or 0)} ok, '
            f"{int(run.get('failed') or 0)} failed, {int(run.get('cancelled') or 0)} cancelled, "
            f"{int(run.get('in_flight') or 0)} in flight, {int(run.get('waiting') or 0)} waiting"
            "</span>"
        )
        button = (
            '<form method="post" action="/dashboard/cancel-run">'
            f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
            f'<input type="hidden" name="run" value="{name}">'
            f'<button type="submit" data-cancel-run="{name}">cancel</button></form>'
        )
        eta = f'<span data-eta="{name}">{_e(_eta_text(run, now))}</span>'
        rows.append([name, _e(run.get("tenant") or ""), _e(run.get("priority")), bar, counts,
                     eta, button])  # fmt: skip
    table = _table(["run", "tenant", "lane", "progress", "jobs", "ends", ""], rows,
                   "no run in progress")  # fmt: skip
    return f'<section id="runs"><h2>Runs</h2>{table}</section>'


def lanes_section(snapshot: Mapping[str, Any]) -> str:
    """Per model: the interactive and bulk lanes (slots held, grants last window), and the
    bulk jobs still waiting for admission, by tenant."""

    def pair(counts: Mapping[str, Any] | None) -> str:
        counts = counts or {}
        return f"{int(counts.get('interactive', 0))} / {int(counts.get('bulk', 0))}"

    rows = [
        [_e(s.get("model")), pair(s["lanes"].get("tickets")), pair(s["lanes"].get("recent"))]
        for s in snapshot.get("limiters", {}).get("limiters", [])
        if isinstance(s.get("lanes"), dict)
    ]
    waiting_rows = [
        [_e(model), _e(lane), _e(tenant),
         f'<span class="num" data-waiting="{_e(model)}-{_e(tenant)}{_e(suffix)}">'
         f"{int(count)}</span>"]
        for lane, field, suffix in (("bulk", "waiting", ""),
                                    ("interactive", "waiting_interactive", "-interactive"))
        for model, tenants in sorted((snapshot.get(field) or {}).items())
        for tenant, count in sorted(tenants.items())
    ]  # fmt: skip
    return (
        '<section id="lanes"><h2>Lanes <span class="muted">interactive / bulk</span></h2>'
        + _table(["model", "slots held", "grants last window"], rows, "limiter off")
        + '<p class="muted">waiting for admission</p>'
        + _table(["model", "lane", "tenant", "jobs"], waiting_rows)
        + "</section>"
    )


def in_flight_section(snapshot: Mapping[str, Any]) -> str:
    flight = snapshot.get("in_flight", {})
    rows = [[_e(j.get("id")), _e(j.get("kind")), _e(j.get("try"))] for j in flight.get("jobs", [])]
    return (
        f'<section id="in-flight"><h2>In flight</h2><div class="big">{int(flight.get("count", 0))}'
        f"</div>{_table(['job', 'kind', 'try'], rows)}</section>"
    )


def quota_chart(history: Mapping[str, Sequence[tuple[float, int]]], now: float) -> str:
    """One bar chart per model over the last hour (inline SVG): each bar is a sample, the
    requests in the limiter window that ended then (samples come twice a window)."""
    if not history:
        return '<p class="muted">no quota use recorded in the last hour</p>'
    width, height = 400, 80
    charts = []
    for model, points in sorted(history.items()):
        if not any(count for _, count in points):
            charts.append(f'<div class="muted">{_e(model)}: idle</div>')
            continue
        peak = max(count for _, count in points)
        bars = []
        for ts, count in points:
            x = width * (1 - (now - ts) / 3600)
            if x < 0:
                continue
            h = height * count / peak
            bars.append(
                f'<rect x="{x:.1f}" y="{height - h:.1f}" width="5" height="{h:.1f}" fill="#3b6fd8">'
                f"<title>{_e(count)} requests, {_e(_ago(ts, now))}</title></rect>"
            )
        charts.append(
            f'<div class="chart" data-model="{_e(model)}"><b>{_e(model)}</b> '
            f'<span class="muted">peak {peak} per window</span>'
            f'<svg viewBox="0 0 {width + 6} {height}" width="100%" height="{height}" role="img" '
            f'aria-label="requests per window for {_e(model)}">'
            f'<line x1="0" y1="{height}" x2="{width + 6}" y2="{height}" stroke="#ccc"/>'
            f"{''.join(bars)}</svg></div>"
        )
    return "".join(charts)


def quota_section(
    snapshot: Mapping[str, Any], history: Mapping[str, Sequence[tuple[float, int]]], now: float
) -> str:
    limiters = snapshot.get("limiters", {})
    if not limiters.get("enabled", False):
        body = '<p class="muted">the fleet limiter is off (MIMOQ_LIMITS_ENABLED=false)</p>'
    else:
        rows = [
            [_e(s.get("model")), _e(f"{s.get('requests_recent')} / {s.get('requests_configured')}"),
             _e(s.get("in_flight")), _e(s.get("tickets"))]
            for s in limiters.get("limiters", [])
        ]  # fmt: skip
        body = _table(["model", "last window", "in flight", "queued tickets"], rows)
    return (
        '<section id="quota"><h2>Quota use, last hour</h2>'
        f"{quota_chart(history, now)}{body}</section>"
    )


def failures_section(snapshot: Mapping[str, Any], now: float) -> str:
    recent = snapshot.get("failures", {}).get("recent", [])
    rows = []
    for f in recent:
        kind = f'<span class="bad">{_e(f.get("error_type"))}</span>'
        rows.append([_e(f.get("id")), _e(f.get("kind")), kind, _e(f.get("message")),
                     _e(_ago(f.get("finished_at"), now))])  # fmt: skip
    return f'<section id="failures"><h2>Recent failures</h2>{_table(["job", "kind", "error", "message", "when"], rows)}</section>'  # noqa: E501


def dead_letters_section(snapshot: Mapping[str, Any], csrf: str, now: float) -> str:
    letters = snapshot.get("dead_letters", {})
    rows = []
    for d in letters.get("newest", []):
        button = (
            '<form method="post" action="/dashboard/replay">'
            f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
            f'<input type="hidden" name="delivery_id" value="{_e(d.get("delivery_id"))}">'
            f'<button type="submit" data-replay="{_e(d.get("delivery_id"))}">replay</button></form>'
        )
        rows.append([_e(d.get("delivery_id")), _e(d.get("job_id")), _e(d.get("reason")),
                     _e(d.get("attempts")), _e(d.get("last_error")), _e(d.get("target")),
                     _e(_ago(d.get("dead_at"), now)), button])  # fmt: skip
    count = int(letters.get("count", 0))
    retention = letters.get("retention_s")
    kept = (
        f'<p class="muted">kept <span id="dead-retention">{_e(duration_text(retention))}</span>'
        " after a delivery gives up (MIMOQ_DEAD_LETTER_TTL_S): replay before then</p>"
        if isinstance(retention, int | float)
        else ""
    )
    return (
        f'<section id="dead-letters"><h2>Dead letters <span class="muted" id="dead-count">{count}'
        f"</span></h2>{kept}"
        + _table(["delivery", "job", "reason", "tries", "last error", "target", "when", ""], rows)
        + "</section>"
    )


def duration_text(seconds: float) -> str:
    """A retention as an operator sets it: whole days, hours or minutes when it is one."""
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g} s"
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if whole % size == 0:
            return f"{whole // size} {unit}"
    return f"{whole} s"


def scaling_section(snapshot: Mapping[str, Any]) -> str:
    """The autoscaling signal: the workers the fleet needs now (``mimoq_desired_workers``,
    the gauge /metrics exports), and the figures it came from (docs/production.md,
    "Autoscaling")."""
    desired = snapshot.get("desired_workers") or {}
    if "workers" not in desired:
        return '<section id="scaling"><h2>Autoscaling</h2><p class="muted">unknown</p></section>'
    cap = desired.get("cap_slots")
    cap_text = "no cap (limits off)" if cap is None else f"quota feeds {cap:g} slots"
    return (
        '<section id="scaling"><h2>Autoscaling</h2>'
        f'<div class="big" id="desired-workers">{int(desired["workers"])}</div>'
        '<p class="muted">desired workers (mimoq_desired_workers): '
        f"{int(desired.get('jobs') or 0)} jobs need {float(desired.get('demand_slots') or 0):g} "
        f"slots, {_e(cap_text)}, {int(desired.get('concurrency') or 0)} slots a worker</p>"
        "</section>"
    )


def workers_section(snapshot: Mapping[str, Any], now: float) -> str:
    workers = snapshot.get("workers", {})
    rows = [
        [_e(w.get("worker_id")), _e(w.get("host")), _e(w.get("pid")),
         f'<span class="{"ok" if w.get("live") else "bad"}">'
         f'{_e(_ago(w.get("beat_at"), now))}</span>',
         _e(w.get("in_flight")), "draining" if w.get("draining") else ""]
        for w in workers.get("records", [])
    ]  # fmt: skip
    table = _table(["worker", "host", "pid", "heartbeat", "in flight", ""], rows)
    live = int(workers.get("live", 0))
    return (
        f'<section id="workers"><h2>Workers <span class="muted">{live} live</span></h2>'
        f"{table}</section>"
    )


def paused_section(snapshot: Mapping[str, Any], now: float) -> str:
    """Accounts the fleet's breaker paused (402s, auth failures, 429 storms), and models in
    a 429 cool-down."""
    rows = [
        [_e(p.get("account")), _e(p.get("reason")), _e(_ago(p.get("since"), now)),
         _e(p.get("probes")), _e(f"{float(p.get('next_probe_in_s') or 0):.0f} s")]
        for p in snapshot.get("accounts_paused") or []
    ]  # fmt: skip
    cooling = [
        s for s in snapshot.get("limiters", {}).get("limiters", [])
        if (s.get("cooldown_remaining_s") or 0) > 0
    ]  # fmt: skip
    rows += [[_e(s.get("model")), "429 cool-down", "", "", f"{s['cooldown_remaining_s']:.1f} s"]
             for s in cooling]  # fmt: skip
    table = _table(["account / model", "why", "since", "probes", "next probe"], rows)
    return f'<section id="paused"><h2>Paused accounts</h2>{table}</section>'


def _utc(ts: object) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(str(ts))))
    except (TypeError, ValueError):
        return ""


def usage_section(snapshot: Mapping[str, Any]) -> str:
    """Each tenant's usage over the last day, and its use of its limits (MIMOQ_TENANT_LIMITS);
    a tenant held at a limit shows as held, with the time its window frees."""
    report = snapshot.get("usage") or {}
    rows = [
        [_e(r["tenant"]), _e(r["model"]), _e(r["requests"]), _e(r["failed"]),
         _e(r["audio_s"]), _e(r["chars"]), _e(r["tokens"])]
        for r in report.get("usage", [])
    ]  # fmt: skip
    used = _table(["tenant", "model", "requests", "failed", "audio s", "chars", "tokens"], rows)
    limit_rows = [
        [_e(r["tenant"]), _e(f"{r['metric']}={r['limit']:g}/{r['window']}"),
         _e(f"{r['used']:g} of {r['limit']:g}"),
         f'<span class="bad">held until {_e(_utc(r["frees_at"]))}</span>' if r["held"]
         else f'<span class="ok">ok</span> <span class="muted">window frees '
              f'{_e(_utc(r["frees_at"]))}</span>']
        for r in report.get("limits", [])
    ]  # fmt: skip
    limits = _table(["tenant", "limit", "used", "state"], limit_rows, "no limits set")
    return (
        '<section id="usage"><h2>Usage by tenant <span class="muted">last 24 h</span></h2>'
        f"{used}<h3>Limits</h3>{limits}</section>"
    )


def page(
    snapshot: Mapping[str, Any],
    history: Mapping[str, Sequence[tuple[float, int]]],
    *,
    tenant: str,
    csrf: str,
    notice: str | None,
    runs: Sequence[Mapping[str, Any]] = (),
) -> str:
    now = float(snapshot.get("at") or time.time())
    note = f'<p class="note" id="notice">{_e(notice)}</p>' if notice else ""
    logout = (
        '<form method="post" action="/logout">'
        f'<input type="hidden" name="csrf" value="{_e(csrf)}"><button>log out</button></form>'
    )
    sections = [
        queue_section(snapshot), runs_section(runs, csrf, now), lanes_section(snapshot),
        in_flight_section(snapshot),
        quota_section(snapshot, history, now),
        failures_section(snapshot, now), dead_letters_section(snapshot, csrf, now),
        workers_section(snapshot, now), scaling_section(snapshot), paused_section(snapshot, now),
        usage_section(snapshot),
    ]  # fmt: skip
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{REFRESH_S}"><title>mimoq</title>'
        f"<style>{_STYLE}</style></head><body><header><b>mimoq</b>"
        f"<span>{_e(tenant)} {logout}</span></header>{note}<main>{''.join(sections)}</main>"
        "</body></html>"
    )


def login_page(error: str | None = None) -> str:
    message = f'<p class="bad" id="login-error">{_e(error)}</p>' if error else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>mimoq: log in</title>"
        f"<style>{_STYLE}</style></head><body><header><b>mimoq</b></header><main><section>"
        "<h2>Log in</h2>" + message + '<form method="post" action="/login">'
        '<label>API token <input type="password" name="token" id="token" autocomplete="off" '
        'required></label> <button type="submit" id="login">log in</button></form>'
        "</section></main></body></html>"
    )
