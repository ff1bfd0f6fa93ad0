"""Building the official Cloud KMS clients (blocking and grpc.aio) from the environment.

``KMSBOX_GCP_KMS_ENDPOINT`` (``host:port``) overrides the endpoint. A loopback
endpoint, or any endpoint with ``KMSBOX_GCP_KMS_INSECURE=true``, is reached over
a plaintext gRPC channel without credentials: that is how tests reach the local
fake. Any other endpoint (a regional or Private Service Connect one) is reached
over TLS with Application Default Credentials, as is the default endpoint.

Looking up Application Default Credentials may read files and ask the metadata
server, so :func:`default_credentials` does it once, where blocking is allowed, and
both clients are given the result: an async client is made later, inside its event
loop, without blocking it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import google.auth
import grpc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import Credentials
from google.auth.exceptions import DefaultCredentialsError
from google.cloud.kms_v1 import KeyManagementServiceAsyncClient, KeyManagementServiceClient
from google.cloud.kms_v1.services.key_management_service.transports import (
    KeyManagementServiceGrpcAsyncIOTransport,
    KeyManagementServiceGrpcTransport,
)

from kmsbox.errors import ConfigError

__all__ = [
    "DEFAULT_ENDPOINT",
    "ENDPOINT_ENV",
    "INSECURE_ENV",
    "ClientSettings",
    "default_credentials",
    "make_async_client",
    "make_client",
]

ENDPOINT_ENV = "KMSBOX_GCP_KMS_ENDPOINT"
INSECURE_ENV = "KMSBOX_GCP_KMS_INSECURE"
DEFAULT_ENDPOINT = "cloudkms.googleapis.com:443"

ClientT = TypeVar("ClientT")

# The host the client's own ADC lookup names as a GDCH audience when no endpoint is set.
_DEFAULT_HOST = "cloudkms.googleapis.com"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class ClientSettings:
    """Where and how to reach Cloud KMS."""

    endpoint: str | None = None
    insecure: bool = False

    @classmethod
    def from_env(cls) -> ClientSettings:
        """Read ``KMSBOX_GCP_KMS_ENDPOINT`` and ``KMSBOX_GCP_KMS_INSECURE``; ConfigError if malformed."""
        endpoint = os.environ.get(ENDPOINT_ENV, "").strip() or None
        raw_insecure = os.environ.get(INSECURE_ENV, "").strip().lower()
        if raw_insecure not in _TRUE | _FALSE:
            raise ConfigError(f"{INSECURE_ENV} must be true or false")
        if endpoint is None:
            if raw_insecure in _TRUE:
                raise ConfigError(f"{INSECURE_ENV} is set but {ENDPOINT_ENV} is not: name the endpoint to reach")
            return cls()
        host = _host_of(endpoint)
        return cls(endpoint=endpoint, insecure=raw_insecure in _TRUE or _is_loopback(host))

    def describe(self) -> str:
        """The endpoint, for status output."""
        return f"{self.endpoint} (insecure)" if self.insecure else (self.endpoint or DEFAULT_ENDPOINT)


def default_credentials(settings: ClientSettings) -> Credentials | None:
    """Application Default Credentials for a TLS endpoint (None for a plaintext one); ConfigError when none exist.

    It may block (files, the metadata server): call it off the event loop.
    """
    if settings.insecure and settings.endpoint:
        return None
    with _credentials_needed():
        credentials, _ = google.auth.default(default_scopes=KeyManagementServiceGrpcTransport.AUTH_SCOPES)
    if hasattr(credentials, "with_gdch_audience"):
        # As the client's own lookup does: GDCH credentials need the endpoint as their audience.
        credentials = credentials.with_gdch_audience(settings.endpoint or _DEFAULT_HOST)
    return credentials


def make_client(settings: ClientSettings, credentials: Credentials | None = None) -> KeyManagementServiceClient:
    """Create the blocking client; without ``credentials`` it looks up ADC itself (ConfigError if there are none)."""
    if settings.insecure and settings.endpoint:
        # A channel passed in makes the transport skip credentials entirely (no ADC lookup).
        channel = grpc.insecure_channel(settings.endpoint)
        return KeyManagementServiceClient(transport=KeyManagementServiceGrpcTransport(channel=channel))
    return _with_credentials(KeyManagementServiceClient, settings, credentials)


def make_async_client(
    settings: ClientSettings, credentials: Credentials | None = None
) -> KeyManagementServiceAsyncClient:
    """Create the grpc.aio client; call it inside the event loop that will use it (its channel is bound to it).

    Pass the ``credentials`` of :func:`default_credentials` for a TLS endpoint, or the
    client looks up ADC itself, blocking the loop (ConfigError if there are none).
    """
    if settings.insecure and settings.endpoint:
        channel = grpc.aio.insecure_channel(settings.endpoint)
        return KeyManagementServiceAsyncClient(transport=KeyManagementServiceGrpcAsyncIOTransport(channel=channel))
    return _with_credentials(KeyManagementServiceAsyncClient, settings, credentials)


def _with_credentials(
    make: Callable[..., ClientT], settings: ClientSettings, credentials: Credentials | None
) -> ClientT:
    options = ClientOptions(api_endpoint=settings.endpoint) if settings.endpoint else None
    with _credentials_needed():
        return make(credentials=credentials, client_options=options)


@contextmanager
def _credentials_needed() -> Iterator[None]:
    try:
        yield
    except DefaultCredentialsError as exc:
        raise ConfigError(
            "no Google credentials found for Cloud KMS: set GOOGLE_APPLICATION_CREDENTIALS or run "
            "'gcloud auth application-default login' (or point KMSBOX_GCP_KMS_ENDPOINT at a fake)"
        ) from exc


def _host_of(endpoint: str) -> str:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in endpoint:
        raise ConfigError(f"{ENDPOINT_ENV} must be host:port (for example 127.0.0.1:8443), got {endpoint!r}")
    return host.strip("[]")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
