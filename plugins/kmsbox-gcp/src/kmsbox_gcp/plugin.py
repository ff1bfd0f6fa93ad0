"""kmsbox hook implementations of kmsbox-gcp: the ``gcp-kms`` scheme and the ``gcp`` fake.

Imports of the Google SDK are deferred to the factories, so loading kmsbox's
plugins stays cheap when no GCP key is used.
"""

from __future__ import annotations

from typing import Any

from kmsbox.hookspecs import hookimpl

__all__ = ["register_fake_servers", "register_kek_providers"]


def _open_gcp_kek(uri: str) -> Any:
    from kmsbox_gcp.provider import open_gcp_kek

    return open_gcp_kek(uri)


def _start_fake(**options: Any) -> Any:
    from kmsbox_gcp.fake import start_fake

    return start_fake(**options)


@hookimpl
def register_kek_providers(register: Any) -> None:
    """Register the ``gcp-kms`` scheme."""
    register("gcp-kms", _open_gcp_kek, "Google Cloud KMS (gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K)")


@hookimpl
def register_fake_servers(register: Any) -> None:
    """Register the ``gcp`` fake: a gRPC server of google.cloud.kms.v1.KeyManagementService."""
    register("gcp", _start_fake, "gRPC fake of Google Cloud KMS (KeyManagementService) on loopback")
