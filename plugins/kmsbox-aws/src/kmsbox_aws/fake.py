"""A fake AWS KMS on loopback: moto's server behind kmsbox's fault injector and AWS's rules.

The official boto3 client talks to it over a real socket (``AWS_ENDPOINT_URL_KMS``).
Moto keeps the keys; the cryptographic operations, key states, key usage and key
policies' Deny statements are answered as AWS does by :mod:`kmsbox_aws._fake_operations`.
Moto keeps its state per process, so two fakes started in one process share keys;
alias names given to :meth:`AwsKmsFake.create_key` must be unique in the process.
Needs the ``fake`` extra: ``pip install 'kmsbox-aws[fake]'``.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

from kmsbox.errors import ConfigError, PluginError
from kmsbox.retry import RetryPolicy
from kmsbox.testing.fakes import FaultInjector, abort_connection
from kmsbox_aws._arn import key_uri, parse_uri
from kmsbox_aws._fake_operations import KmsOperations
from kmsbox_aws._fake_wsgi import ABORT_ENVIRON, ADMIN_HEADER, KmsFaultMiddleware

if TYPE_CHECKING:
    from mypy_boto3_kms.client import KMSClient

__all__ = ["KMS_OPERATIONS", "AwsKmsFake", "start_fake"]

_ACCESS_KEY = "testing"  # moto accepts any credentials; these are the conventional dummies
_ACCOUNT = "123456789012"  # moto's default account
_MAX_TIMEOUT_DELAY = 60.0
#: The AWS KMS API's operation names (botocore's service model): what faults can be aimed at.
KMS_OPERATIONS = frozenset(botocore.session.get_session().get_service_model("kms").operation_names)


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
        fault_operations: Iterable[str] = (),
        region: str = "us-east-1",
        timeout_delay: float | None = None,
        seed: int | None = None,
    ) -> None:
        """Start serving on ``host:port`` (0 picks a free port) and create the ready key.

        ``fault_operations`` limits injected faults to those KMS operations (``Decrypt``...);
        a name that is not a KMS operation is a ValueError.
        """
        moto_app, moto_handler, backends = _moto()
        self._region = region
        self._faults = FaultInjector(
            latency=latency,
            rate=fault_rate,
            kind=fault_kind,
            seed=seed,
            operations=fault_operations,
            known_operations=KMS_OPERATIONS,
        )
        self._stopping = threading.Event()
        self._moto_lock = threading.Lock()
        self._admin_token = secrets.token_hex(16)
        app = KmsFaultMiddleware(
            self._serialized(moto_app),
            self._faults,
            KmsOperations(backends, self._moto_lock),
            admin_token=self._admin_token,
            stopping=self._stopping,
            timeout_delay=(lambda: timeout_delay) if timeout_delay is not None else _client_timeout_delay,
            account=_ACCOUNT,
            region=region,
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


def _make_server(host: str, port: int, app: Any, moto_handler: Any) -> Any:
    """A threaded werkzeug server that tracks its connections so stop() can end them."""
    from werkzeug.serving import ThreadedWSGIServer

    class Handler(moto_handler):  # type: ignore[misc]  # moto is imported lazily, so its handler class is Any here
        protocol_version = "HTTP/1.1"

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            """Quiet: no access log."""

        def make_environ(self) -> dict[str, Any]:
            """werkzeug's environ, plus a way for the app to reset this connection (the ``reset`` fault)."""
            environ: dict[str, Any] = super().make_environ()
            environ[ABORT_ENVIRON] = self.abort
            return environ

        def abort(self) -> None:
            """Reset the connection once the request ends: the client sees "connection reset by peer"."""
            self.close_connection = True
            abort_connection(self.connection)

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
