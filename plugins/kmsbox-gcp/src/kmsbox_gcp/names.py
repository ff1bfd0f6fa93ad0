"""Cloud KMS resource names and the ``gcp-kms://`` key URI.

A KEK URI names one crypto key, the way Tink spells it:
``gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K``. Versions are
reported in their short form, the number after ``cryptoKeyVersions/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kmsbox.errors import ConfigError

__all__ = ["SCHEME", "CryptoKeyName", "parse_kek_uri", "version_id"]

SCHEME = "gcp-kms"

# Cloud KMS's own limits: key ring and key ids are 1-63 of [a-zA-Z0-9_-].
_ID = r"[a-zA-Z0-9_-]{1,63}"
# Project ids may be domain-scoped ("example.com:my-project").
_PROJECT = r"[a-z0-9][a-z0-9.:-]{0,127}"
_LOCATION = r"[a-z0-9][a-z0-9-]{0,62}"
_KEY_PATH_RE = re.compile(rf"^projects/({_PROJECT})/locations/({_LOCATION})/keyRings/({_ID})/cryptoKeys/({_ID})$")
_VERSION_ID_RE = re.compile(r"^[1-9][0-9]{0,17}$")

_FORM = "gcp-kms://projects/PROJECT/locations/LOCATION/keyRings/KEY_RING/cryptoKeys/KEY"


@dataclass(frozen=True, slots=True)
class CryptoKeyName:
    """The parts of a crypto key's resource name."""

    project: str
    location: str
    key_ring: str
    crypto_key: str

    @property
    def path(self) -> str:
        """``projects/P/locations/L/keyRings/R/cryptoKeys/K``."""
        return f"{self.key_ring_path}/cryptoKeys/{self.crypto_key}"

    @property
    def key_ring_path(self) -> str:
        """``projects/P/locations/L/keyRings/R``."""
        return f"{self.location_path}/keyRings/{self.key_ring}"

    @property
    def location_path(self) -> str:
        """``projects/P/locations/L``."""
        return f"projects/{self.project}/locations/{self.location}"

    @property
    def uri(self) -> str:
        """The KEK URI of this key."""
        return f"{SCHEME}://{self.path}"

    def version_path(self, version: str) -> str:
        """The resource name of version ``version`` (short id) of this key."""
        return f"{self.path}/cryptoKeyVersions/{version}"


def parse_kek_uri(uri: str) -> CryptoKeyName:
    """Parse a ``gcp-kms://`` URI; ConfigError naming the expected form when it is malformed."""
    if not isinstance(uri, str):
        raise ConfigError(f"a GCP KMS key URI must be a string of the form {_FORM}")
    scheme, sep, path = uri.partition("://")
    if not sep or scheme.lower() != SCHEME:
        raise ConfigError(f"KEK URI {uri!r} is not a GCP KMS key URI; use {_FORM}")
    if "/cryptoKeyVersions/" in path:
        raise ConfigError(
            f"KEK URI {uri!r} names a key version; name the crypto key (drop /cryptoKeyVersions/...): "
            "kmsbox always encrypts with the primary version and Cloud KMS finds the version when decrypting"
        )
    match = _KEY_PATH_RE.match(path)
    if match is None:
        raise ConfigError(f"KEK URI {uri!r} is malformed; use {_FORM} (ids of 1-63 letters, digits, '_' or '-')")
    return CryptoKeyName(*match.groups())


def version_id(version: str, key: CryptoKeyName) -> str | None:
    """The short id of ``version`` (``"3"`` or this key's full version name), or None if it is not one."""
    prefix = key.path + "/cryptoKeyVersions/"
    if version.startswith(prefix):
        version = version[len(prefix) :]
    return version if _VERSION_ID_RE.match(version) else None
