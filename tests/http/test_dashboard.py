"""The dashboard in a real headless browser (Debian's chromium + chromedriver, via selenium):
log in, see a known queue depth and a dead letter, replay it, see it delivered."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mimoq.core import wire
from tests.conftest import RedisServer, free_port, start_redis_server
from tests.http.conftest import (
    ALICE,
    BOB,
    Stack,
    stack_env,
    start_server,
    start_worker,
    stop,
)
from tests.support.polling import wait_until
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow]

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def board(
    redis_server: RedisServer,
    sim: object,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """serve + worker with the fleet limiter on (2 s windows, so the quota chart fills fast)."""
    import redis as sync_redis

    sync_redis.Redis.from_url(redis_server.url).flushall()
    root = tmp_path_factory.mktemp("dashboard")
    env = stack_env(
        redis_server, sim, root / "data",  # type: ignore[arg-type]
        MIMOQ_LIMITS_ENABLED="true", MIMOQ_LIMIT_WINDOW_S="2", MIMOQ_LIMIT_DEFAULT_RPM="1000",
        MIMOQ_HTTP_DASHBOARD_TENANTS="alice",
    )  # fmt: skip
    port = free_port()
    worker = start_worker(env, root)
    server = start_server(env, root, port)
    try:
        yield Stack(f"http://127.0.0.1:{port}", port, root / "data", redis_server.url, sim, env)  # type: ignore[arg-type]
    finally:
        stop(server)
        stop(worker)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip(
            "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chrome'}"):  # fmt: skip
        options.add_argument(flag)
    chrome = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=driver)
    )
    try:
        yield chrome
    finally:
        chrome.quit()


async def pause_account(redis_url: str, account: str, *, pause: bool) -> None:
    """Trip (or reset) an account's breaker the way a worker does after a 402."""
    from redis.asyncio import Redis

    from mimoq.core.errors import PaymentRequiredError
    from mimoq.worker.accounts.breaker import Breaker

    redis = Redis.from_url(redis_url)
    try:
        breaker = Breaker(redis, probe_base_s=60, probe_max_s=600, pause_max_s=3600, trip_429s=5)
        if pause:
            await breaker.trip(account, PaymentRequiredError("balance exhausted", status=402))
        else:
            await breaker.resume(account)
    finally:
        await redis.aclose()


def make_dead_letter(board: Stack, receiver: Receiver) -> str:
    """A speech job whose callback receiver is down: its delivery gives up and is kept."""
    receiver.down()
    with httpx.Client(
        base_url=board.url, headers={"Authorization": f"Bearer {ALICE}"}, timeout=60
    ) as http:
        answer = http.post(
            "/v1/audio/speech",
            json={
                "input": "Call me back.",
                "voice": "Mia",
                "callback": {"url": receiver.url("/hook")},
            },
        )
    assert answer.status_code == 200
    redis = board.redis()
    wait_until(lambda: redis.zcard(wire.DEAD_LETTER_INDEX) == 1, what="the dead letter")
    member = redis.zrange(wire.DEAD_LETTER_INDEX, 0, 0)[0]
    return member.decode()


def test_login_depth_dead_letter_replay_in_a_browser(
    board: Stack, receiver: Receiver, browser: object, tmp_path: Path
) -> None:
    delivery_id = make_dead_letter(board, receiver)
    redis = board.redis()
    script = redis.register_script(wire.enqueue_script())
    for i in range(3):  # known depth: three speech jobs deferred by an hour, from raw Redis
        script(
            keys=wire.enqueue_keys(f"later-{i}"),
            args=[f"later-{i}", json.dumps({"kind": "speech", "input": "x"}), 3_600_000],
        )

    b = browser
    b.get(board.url + "/")  # type: ignore[attr-defined]
    assert b.current_url.endswith("/login")  # type: ignore[attr-defined]
    b.find_element(By.ID, "token").send_keys("tok-not-a-real-token-000")  # type: ignore[attr-defined]
    b.find_element(By.ID, "login").click()  # type: ignore[attr-defined]
    error = wait_until(lambda: b.find_elements(By.ID, "login-error"), what="the login error")  # type: ignore[attr-defined]
    assert isinstance(error, list) and "not valid" in error[0].text
    b.find_element(By.ID, "token").send_keys(ALICE)  # type: ignore[attr-defined]
    b.find_element(By.ID, "login").click()  # type: ignore[attr-defined]
    # click() may return before the form's navigation (and its Set-Cookie) is done.
    wait_until(lambda: b.find_elements(By.ID, "queue"), what="the dashboard after logging in")  # type: ignore[attr-defined]

    def depth() -> str:
        b.get(board.url + "/")  # type: ignore[attr-defined]
        return str(
            b.find_element(By.CSS_SELECTOR, '[data-depth="deferred-interactive-speech"]').text
        )  # type: ignore[attr-defined]

    assert depth() == "3"
    assert b.find_element(By.ID, "queue-total").text == "3"  # type: ignore[attr-defined]
    assert delivery_id in b.find_element(By.ID, "dead-letters").text  # type: ignore[attr-defined]
    assert b.find_element(By.ID, "dead-count").text == "1"  # type: ignore[attr-defined]
    assert "1 live" in b.find_element(By.ID, "workers").text  # type: ignore[attr-defined]
    # The limiter is on here: each model's interactive / bulk lanes are shown.
    assert "mimo-v2.5-tts" in b.find_element(By.ID, "lanes").text  # type: ignore[attr-defined]

    # The quota chart fills as the limiter's windows are sampled (twice per 2 s window here);
    # under load a sample may come late, so keep the model busy until a bar shows.
    def bar() -> object:
        with httpx.Client(
            base_url=board.url, headers={"Authorization": f"Bearer {ALICE}"}, timeout=60
        ) as http:
            assert (
                http.post("/v1/audio/speech", json={"input": "Tick.", "voice": "Mia"}).status_code
                == 200
            )
        b.get(board.url + "/")  # type: ignore[attr-defined]
        return b.find_elements(By.CSS_SELECTOR, '.chart[data-model="mimo-v2.5-tts"] rect')  # type: ignore[attr-defined]

    wait_until(bar, what="a quota bar")
    b.save_screenshot(str(tmp_path / "dashboard-dead-letter.png"))  # type: ignore[attr-defined]

    receiver.up()
    before = len(receiver.requests)
    b.find_element(By.CSS_SELECTOR, f'[data-replay="{delivery_id}"]').click()  # type: ignore[attr-defined]
    # A form submission's navigation may still be under way when click() returns: wait for it.
    notice = wait_until(lambda: b.find_elements(By.ID, "notice"), what="the replay notice")  # type: ignore[attr-defined]
    assert isinstance(notice, list) and f"replay of {delivery_id}: enqueued" in notice[0].text
    receiver.wait_for(before + 1, timeout=60)
    job_id = delivery_id.removeprefix("cb-")
    wait_until(lambda: json.loads(redis.get(wire.result_key(job_id)) or b"{}")["callback"]["status"] == "delivered",
             what="the callback to be delivered")  # fmt: skip
    wait_until(
        lambda: b.get(board.url + "/") or b.find_element(By.ID, "dead-count").text == "0",
        what="empty dead letters",
    )  # type: ignore[attr-defined]
    # An account the breaker paused (e.g. its balance ran out) is listed with the reason.
    asyncio.run(pause_account(board.redis_url, "acct-dashboard", pause=True))
    try:
        b.get(board.url + "/")  # type: ignore[attr-defined]
        paused = b.find_element(By.ID, "paused").text  # type: ignore[attr-defined]
        assert "acct-dashboard" in paused and "balance exhausted" in paused
        b.save_screenshot(str(tmp_path / "dashboard-replayed.png"))  # type: ignore[attr-defined]
    finally:
        asyncio.run(pause_account(board.redis_url, "acct-dashboard", pause=False))
    print("screenshots:", tmp_path)


def test_dashboard_refuses_forged_posts_and_other_tenants(board: Stack) -> None:
    with httpx.Client(base_url=board.url, timeout=30) as http:
        assert http.get("/").status_code == 303  # not logged in
        bob = http.post("/login", data={"token": BOB})
        assert bob.status_code == 303
        assert http.get("/").status_code == 403  # bob's tenant is not allowed here
    with httpx.Client(base_url=board.url, timeout=30) as http:
        login = http.post("/login", data={"token": ALICE})
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("samesite", "SameSite")
        assert ALICE not in cookie
        page = http.get("/")
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        # No CSRF token, a wrong one, or a right one from another origin: refused.
        assert http.post("/dashboard/replay", data={"delivery_id": "cb-x"}).status_code == 403
        assert (
            http.post(
                "/dashboard/replay", data={"delivery_id": "cb-x", "csrf": "forged"}
            ).status_code
            == 403
        )
        other = http.post("/dashboard/replay", data={"delivery_id": "cb-x", "csrf": csrf.group(1)},
                          headers={"Origin": "https://evil.example"})  # fmt: skip
        assert other.status_code == 403
        ours = http.post("/dashboard/replay", data={"delivery_id": "cb-x", "csrf": csrf.group(1)})
        assert ours.status_code == 303 and "outcome=not_found" in ours.headers["location"]
    # A session cookie that was tampered with is no session.
    with httpx.Client(
        base_url=board.url, timeout=30, cookies={"mimoq_session": "bob|9999999999|AAAA"}
    ) as http:
        assert http.get("/").status_code == 303


@pytest.fixture(scope="module")
def idle_board(sim: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """serve alone (no worker: nothing queued moves), on a Redis of its own."""
    server_redis = start_redis_server()
    root = tmp_path_factory.mktemp("idle-dashboard")
    env = stack_env(
        server_redis, sim, root / "data",  # type: ignore[arg-type]
        MIMOQ_HTTP_DASHBOARD_TENANTS="alice", MIMOQ_CONCURRENCY="4",
        MIMOQ_DEAD_LETTER_TTL_S="172800",
    )  # fmt: skip
    port = free_port()
    server = start_server(env, root, port)
    try:
        yield Stack(f"http://127.0.0.1:{port}", port, root / "data", server_redis.url, sim, env)  # type: ignore[arg-type]
    finally:
        stop(server)
        server_redis.close()


def log_in(b: object, url: str) -> None:
    b.get(url + "/login")  # type: ignore[attr-defined]
    b.find_element(By.ID, "token").send_keys(ALICE)  # type: ignore[attr-defined]
    b.find_element(By.ID, "login").click()  # type: ignore[attr-defined]
    wait_until(lambda: b.find_elements(By.ID, "queue"), what="the dashboard after logging in")  # type: ignore[attr-defined]


def test_queue_depth_counts_interactive_jobs_waiting_past_the_cap(
    idle_board: Stack, browser: object
) -> None:
    """#19: with no worker, 21 interactive jobs of one tenant are 16 queued and 5 waiting for
    admission, and the page says 21 jobs are not finished (it used to say 16)."""
    redis = idle_board.redis()
    redis.flushall()
    script = redis.register_script(wire.enqueue_script())
    flood = wire.INTERACTIVE_DIRECT + 5
    for i in range(flood):
        job = json.dumps({"kind": "speech", "input": "x", "tenant": "alpha"})
        assert script(keys=wire.enqueue_keys(f"i{i}"), args=[f"i{i}", job]) == 1
    b = browser
    log_in(b, idle_board.url)
    b.get(idle_board.url + "/")  # type: ignore[attr-defined]

    def cell(name: str) -> str:
        return str(b.find_element(By.CSS_SELECTOR, f'[data-depth="{name}"]').text)  # type: ignore[attr-defined]

    assert b.find_element(By.ID, "queue-total").text == str(flood)  # type: ignore[attr-defined]
    assert cell("queued-interactive-speech") == "16"
    assert cell("waiting-interactive-speech") == "5"
    lanes = b.find_element(By.ID, "lanes").text  # type: ignore[attr-defined]
    assert "interactive alpha 5" in lanes


def test_runs_panel_shows_progress_and_eta_and_cancels_a_run(
    idle_board: Stack, browser: object
) -> None:
    """A run (no worker: nothing moves) is listed with its bar, counts and ETA; its cancel
    button (a CSRF-checked POST) cancels every job of it, and it leaves the panel."""
    redis = idle_board.redis()
    redis.flushall()
    script = redis.register_script(wire.enqueue_script())
    for i in range(10):
        job = json.dumps({"kind": "speech", "input": f"n{i}", "priority": "bulk",
                          "tenant": "beta", "run": "nightly"})  # fmt: skip
        assert script(keys=wire.enqueue_keys(f"n{i}"), args=[f"n{i}", job]) == 1
    b = browser
    log_in(b, idle_board.url)
    b.get(idle_board.url + "/")  # type: ignore[attr-defined]
    runs = b.find_element(By.ID, "runs")  # type: ignore[attr-defined]
    assert "nightly" in runs.text and "beta" in runs.text and "bulk" in runs.text
    counts = b.find_element(By.CSS_SELECTOR, '[data-run-counts="nightly"]').text  # type: ignore[attr-defined]
    assert counts == "0 ok, 0 failed, 0 cancelled, 0 in flight, 10 waiting"
    bar = b.find_element(By.CSS_SELECTOR, '[data-progress="nightly"]')  # type: ignore[attr-defined]
    assert (bar.get_attribute("max"), bar.get_attribute("value")) == ("10", "0")
    eta = b.find_element(By.CSS_SELECTOR, '[data-eta="nightly"]').text  # type: ignore[attr-defined]
    assert re.fullmatch(r"in \d+ s \(\d\d:\d\d:\d\d UTC\)", eta), eta
    # a POST without the page's CSRF token is refused, and cancels nothing
    with httpx.Client(base_url=idle_board.url, timeout=30) as http:
        assert http.post("/login", data={"token": ALICE}).status_code == 303
        forged = http.post("/dashboard/cancel-run", data={"run": "nightly", "csrf": "forged"})
        assert forged.status_code == 403
    assert redis.hget("mimoq:run:nightly", "cancelled") is None
    b.find_element(By.CSS_SELECTOR, '[data-cancel-run="nightly"]').click()  # type: ignore[attr-defined]
    notice = wait_until(lambda: b.find_elements(By.ID, "notice"), what="the cancel notice")  # type: ignore[attr-defined]
    assert isinstance(notice, list) and "cancel of run nightly: 10 cancelled" in notice[0].text
    assert redis.hget("mimoq:run:nightly", "cancelled") == b"10"
    assert "no run in progress" in b.find_element(By.ID, "runs").text  # type: ignore[attr-defined]
    result = json.loads(redis.get(wire.result_key("n3")) or b"{}")
    assert result["status"] == "cancelled" and result["run"] == "nightly"


def test_cancelling_a_malformed_run_name_says_so(idle_board: Stack) -> None:
    """A forged or stale form naming no possible run is answered, not a 500."""
    with httpx.Client(base_url=idle_board.url, timeout=30) as http:
        assert http.post("/login", data={"token": ALICE}).status_code == 303
        page = http.get("/").text
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found is not None
        answer = http.post(
            "/dashboard/cancel-run",
            data={"run": "no good", "csrf": found.group(1)},
            headers={"Origin": idle_board.url},
        )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/?cancelled=no+good&outcome=not+a+run+name"


def test_dashboard_shows_desired_workers_and_dead_letter_retention(
    idle_board: Stack, browser: object
) -> None:
    """The autoscaling gauge as /metrics exports it (10 bulk jobs waiting, 4 slots a worker,
    limits off: 3 workers) and how long dead letters are kept (MIMOQ_DEAD_LETTER_TTL_S)."""
    redis = idle_board.redis()
    redis.flushall()
    script = redis.register_script(wire.enqueue_script())
    for i in range(10):
        job = json.dumps({"kind": "speech", "input": f"w{i}", "priority": "bulk", "tenant": "beta"})
        assert script(keys=wire.enqueue_keys(f"w{i}"), args=[f"w{i}", job]) == 1
    with httpx.Client(base_url=idle_board.url, timeout=30) as http:
        scraped = http.get("/metrics", headers={"Authorization": f"Bearer {ALICE}"})
    gauge = re.search(r"^mimoq_desired_workers (\S+)$", scraped.text, re.MULTILINE)
    assert gauge is not None and float(gauge.group(1)) == 3
    b = browser
    log_in(b, idle_board.url)
    b.get(idle_board.url + "/")  # type: ignore[attr-defined]
    assert b.find_element(By.ID, "desired-workers").text == "3"  # type: ignore[attr-defined]
    scaling = b.find_element(By.ID, "scaling").text  # type: ignore[attr-defined]
    assert "10 jobs need 10 slots, no cap (limits off), 4 slots a worker" in scaling
    assert b.find_element(By.ID, "dead-retention").text == "2 d"  # type: ignore[attr-defined]


def test_runs_panel_cancels_an_http_batch_as_the_batch_cancel_does(idle_board: Stack) -> None:
    """The cancel button on an HTTP batch (``batch_…``) cancels the batch object, not only its
    jobs: GET /v1/batches/{id} then answers cancelled with its counts (it stayed
    ``in_progress`` forever when the panel cancelled the run's jobs alone)."""
    idle_board.redis().flushall()
    rows = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/audio/speech",
             "body": {"model": "tts-1", "input": f"line {i}", "voice": "Mia"}} for i in range(6)]  # fmt: skip
    raw = "".join(json.dumps(row) + "\n" for row in rows).encode()
    auth = {"Authorization": f"Bearer {ALICE}"}
    with httpx.Client(base_url=idle_board.url, headers=auth, timeout=30) as api:
        upload = api.post(
            "/v1/files", files={"file": ("six.jsonl", raw)}, data={"purpose": "batch"}
        )
        assert upload.status_code == 200, upload.text
        body = {"input_file_id": upload.json()["id"], "endpoint": "/v1/audio/speech",
                "completion_window": "24h"}  # fmt: skip
        batch_id = api.post("/v1/batches", json=body).json()["id"]

        def status() -> str:
            return str(api.get(f"/v1/batches/{batch_id}").json()["status"])

        wait_until(lambda: status() == "in_progress", what="the batch's lines enqueued")
        with httpx.Client(base_url=idle_board.url, timeout=30) as board:
            assert board.post("/login", data={"token": ALICE}).status_code == 303
            page = board.get("/").text
            assert f'data-cancel-run="{batch_id}"' in page
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf is not None
            done = board.post("/dashboard/cancel-run", data={"run": batch_id, "csrf": csrf[1]})
        assert done.status_code == 303 and "outcome=6+cancelled" in done.headers["location"]
        batch = api.get(f"/v1/batches/{batch_id}").json()
    assert batch["status"] == "cancelled", batch
    assert batch["request_counts"] == {"total": 6, "completed": 0, "failed": 0}
    assert batch["cancelling_at"] is not None and batch["cancelled_at"] is not None
    redis = idle_board.redis()
    assert redis.hget(f"mimoq:run:{batch_id}", "cancelled") == b"6"
