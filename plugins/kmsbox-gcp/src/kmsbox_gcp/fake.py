"""A local gRPC fake of ``google.cloud.kms.v1.KeyManagementService``.

The official client talks to it unchanged over an insecure loopback channel
(export :meth:`FakeGcpKms.env`). Each RPC is registered under its real method
path with the official request and response messages, so the wire format is the
real one. Clients connect through a TCP relay (:mod:`kmsbox_gcp._fake_proxy`) so
that a fault can reset their real connection. A fault injector sits in front of
every RPC (the operation name is the method name, e.g. ``"Encrypt"``): throttle
answers RESOURCE_EXHAUSTED, unavailable UNAVAILABLE, timeout sleeps past the
caller's deadline, denied PERMISSION_DENIED, reset sends the client a TCP reset,
malformed answers bytes that are not the response message. Two integrity faults,
not in the shared set, test CRC32C handling: a corrupted response checksum and a
request checksum reported as not verified.
"""

from __future__ import annotations

import threading
import typing
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud.kms_v1.types import DecryptResponse, EncryptResponse, GenerateRandomBytesResponse

from kmsbox.testing.fakes import FaultInjector
from kmsbox_gcp._fake_kms import RPC_METHODS, FakeKms, RpcFailure
from kmsbox_gcp._fake_proxy import ResettableRelay
from kmsbox_gcp.client import ENDPOINT_ENV, INSECURE_ENV
from kmsbox_gcp.names import CryptoKeyName, parse_kek_uri

__all__ = ["RPC_METHODS", "SERVICE_NAME", "FakeGcpKms", "GcpFaultInjector", "start_fake"]

SERVICE_NAME = "google.cloud.kms.v1.KeyManagementService"

# How long a "timeout" fault holds a call that carries no deadline.
_NO_DEADLINE_HOLD = 30.0
# Cloud KMS IAM permission checked by each RPC, for PERMISSION_DENIED messages.
_PERMISSIONS = {
    "Encrypt": "cloudkms.cryptoKeyVersions.useToEncrypt",
    "Decrypt": "cloudkms.cryptoKeyVersions.useToDecrypt",
    "GenerateRandomBytes": "cloudkms.locations.generateRandomBytes",
    "CreateKeyRing": "cloudkms.keyRings.create",
    "GetKeyRing": "cloudkms.keyRings.get",
    "ListKeyRings": "cloudkms.keyRings.list",
    "CreateCryptoKey": "cloudkms.cryptoKeys.create",
    "GetCryptoKey": "cloudkms.cryptoKeys.get",
    "ListCryptoKeys": "cloudkms.cryptoKeys.list",
    "UpdateCryptoKey": "cloudkms.cryptoKeys.update",
    "UpdateCryptoKeyPrimaryVersion": "cloudkms.cryptoKeys.update",
    "CreateCryptoKeyVersion": "cloudkms.cryptoKeyVersions.create",
    "GetCryptoKeyVersion": "cloudkms.cryptoKeyVersions.get",
    "ListCryptoKeyVersions": "cloudkms.cryptoKeyVersions.list",
    "UpdateCryptoKeyVersion": "cloudkms.cryptoKeyVersions.update",
    "DestroyCryptoKeyVersion": "cloudkms.cryptoKeyVersions.destroy",
    "RestoreCryptoKeyVersion": "cloudkms.cryptoKeyVersions.restore",
}
# A protobuf tag of wire type 7, which no message has: the client cannot parse what follows it.
_UNPARSABLE = b"\x0f"
_THROTTLED = (
    "Quota exceeded for quota metric 'Cryptographic requests' and limit 'Cryptographic requests per minute' "
    "of service 'cloudkms.googleapis.com' for consumer 'project_number:0'."
)


class GcpFaultInjector(FaultInjector):
    """The shared fault injector plus Cloud KMS integrity faults.

    ``corrupt_response_crc``: how many Encrypt/Decrypt/GenerateRandomBytes answers
    get a wrong response checksum. ``unverified_request_crc``: how many Encrypt
    answers claim the request checksums were not verified (as when they are lost
    in transit). ``clear()`` resets these too.
    """

    def __init__(self, **options: Any) -> None:
        self._integrity_lock = threading.Lock()
        self.corrupt_response_crc = 0
        self.unverified_request_crc = 0
        super().__init__(**options)

    def configure_integrity(self, *, corrupt_response_crc: int = 0, unverified_request_crc: int = 0) -> None:
        """Arm the integrity faults for the next N crypto answers each."""
        if corrupt_response_crc < 0 or unverified_request_crc < 0:
            raise ValueError("fault counts must be >= 0")
        with self._integrity_lock:
            self.corrupt_response_crc = corrupt_response_crc
            self.unverified_request_crc = unverified_request_crc

    def clear(self) -> None:
        """No latency, no faults, no integrity faults."""
        super().clear()
        self.configure_integrity()

    def take(self, fault: str) -> bool:
        """Consume one integrity fault of kind ``fault``; True if one was armed."""
        with self._integrity_lock:
            left: int = getattr(self, fault)
            if left <= 0:
                return False
            setattr(self, fault, left - 1)
            return True


class FakeGcpKms:
    """A started fake Cloud KMS on loopback, with a ready key (``kek_uri``)."""

    name = "gcp"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        fault_rate: float = 0.0,
        fault_kind: str = "unavailable",
        fault_operations: Iterable[str] = (),
        project: str = "kmsbox-fake",
        location: str = "global",
        key_ring: str = "kmsbox",
        crypto_key: str = "kek",
        seed: int | None = None,
    ) -> None:
        """Start on ``host:port`` (0: a free port); ``fault_operations`` limits faults to those RPCs.

        OSError when the port is taken; ValueError for a name that is not one of :data:`RPC_METHODS`.
        """
        self._faults = GcpFaultInjector(
            latency=latency,
            rate=fault_rate,
            kind=fault_kind,
            seed=seed,
            operations=fault_operations,
            known_operations=RPC_METHODS,
        )
        self.kms = FakeKms()
        self._key = CryptoKeyName(project, location, key_ring, crypto_key)
        self.kms.ensure_key(self._key.path)
        self._stopping = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="fake-gcp-kms")
        # Without so_reuseport=0 a second server could silently share a taken port.
        self._server = grpc.server(self._executor, options=[("grpc.so_reuseport", 0)])
        self._server.add_generic_rpc_handlers((self._generic_handler(),))
        internal = f"[{host}]" if ":" in host else host
        bind_error: Exception | None = None
        try:
            grpc_port = self._server.add_insecure_port(f"{internal}:0")
        except RuntimeError as exc:  # grpc raises (older versions return 0) when it cannot bind
            grpc_port, bind_error = 0, exc
        if grpc_port == 0:
            self._executor.shutdown(wait=False)
            raise OSError(f"fake Cloud KMS could not bind {host}") from bind_error
        try:
            self._relay = ResettableRelay(host, port, (host, grpc_port))
        except OSError as exc:
            self._executor.shutdown(wait=False)
            raise OSError(f"fake Cloud KMS could not bind {host}:{port}: {exc.strerror}") from exc
        self._port = self._relay.port
        self._host = host
        self._server.start()
        self._stopped = False

    def __repr__(self) -> str:
        return f"FakeGcpKms(endpoint={self.endpoint!r}, kek_uri={self.kek_uri!r})"

    @property
    def endpoint(self) -> str:
        """``host:port`` the fake listens on."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    @property
    def kek_uri(self) -> str:
        """URI of the key created at start."""
        return self._key.uri

    @property
    def client_connections(self) -> int:
        """Client TCP connections open to the fake now: a closed client has none left."""
        return self._relay.connections

    @property
    def faults(self) -> GcpFaultInjector:
        """The fault and latency injector in front of every RPC."""
        return self._faults

    def env(self) -> dict[str, str]:
        """What the provider needs to reach this fake instead of Google."""
        return {ENDPOINT_ENV: self.endpoint, INSECURE_ENV: "true"}

    def create_key(self, name: str) -> str:
        """Create crypto key ``name`` in the same key ring (if missing); return its KEK URI."""
        key = CryptoKeyName(self._key.project, self._key.location, self._key.key_ring, name)
        parse_kek_uri(key.uri)  # validates the id the way the provider will
        self.kms.ensure_key(key.path)
        return key.uri

    def rotate_key(self, kek_uri: str) -> str:
        """Give the key a new primary version; return its short id (as the provider reports versions)."""
        return str(self.kms.rotate(parse_kek_uri(kek_uri).path))

    def stop(self) -> None:
        """Stop serving (held "timeout" calls are released) and release the port and threads."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._relay.stop()
        self._server.stop(grace=0.5).wait()
        self._executor.shutdown(wait=True)

    def _generic_handler(self) -> grpc.GenericRpcHandler:
        handlers = {name: self._method_handler(name, getattr(self.kms, _snake(name))) for name in RPC_METHODS}
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    def _method_handler(self, operation: str, implementation: Callable[[Any], Any]) -> grpc.RpcMethodHandler[Any, Any]:
        # google-cloud-kms ships no service descriptor; the fake's own signatures name the official messages.
        hints = typing.get_type_hints(implementation)
        request_type, response_type = hints["request"], hints["return"]

        def handle(raw: Any, context: grpc.ServicerContext) -> Any:
            request = request_type.wrap(raw)
            fault = self._inject_fault(operation, request, context)
            try:
                response = implementation(request)
            except RpcFailure as failure:
                context.abort(failure.code, failure.message)
            self._inject_integrity_fault(response)
            if fault == "malformed":
                return _Garbled(bytes(response_type.pb(response).SerializeToString()))
            return response_type.pb(response)

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=request_type.pb().FromString, response_serializer=_serialize
        )

    def _inject_fault(self, operation: str, request: Any, context: grpc.ServicerContext) -> str | None:
        """Abort the call as the fault says; returns ``"malformed"`` for the handler to garble its answer."""
        fault = self._faults.before_call(operation)
        if fault == "reset":
            self._relay.reset(context.peer())
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")  # no one hears it: the client is gone
        if fault == "throttle":
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _THROTTLED)
        if fault == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable.")
        if fault == "denied":
            permission = _PERMISSIONS.get(operation, "cloudkms.*")
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Permission '{permission}' denied on resource '{_resource_of(request)}' (or it may not exist).",
            )
        if fault == "timeout":
            remaining = context.time_remaining()
            hold = _NO_DEADLINE_HOLD if remaining is None else remaining + 0.25
            # Sleep past the caller's deadline, waking early only when the fake stops.
            self._stopping.wait(hold)
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        return fault

    def _inject_integrity_fault(self, response: Any) -> None:
        if isinstance(response, EncryptResponse):
            if self._faults.take("unverified_request_crc"):
                response.verified_plaintext_crc32c = False
                response.verified_additional_authenticated_data_crc32c = False
            if self._faults.take("corrupt_response_crc"):
                _corrupt(response, "ciphertext_crc32c")
        elif isinstance(response, DecryptResponse) and self._faults.take("corrupt_response_crc"):
            _corrupt(response, "plaintext_crc32c")
        elif isinstance(response, GenerateRandomBytesResponse) and self._faults.take("corrupt_response_crc"):
            _corrupt(response, "data_crc32c")


def _corrupt(response: object, crc_field: str) -> None:
    """Change a response checksum (an int at run time) so it no longer matches its data."""
    setattr(response, crc_field, (getattr(response, crc_field) + 1) % 2**32)


@dataclass(frozen=True, slots=True)
class _Garbled:
    """A response that serializes to bytes the client cannot parse (the ``malformed`` fault)."""

    real: bytes


def _serialize(message: Any) -> bytes:
    if isinstance(message, _Garbled):
        return _UNPARSABLE + message.real
    return bytes(message.SerializeToString())


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _resource_of(request: Any) -> str:
    """The resource an RPC acts on, for PERMISSION_DENIED messages."""
    for attribute in ("name", "parent", "location"):
        value = getattr(request, attribute, "")
        if value:
            return str(value)
    for nested in ("crypto_key", "crypto_key_version"):
        value = getattr(getattr(request, nested, None), "name", "")
        if value:
            return str(value)
    return "unknown"


def start_fake(**options: Any) -> FakeGcpKms:
    """The ``register_fake_servers`` factory: start a fake with ``options`` (host, port, latency, faults)."""
    return FakeGcpKms(**options)
