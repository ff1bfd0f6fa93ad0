"""kmsbox-gcp: a Google Cloud KMS KEK provider for kmsbox and a local gRPC fake of Cloud KMS.

Importing this package does not import the Google SDK; use
:mod:`kmsbox_gcp.provider` for the provider and :mod:`kmsbox_gcp.fake` for the fake.
"""

from __future__ import annotations

from kmsbox_gcp.names import SCHEME, CryptoKeyName, parse_kek_uri

__all__ = ["SCHEME", "CryptoKeyName", "parse_kek_uri"]
