"""Running the front door under uvicorn, with the connection limits a public server needs."""

from __future__ import annotations

from typing import Final

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from mimoq.core.logs import register_secrets
from mimoq.core.settings import Settings
from mimoq.http.app import build_app
from mimoq.http.auth import TokenTable, check_bind
from mimoq.http.dashboard import FleetView
from mimoq.http.metrics_route import check_metrics_token
from mimoq.http.protocol import protocol_with_head_timeout

#: An idle keep-alive connection is closed after this long.
KEEP_ALIVE_S: Final = 5
#: Largest request head (request line and headers) h11 buffers before refusing it.
MAX_HEAD_BYTES: Final = 16 * 1024


def config(
    settings: Settings,
    host: str,
    port: int,
    *,
    fleet: FleetView | None = None,
    embedded: bool = False,
) -> uvicorn.Config:
    """uvicorn's configuration; refuses a non-loopback host when no token is configured."""
    tokens = TokenTable(settings.http.token_list())
    check_bind(host, tokens)
    check_metrics_token(settings)
    register_secrets(*(entry.partition(":")[2] or entry for entry in settings.http.token_list()))
    if settings.http.metrics_token is not None:
        register_secrets(settings.http.metrics_token.get_secret_value().strip())
    return uvicorn.Config(
        build_app(settings, tokens, fleet),
        host=host,
        port=port,
        http=protocol_with_head_timeout(settings.http.header_timeout_s),
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        lifespan="on",
        access_log=False,
        server_header=False,
        # Behind a proxy, X-Forwarded-* would be trusted from anyone by default: never here.
        proxy_headers=False,
        log_config=None if embedded else LOGGING_CONFIG,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


def serve(settings: Settings, host: str, port: int, fleet: FleetView | None = None) -> None:
    """Serve in the foreground until SIGTERM or Ctrl-C (what ``mimoq serve`` runs)."""
    uvicorn.Server(config(settings, host, port, fleet=fleet)).run()
