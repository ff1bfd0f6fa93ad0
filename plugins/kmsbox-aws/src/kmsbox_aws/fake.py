"""A fake AWS KMS on loopback: moto's server behind kmsbox's fault injector.

The official boto3 client talks to it over a real socket (``AWS_ENDPOINT_URL_KMS``).
Moto keeps its state per process, so two fakes started in one process share keys;
alias names given to :meth:`AwsKmsFake.create_key` must be unique in the process.
Needs the ``fake`` extra: ``pip install 'kmsbox-aws[fake]'``.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from kmsbox.errors import ConfigError, PluginError
from kmsbox.retry import RetryPolicy
from kmsbox.testing.fakes import FaultInjector
from kmsbox_aws._arn import KmsArn, key_uri, parse_arn, parse_uri
from kmsbox_aws._fake_wsgi import ADMIN_HEADER, KmsFaultMiddleware

if TYPE_CHECKING:
    from mypy_boto3_kms.client import KMSClient

__all__ = ["AwsKmsFake", "start_fake"]

_ACCESS_KEY = "testing"  # moto accepts any credentials; these are the conventional dummies
_ACCOUNT = "123456789012"  # moto's default account
_MAX_TIMEOUT_DELAY = 60.0


def _moto() -> tuple[Any, Any, Any]:
    """moto's WSGI pieces, or a PluginError naming the extra to install."""
    try:
        from moto.kms.models import kms_backends
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    except ImportError as exc:
        raise PluginError("the fake AWS KMS needs moto: pip install 'kmsbox-aws[fake]'") from exc
    return DomainDispatcherApplication(create_backend_app), MotoRequestHandler, kms_backends


def _client_timeout_delay() -> float:
    """How long a 'timeout' fault holds a reply: past the client's KMSBOX_KMS_TIMEOUT."""
    try:
        timeout = RetryPolicy.from_env().timeout
    except ConfigError:
        timeout = RetryPolicy.timeout
    return min(timeout + 1.0, _MAX_TIMEOUT_DELAY)


class AwsKmsFake:
    """A started fake AWS KMS. See :class:`kmsbox.testing.fakes.FakeServer`."""

    name = "aws"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        fault_rate: float = 0.0,
        fault_kind: str = "unavailable",
        region: str = "us-east-1",
        timeout_delay: float | None = None,
        seed: int | None = None,
    ) -> None:
        """Start serving on ``host:port`` (0 picks a free port) and create the ready key."""
        moto_app, moto_handler, self._backends = _moto()
        self._region = region
        self._faults = FaultInjector(latency=latency, rate=fault_rate, kind=fault_kind, seed=seed)
        self._stopping = threading.Event()
        self._moto_lock = threading.Lock()
        self._admin_token = secrets.token_hex(16)
        app = KmsFaultMiddleware(
            self._serialized(moto_app),
            self._faults,
            admin_token=self._admin_token,
            stopping=self._stopping,
            timeout_delay=(lambda: timeout_delay) if timeout_delay is not None else _client_timeout_delay,
            key_state=self._key_state,
            resolve_key=self._resolve_key,
        )
        self._server = _make_server(host, port, app, moto_handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="kmsbox-fake-aws", daemon=True)
        self._thread.start()
        self._stopped = False
        bound_port = self._server.server_address[1]
        self._endpoint = f"http://{host}:{bound_port}"
        self._admin = self._admin_client()
        self._kek_uri = key_uri(self._new_key("kmsbox fake: ready key"))

    # -- FakeServer ---------------------------------------------------------------------------

    @property
    def kek_uri(self) -> str:
        """``aws-kms://`` URI (key ARN) of the key created at start."""
        return self._kek_uri

    @property
    def endpoint(self) -> str:
        """The fake's HTTP endpoint URL."""
        return self._endpoint

    @property
    def faults(self) -> FaultInjector:
        """The fault and latency injector in front of every KMS call."""
        return self._faults

    def env(self) -> dict[str, str]:
        """Dummy credentials, the region and the KMS endpoint override botocore reads."""
        return {
            "AWS_ACCESS_KEY_ID": _ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": _ACCESS_KEY,
            "AWS_DEFAULT_REGION": self._region,
            "AWS_ENDPOINT_URL_KMS": self._endpoint,
        }

    def create_key(self, name: str) -> str:
        """Create a key with alias ``alias/<name>``; return the alias's ``aws-kms://`` URI.

        ValueError when the alias exists already (moto's state is per process).
        """
        arn = self._new_key(f"kmsbox fake: {name}")
        alias = f"alias/{name}"
        try:
            self._admin.create_alias(AliasName=alias, TargetKeyId=arn)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "AlreadyExistsException":
                raise ValueError(f"alias {alias} already exists in this process's fake AWS KMS") from exc
            raise
        return key_uri(f"arn:aws:kms:{self._region}:{_ACCOUNT}:{alias}")

    def rotate_key(self, kek_uri: str) -> str:
        """Rotate the key behind ``kek_uri``; return the KEK version new wraps will record.

        A key ARN rotates in place (``RotateKeyOnDemand``), as AWS does: the version
        (the key ARN) stays the same. An alias is moved to a new key (manual rotation),
        whose ARN is the new version.
        """
        arn = parse_uri(kek_uri)
        if not arn.is_alias:
            self._admin.rotate_key_on_demand(KeyId=arn.arn)
            return arn.arn
        new_arn = self._new_key(f"kmsbox fake: rotation of {arn.name}")
        self._admin.update_alias(AliasName=f"alias/{arn.name}", TargetKeyId=new_arn)
        return new_arn

    def stop(self) -> None:
        """Stop serving, end open connections and join the server's threads."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._admin.close()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join()

    def __repr__(self) -> str:
        return f"AwsKmsFake(endpoint={self._endpoint!r}, kek_uri={self._kek_uri!r})"

    # -- helpers ------------------------------------------------------------------------------

    def _admin_client(self) -> KMSClient:
        client = boto3.session.Session().client(
            "kms",
            region_name=self._region,
            endpoint_url=self._endpoint,
            aws_access_key_id=_ACCESS_KEY,
            aws_secret_access_key=_ACCESS_KEY,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )

        def mark_admin(request: Any, **_: Any) -> None:
            # The fake's own set-up calls bypass injected faults and call counts.
            request.headers[ADMIN_HEADER] = self._admin_token

        client.meta.events.register("before-sign.kms", mark_admin)
        return client

    def _new_key(self, description: str) -> str:
        reply = self._admin.create_key(Description=description, KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT")
        return reply["KeyMetadata"]["Arn"]

    def _serialized(self, app: Any) -> Any:
        # moto's backends are not written for concurrent use: one request at a time inside moto.
        def serialized(environ: dict[str, Any], start_response: Any) -> Any:
            with self._moto_lock:
                return list(app(environ, start_response))

        return serialized

    def _backend_for(self, arn: KmsArn) -> Any:
        return self._backends[arn.account][arn.region]

    def _key_state(self, arn_text: str) -> str | None:
        """moto's state of a key ARN (None when unknown)."""
        try:
            arn = parse_arn(arn_text)
            with self._moto_lock:
                key = self._backend_for(arn).keys.get(arn.name)
                return None if key is None else str(key.key_state)
        except (ConfigError, KeyError):
            return None

    def _resolve_key(self, key_id: str) -> str | None:
        """The key ARN that a KeyId (key or alias, ARN or bare) names, or None."""
        try:
            arn = parse_arn(key_id)
            backend = self._backend_for(arn)
        except ConfigError:
            backend = self._backends[_ACCOUNT][self._region]
        with self._moto_lock:
            try:
                key = backend.keys.get(backend.any_id_to_key_id(key_id))
            except (AttributeError, KeyError, TypeError):
                return None
            return None if key is None else str(key.arn)


def _make_server(host: str, port: int, app: Any, moto_handler: Any) -> Any:
    """A threaded werkzeug server that tracks its connections so stop() can end them."""
    from werkzeug.serving import ThreadedWSGIServer

    class Handler(moto_handler):  # type: ignore[misc]  # moto is imported lazily, so its handler class is Any here
        protocol_version = "HTTP/1.1"

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            """Quiet: no access log."""

    class Server(ThreadedWSGIServer):
        # Non-daemon handler threads, joined by server_close(): nothing outlives stop().
        daemon_threads = False
        block_on_close = True

        def __init__(self) -> None:
            super().__init__(host, port, app, handler=Handler)
            self._open: set[socket.socket] = set()
            self._open_lock = threading.Lock()

        def process_request(self, request: Any, client_address: Any) -> None:
            with self._open_lock:
                self._open.add(request)
            super().process_request(request, client_address)

        def shutdown_request(self, request: Any) -> None:
            with self._open_lock:
                self._open.discard(request)
            super().shutdown_request(request)

        def close_connections(self) -> None:
            """End kept-alive connections so their handler threads return."""
            with self._open_lock:
                open_sockets = list(self._open)
            for sock in open_sockets:
                with contextlib.suppress(OSError):  # already closed by the client
                    sock.shutdown(socket.SHUT_RDWR)

    return Server()


def start_fake(**options: Any) -> AwsKmsFake:
    """Factory registered as fake ``aws``: start a fake AWS KMS (options as :class:`AwsKmsFake`)."""
    return AwsKmsFake(**options)
