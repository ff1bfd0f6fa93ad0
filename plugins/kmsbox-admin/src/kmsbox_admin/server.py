"""Serving the app with uvicorn: the bind rules, the listening socket and TLS.

The server listens on loopback unless told otherwise, and refuses any other
address without TLS: tokens and session cookies must not cross a network in clear.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from kmsbox.errors import ConfigError
from kmsbox_admin.settings import AdminSettings, is_loopback

__all__ = ["bind_socket", "check_bind", "make_server"]


def check_bind(settings: AdminSettings) -> None:
    """ConfigError for a non-loopback address without TLS, or TLS files that cannot be read."""
    if not settings.tls and not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to listen on {settings.host} without TLS: give --tls-cert and --tls-key "
            "(or tls_cert and tls_key in [admin]), or listen on 127.0.0.1"
        )
    for what, path in (("tls_cert", settings.tls_cert), ("tls_key", settings.tls_key)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"[admin] {what}: {path} is not a readable file")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def make_server(
    app: ASGIApp | Callable[..., object], settings: AdminSettings, *, log_level: str = "info"
) -> uvicorn.Server:
    """A uvicorn server for ``app`` with the settings' TLS files (not started)."""
    check_bind(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        log_level=log_level,
        access_log=False,  # the app logs each request with its actor instead
        server_header=False,
        proxy_headers=False,  # the peer address is the client: no proxy header is trusted
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)
