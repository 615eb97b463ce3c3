"""The reusable test receiver (tests/support/receiver.py) does what it promises."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from tests.support.receiver import Receiver, Response


def test_records_requests_and_answers_from_the_queue_then_200(receiver: Receiver) -> None:
    receiver.respond(Response(503, headers={"Retry-After": "3"}, body=b"busy"), Response(201))
    with httpx.Client() as client:
        first = client.post(receiver.url("/a?x=1"), content=b"\x00raw", headers={"X-K": "v"})
        second = client.put(receiver.url("/b"), json={"k": 1})
        third = client.get(receiver.url("/c"))
    assert (first.status_code, first.headers["retry-after"], first.content) == (503, "3", b"busy")
    assert (second.status_code, third.status_code) == (201, 200)
    a, b, c = receiver.wait_for(3, timeout=1)
    assert (a.method, a.path, a.body, a.headers["x-k"]) == ("POST", "/a?x=1", b"\x00raw", "v")
    assert (b.method, b.json()) == ("PUT", {"k": 1})
    assert (c.method, c.body) == ("GET", b"")
    assert a.received_at <= b.received_at <= c.received_at


def test_chunked_request_bodies_are_read_whole(receiver: Receiver) -> None:
    def parts() -> object:
        yield b"hello, "
        yield b"world"

    with httpx.Client() as client:
        client.post(receiver.url(), content=parts())  # type: ignore[arg-type]
    [request] = receiver.wait_for(1, timeout=1)
    assert request.headers["transfer-encoding"] == "chunked"
    assert request.body == b"hello, world"


def test_down_refuses_connections_and_up_reuses_the_port(receiver: Receiver) -> None:
    port = receiver.port
    receiver.down()
    with pytest.raises(httpx.ConnectError), httpx.Client() as client:
        client.post(receiver.url())
    receiver.up()
    assert receiver.port == port
    with httpx.Client() as client:
        assert client.post(receiver.url()).status_code == 200
    assert len(receiver.wait_for(1, timeout=1)) == 1


def test_wait_for_times_out_with_a_count(receiver: Receiver) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        receiver.wait_for(1, timeout=0.05)


def test_a_held_answer_waits_for_its_event(receiver: Receiver) -> None:
    release = threading.Event()
    receiver.respond(Response(200, hold=release))
    with httpx.Client(timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(receiver.url())
        assert len(receiver.wait_for(1, timeout=1)) == 1  # it arrived; only the answer waits
        release.set()
        assert client.post(receiver.url()).status_code == 200


def test_close_releases_held_answers() -> None:
    release = threading.Event()
    rx = Receiver().up()
    rx.respond(Response(200, hold=release))
    result: list[int] = []

    def call() -> None:
        with httpx.Client() as client:
            result.append(client.post(rx.url()).status_code)

    caller = threading.Thread(target=call)
    caller.start()
    rx.wait_for(1, timeout=2)
    rx.close()
    caller.join(timeout=5)
    assert release.is_set() and result == [200]


def test_accepted_sockets_have_nagle_disabled(receiver: Receiver) -> None:
    seen: list[int] = []
    server = receiver._server
    assert server is not None
    original = server.get_request

    def spy() -> tuple[socket.socket, object]:
        sock, addr = original()
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return sock, addr

    server.get_request = spy  # type: ignore[method-assign]
    with httpx.Client() as client:
        client.post(receiver.url())
    assert seen and all(seen)
