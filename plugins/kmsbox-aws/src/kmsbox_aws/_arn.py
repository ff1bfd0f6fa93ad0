"""Parse ``aws-kms://`` key URIs and the AWS KMS key and alias ARNs inside them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kmsbox.errors import ConfigError

__all__ = ["SCHEME", "KmsArn", "key_uri", "parse_arn", "parse_uri"]

SCHEME = "aws-kms"
_PREFIX = SCHEME + "://"

# arn:PARTITION:kms:REGION:ACCOUNT:key/ID or .../alias/NAME (partitions aws, aws-cn, aws-us-gov, aws-iso...).
_ARN_RE = re.compile(
    r"^arn:(?P<partition>aws(?:-[a-z]+)*):kms:(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}):(?P<account>[0-9]{12}):"
    r"(?P<kind>key|alias)/(?P<name>[^\s]+)$"
)
# A key ID is a UUID; a multi-Region key's ID is mrk- and 32 hex digits.
_KEY_ID_RE = re.compile(r"^(?:mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
# AWS: an alias name is 1-250 characters after "alias/": letters, digits, slash, underscore, hyphen.
_ALIAS_RE = re.compile(r"^[A-Za-z0-9/_-]{1,250}$")

_FORMS = "aws-kms://arn:aws:kms:REGION:ACCOUNT:key/KEY-ID or aws-kms://arn:aws:kms:REGION:ACCOUNT:alias/NAME"


@dataclass(frozen=True, slots=True)
class KmsArn:
    """The parts of a KMS key ARN (``kind='key'``) or alias ARN (``kind='alias'``)."""

    partition: str
    region: str
    account: str
    kind: str
    name: str

    @property
    def arn(self) -> str:
        """The ARN as AWS spells it."""
        return f"arn:{self.partition}:kms:{self.region}:{self.account}:{self.kind}/{self.name}"

    @property
    def is_alias(self) -> bool:
        """True for an alias ARN, False for a key ARN."""
        return self.kind == "alias"

    def same_home(self, other: KmsArn) -> bool:
        """True when both ARNs are in the same partition, region and account."""
        return (self.partition, self.region, self.account) == (other.partition, other.region, other.account)


def parse_arn(text: str, where: str = "AWS KMS ARN") -> KmsArn:
    """Parse a KMS key or alias ARN; ConfigError (naming ``where``) if it is malformed."""
    match = _ARN_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"{where} {text!r} is not a KMS key or alias ARN (use {_FORMS})")
    kind, name = match["kind"], match["name"]
    if kind == "key" and not _KEY_ID_RE.fullmatch(name):
        raise ConfigError(f"{where} {text!r}: the key ID must be a lowercase UUID or mrk- and 32 hex digits")
    if kind == "alias" and not _ALIAS_RE.fullmatch(name):
        raise ConfigError(f"{where} {text!r}: an alias name is 1-250 letters, digits, '/', '_' or '-'")
    return KmsArn(match["partition"], match["region"], match["account"], kind, name)


def parse_uri(uri: str) -> KmsArn:
    """Parse an ``aws-kms://`` key URI; ConfigError if it is malformed."""
    if not isinstance(uri, str) or not uri.lower().startswith(_PREFIX):
        raise ConfigError(f"KEK URI {uri!r} is not an aws-kms:// URI (use {_FORMS})")
    return parse_arn(uri[len(_PREFIX) :], f"KEK URI {uri!r}: ARN")


def key_uri(arn: str) -> str:
    """The ``aws-kms://`` URI of a key or alias ARN."""
    return _PREFIX + parse_arn(arn).arn
