"""The dashboard's signed session cookie and its CSRF token."""

from __future__ import annotations

from mimoq.http import session_cookie

KEY = session_cookie.signing_key(["alice:" + "a" * 20])


def test_cookie_round_trip_expiry_and_tampering() -> None:
    cookie = session_cookie.issue(KEY, "alice", now=1000.0)
    assert session_cookie.verify(KEY, cookie, now=1000.0 + 60) == "alice"
    assert session_cookie.verify(KEY, cookie, now=1000.0 + session_cookie.LIFETIME_S + 1) is None
    tenant, expires, signature = cookie.split("|")
    assert session_cookie.verify(KEY, f"bob|{expires}|{signature}", now=1000.0) is None
    assert (
        session_cookie.verify(KEY, f"{tenant}|{int(expires) + 999}|{signature}", now=1000.0) is None
    )
    assert (
        session_cookie.verify(session_cookie.signing_key(["other:" + "b" * 20]), cookie, now=1000.0)
        is None
    )
    for junk in (None, "", "a|b", "a|b|c|d"):
        assert session_cookie.verify(KEY, junk, now=1000.0) is None
    assert "a" * 20 not in cookie  # never the token


def test_csrf_token_is_bound_to_the_session() -> None:
    one, two = (
        session_cookie.issue(KEY, "alice", now=1.0),
        session_cookie.issue(KEY, "alice", now=2.0),
    )
    assert session_cookie.csrf_token(KEY, one) == session_cookie.csrf_token(KEY, one)
    assert session_cookie.csrf_token(KEY, one) != session_cookie.csrf_token(KEY, two)
