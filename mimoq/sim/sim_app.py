"""The simulated MiMo as an ASGI app: ``POST /v1/chat/completions`` and a ``/_sim/`` control API."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from mimoq.core import dialect_constants as dc
from mimoq.sim import bodies
from mimoq.sim.audio_gen import iter_base64, plan_speech
from mimoq.sim.audio_read import hear
from mimoq.sim.faults import ErrorBodyStyle, Fault, FaultKind, parse_faults
from mimoq.sim.quota import SimQuota
from mimoq.sim.sim_accounts import EVERY_ACCOUNT, AccountState, Denied, SimAccounts
from mimoq.sim.sim_config import SimConfig
from mimoq.sim.state import SimState
from mimoq.sim.validate import (
    OutputFormat,
    SimRequestError,
    SpeechRequest,
    TranscriptionRequest,
    parse_json,
    validate_request,
)

CHAT_PATH: Final = "/v1/chat/completions"
MODELS_PATH: Final = "/v1/models"
CONTROL_PREFIX: Final = "/_sim"
#: Bodies past this get a 413 without being read further (a 10 MB data URI plus its JSON
#: fits comfortably, so oversized audio still gets MiMo's own 400).
MAX_BODY_BYTES: Final = 32 << 20


class SimulatedDisconnectError(Exception):
    """Raised mid-body on purpose (a ``disconnect`` fault): the server drops the connection."""


class _ClientGoneError(Exception):
    """The client went away before its request body arrived."""


@dataclass
class Reply:
    """A response to send: status, body parts (maybe lazy), their total length, extras."""

    status: int
    parts: Iterable[bytes]
    length: int
    content_type: str = bodies.JSON_TYPE
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: Send only this many body bytes, then drop the connection.
    cut_after: int | None = None

    @classmethod
    def of(cls, status: int, body: bytes, content_type: str = bodies.JSON_TYPE) -> Reply:
        return cls(status, [body], len(body), content_type)


def error_reply(
    status: int,
    *,
    style: ErrorBodyStyle = ErrorBodyStyle.WRAPPED,
    message: str | None = None,
    param: str | None = None,
    retry_after: str | None = None,
) -> Reply:
    """An error in one of MiMo's shapes, with ``Retry-After`` when given."""
    body, content_type = bodies.error_body(status, style=style, message=message, param=param)
    reply = Reply.of(status, body, content_type)
    if retry_after is not None:
        reply.headers.append((b"retry-after", retry_after.encode("latin-1")))
    return reply


def _offered_keys(headers: dict[str, str]) -> list[str]:
    """The keys a request offers: ``Authorization: Bearer`` and/or ``api-key``."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    offered = [token.strip()] if scheme.lower() == "bearer" and token.strip() else []
    if headers.get("api-key", "").strip():
        offered.append(headers["api-key"].strip())
    return offered


def _denied_reply(exc: Denied) -> Reply:
    style = ErrorBodyStyle.UNWRAPPED if exc.unwrapped else ErrorBodyStyle.WRAPPED
    return error_reply(exc.status, style=style, message=exc.message)


def _json_reply(value: Any, status: int = 200) -> Reply:
    return Reply.of(status, json.dumps(value, separators=(",", ":")).encode())


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def wants_audio(accept: str | None) -> bool:
    """True when an ``Accept`` header names any audio type (MiMo answers those with 406)."""
    ranges = (part.split(";")[0].strip().lower() for part in (accept or "").split(","))
    return any(r.startswith("audio/") for r in ranges)


async def _client_left_within(receive: Receive, delay_s: float) -> bool:
    """Wait ``delay_s`` (simulated upstream work); True, early, if the client hung up."""

    async def until_gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    gone = asyncio.ensure_future(until_gone())
    try:
        done, _ = await asyncio.wait({gone}, timeout=delay_s)
    finally:
        gone.cancel()
    return bool(done)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when it exceeds ``MAX_BODY_BYTES``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse(body: bytes | None) -> tuple[Any, SimRequestError | None]:
    """The body's JSON value, or the 400 to answer with (kept until validation's turn)."""
    if body is None:
        return None, None
    try:
        return parse_json(body), None
    except SimRequestError as exc:
        return None, exc


def _corrupt(chunks: Iterable[bytes], at: int) -> Iterator[bytes]:
    """Pass base64 chunks through, replacing the 4-character group at offset ``at`` with '!'s."""
    pos = 0
    for chunk in chunks:
        if pos <= at < pos + len(chunk):
            # Every chunk is a whole number of 4-char groups, so the group stays in this chunk.
            i = (at - pos) - (at - pos) % 4
            chunk = chunk[:i] + b"!!!!" + chunk[i + 4 :]
        pos += len(chunk)
        yield chunk


class SimApp:
    """The ASGI app. ``state`` is the in-process handle on its faults and statistics.

    Routes: ``POST /v1/chat/completions`` (MiMo), and the control API:
    ``POST /_sim/faults`` (one fault object or a list, see ``faults.Fault``),
    ``GET /_sim/faults`` (pending), ``DELETE /_sim/faults``, ``GET /_sim/stats``,
    ``POST /_sim/reset`` (faults, counters, and the quota policy's window if it has ``reset``),
    ``GET /_sim/accounts`` and ``POST /_sim/accounts`` (``{"account": NAME or "*", "state":
    ...}``, see ``mimoq.sim.sim_accounts``); ``GET /v1/models`` lists the audio models.

    Order of checks for a chat request: API key, host family and account state (401/402/403),
    ``Accept`` (406), body size (413),
    then the next matching fault is taken (a ``status`` fault answers at once), then the
    request is validated (400/404), failed at random (``fail_rate``), admitted by the quota
    policy (429), delayed, and answered (streamed).
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.state = SimState(config.seed, config.faults)
        self._control_routes: dict[tuple[str, str], Callable[[bytes], Reply]] = {
            ("/faults", "POST"): self._add_faults,
            ("/faults", "GET"): lambda _: _json_reply({"pending": self.state.pending_faults()}),
            ("/faults", "DELETE"): lambda _: self._done(self.state.clear_faults),
            ("/stats", "GET"): lambda _: _json_reply(self._stats()),
            ("/reset", "POST"): lambda _: self._done(self._reset),
            ("/accounts", "GET"): lambda _: _json_reply(self.accounts.describe()),
            ("/accounts", "POST"): self._set_account_state,
        }
        keys = [k for k in (config.api_key, *config.api_keys) if k]
        quota = config.quota
        factory = None
        if config.per_key_quota and isinstance(quota, SimQuota):
            factory = lambda: SimQuota(quota.config)  # noqa: E731 (a fresh window per account)
        self.accounts = SimAccounts(keys, family=config.family, quota_factory=factory)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        try:
            if path == CHAT_PATH:
                await self._chat(scope, receive, send)
            elif path == MODELS_PATH:
                await self._send(send, self._models(scope), counted=True)
            elif path.startswith(CONTROL_PREFIX + "/"):
                await self._control(scope, receive, send)
            else:
                await self._send(send, error_reply(404, param=f"no route {path}"))
        except _ClientGoneError:
            return

    # --- the MiMo endpoint ----------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await self._send(send, error_reply(405, param=f"use POST {CHAT_PATH}"))
            return
        self.state.enter()
        try:
            # Callbacks registered here (quota release, usage) run once the reply is sent.
            with ExitStack() as after_send:
                reply = await self._answer(scope, receive, after_send)
                await self._send(send, reply, counted=True)
        finally:
            self.state.leave()

    async def _answer(self, scope: Scope, receive: Receive, after_send: ExitStack) -> Reply:
        # The body is read first only so that every request is counted under its model; the
        # answers still come in MiMo's order: auth, Accept, then the body's content.
        body = await _read_body(receive)
        data, parse_error = _parse(body)
        model = data.get("model") if isinstance(data, dict) else None
        model = model if isinstance(model, str) else None
        self.state.count_request(model)
        call = self.state.log_call(body)
        headers = _headers(scope)
        try:
            account = self.accounts.account_for(_offered_keys(headers), billing=True)
        except Denied as exc:
            return _denied_reply(exc)
        if wants_audio(headers.get("accept")):
            return error_reply(406, param="Accept must allow application/json")
        if body is None:
            return error_reply(413, param=f"request body exceeds {MAX_BODY_BYTES} bytes")
        fault = self.state.take_fault(body, speech=model in dc.SPEECH_MODELS)
        if fault is not None and fault.kind is FaultKind.STATUS:
            return error_reply(
                fault.status, style=fault.body, message=fault.message, retry_after=fault.retry_after
            )
        try:
            if parse_error is not None:
                raise parse_error
            request = validate_request(data, max_text_chars=self.config.max_text_chars)
        except SimRequestError as exc:
            return error_reply(exc.status, param=exc.param)
        rng = self.state.rng
        if self.config.fail_rate and rng.random() < self.config.fail_rate:
            return error_reply(rng.choice(self.config.fail_statuses))
        if isinstance(request, SpeechRequest):
            (reply, tokens), chars = self._speech(request, fault), len(request.text)
        else:
            (reply, tokens), chars = self._transcription(request, fault), 0
        rejected = self._admit(request.model, tokens, after_send, account)
        if rejected is not None:
            return rejected
        delay_s = self._latency_s(chars, fault)
        if delay_s > 0 and await _client_left_within(receive, delay_s):
            # simulated upstream work, cut short as MiMo would when the client hangs up
            call.client_gone_at = time.time()
            self.state.count_disconnect()
            raise _ClientGoneError
        if fault is not None and fault.kind is FaultKind.DISCONNECT:
            # Always short of the whole body: a drop after the last byte would be no drop.
            cut = reply.length // 2 if fault.after_bytes is None else fault.after_bytes
            reply.cut_after = min(cut, reply.length - 1)
        return reply

    def _speech(self, request: SpeechRequest, fault: Fault | None) -> tuple[Reply, int]:
        config = self.config
        forced = config.audio_bytes_override
        if fault is not None and fault.kind is FaultKind.AUDIO_BYTES:
            forced = fault.audio_bytes
        audio = plan_speech(
            request.text,
            wav=request.format is OutputFormat.WAV,
            sample_rate=config.sample_rate,
            seconds_per_char=config.speech_seconds_per_char,
            min_s=config.min_speech_s,
            data_bytes=forced,
            embed_text=config.wav_text_chunk,
        )
        usage = bodies.speech_usage(request.text, request.instructions, audio.duration_s)
        shown = None if config.omit_usage else usage
        if fault is not None and fault.kind is FaultKind.EMPTY_AUDIO:
            body = bodies.speech_without_audio(request.model, shown, fault.data)
            return Reply.of(200, body), usage["total_tokens"]
        self.state.count_audio(request.model, produced_s=audio.duration_s, chars=len(request.text))
        head, tail = bodies.speech_frame(request.model, shown)
        chunks: Iterable[bytes] = iter_base64(audio, config.stream_chunk_bytes)
        if fault is not None and fault.kind is FaultKind.MALFORMED_BASE64:
            chunks = _corrupt(chunks, audio.b64_chars // 2)
        length = len(head) + audio.b64_chars + len(tail)
        return Reply(200, itertools.chain([head], chunks, [tail]), length), usage["total_tokens"]

    def _transcription(
        self, request: TranscriptionRequest, fault: Fault | None
    ) -> tuple[Reply, int]:
        heard = hear(request.mime, request.audio)
        usage = bodies.transcription_usage(heard.duration_s, heard.transcript)
        empty = fault is not None and fault.kind is FaultKind.EMPTY_AUDIO
        if not empty:
            self.state.count_audio(request.model, heard_s=heard.duration_s)
        body = bodies.transcription_answer(
            request.model,
            "" if empty else heard.transcript,
            None if self.config.omit_usage else usage,
        )
        return Reply.of(200, body), usage["total_tokens"]

    def _admit(self, model: str, tokens: int, after_send: ExitStack, account: str) -> Reply | None:
        quota = self.accounts.quota(account, self.config.quota)
        if quota is None:
            return None
        admitted = quota.admit(model, tokens)
        if isinstance(admitted, int | float):
            self.state.count_quota_rejection(model)
            send = self.config.quota_retry_after
            if send is None:  # defer to the policy, if it has an opinion
                send = bool(getattr(quota, "send_retry_after", False))
            retry_after = str(max(0, math.ceil(admitted))) if send else None
            return error_reply(429, retry_after=retry_after)
        after_send.callback(admitted.release)
        after_send.callback(quota.record_usage, model, tokens)  # LIFO: runs before release
        return None

    def _latency_s(self, text_chars: int, fault: Fault | None) -> float:
        ms = self.config.sample_latency_ms(self.state.rng, text_chars)
        if fault is not None and fault.kind is FaultKind.LATENCY:
            ms += fault.ms
        return ms / 1000

    async def _send(self, send: Send, reply: Reply, *, counted: bool = False) -> None:
        if counted:  # only answers of the MiMo endpoint are statistics; control calls are not
            self.state.count_response(reply.status)
        headers = [
            (b"content-type", reply.content_type.encode()),
            (b"content-length", str(reply.length).encode()),
            *reply.headers,
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        sent = 0
        for part in reply.parts:
            if reply.cut_after is not None and sent + len(part) >= reply.cut_after:
                part = part[: reply.cut_after - sent]
                await send({"type": "http.response.body", "body": part, "more_body": True})
                self.state.count_disconnect()
                raise SimulatedDisconnectError(f"connection dropped after {reply.cut_after} bytes")
            await send({"type": "http.response.body", "body": part, "more_body": True})
            sent += len(part)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # --- the control API ------------------------------------------------------------------

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._control_routes.get((scope["path"][len(CONTROL_PREFIX) :], scope["method"]))
        if route is None:
            await self._send(send, error_reply(404, param=f"no route {scope['path']}"))
            return
        body = await _read_body(receive)
        await self._send(send, route(body or b""))

    def _add_faults(self, body: bytes) -> Reply:
        try:
            faults = parse_faults(body)
        except ValidationError as exc:
            return error_reply(400, param=str(exc))
        self.state.add_faults(faults)
        return _json_reply({"pending": self.state.pending_faults()})

    def _stats(self) -> dict[str, Any]:
        stats = self.state.stats()
        # A policy with its own counters (mimoq.sim.quota.SimQuota) shows them too.
        quota_stats = getattr(self.config.quota, "stats", None)
        if callable(quota_stats):
            stats["quota"] = quota_stats()
        return stats

    def _models(self, scope: Scope) -> Reply:
        """``GET /v1/models``: the audio models, to a key that may use this host."""
        if scope["method"] != "GET":
            return error_reply(405, param=f"use GET {MODELS_PATH}")
        try:
            self.accounts.account_for(_offered_keys(_headers(scope)), billing=False)
        except Denied as exc:
            return _denied_reply(exc)
        data = [{"id": m, "object": "model", "owned_by": "xiaomi"} for m in dc.ALL_MODELS]
        return _json_reply({"object": "list", "data": data})

    def _set_account_state(self, body: bytes) -> Reply:
        try:
            request = json.loads(body or b"{}")
            state = AccountState(request.get("state", ""))
            account = str(request.get("account") or EVERY_ACCOUNT)
        except (ValueError, AttributeError):
            states = ", ".join(s.value for s in AccountState)
            return error_reply(400, param=f'send {{"account": NAME or "*", "state": {states}}}')
        self.accounts.set_state(account, state)
        return _json_reply(self.accounts.describe())

    def _reset(self) -> None:
        self.state.reset()
        self.accounts.reset()
        quota_reset = getattr(self.config.quota, "reset", None)
        if callable(quota_reset):  # a fresh window, so benchmark phases do not interfere
            quota_reset()

    def _done(self, action: Callable[[], None]) -> Reply:
        action()
        return _json_reply({"ok": True})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(config: SimConfig) -> SimApp:
    """The simulator app for ``config`` (an ASGI callable; ``.state`` controls it in-process)."""
    return SimApp(config)
