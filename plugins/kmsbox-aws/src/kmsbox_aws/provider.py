"""The AWS KMS KEK provider: ``aws-kms://arn:aws:kms:REGION:ACCOUNT:key/ID`` (or ``alias/NAME``).

Keys are wrapped with KMS ``Encrypt`` and unwrapped with ``Decrypt`` (``KeyId`` set, so
a ciphertext of another key is refused by KMS itself); the kmsbox context travels as the
KMS ``EncryptionContext``. Rewrap uses ``ReEncrypt``, so plaintext never leaves KMS.

The KEK version recorded with a wrapped key is the ARN of the KMS key that encrypted it
(the ``KeyId`` that ``Encrypt`` returns). AWS rotates key material inside a key without
exposing versions, so for a key ARN the version never changes. For an alias it is the key
the alias pointed at, and changes when the alias is moved to another key; the alias ARN is
then also bound into the encryption context (``kmsbox-aws:alias``), so that the older key
still unwraps through the alias URI but a ciphertext made through any other URI does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kmsbox.errors import ConfigError, IntegrityError, KeyUnavailable, ProviderError
from kmsbox.kek import BaseKekProvider, Context, WrappedKey
from kmsbox.retry import RetryPolicy, call_with_retry
from kmsbox_aws._arn import SCHEME, KmsArn, parse_arn, parse_uri
from kmsbox_aws._errors import (
    CREDENTIAL_ERRORS,
    INTEGRITY_CODES,
    KEY_STATE_CODES,
    NOT_FOUND,
    classifier,
    client_error_code,
    client_error_message,
)

if TYPE_CHECKING:
    from mypy_boto3_kms.client import KMSClient
    from mypy_boto3_kms.type_defs import KeyMetadataTypeDef

__all__ = ["ALIAS_CONTEXT_KEY", "AwsKmsKekProvider", "make_kms_client", "open_aws_kms_kek"]

T = TypeVar("T")

#: KMS accepts ciphertext blobs of 1 to 6144 bytes; anything else cannot be ours.
_MAX_CIPHERTEXT = 6144
#: Encryption-context entry that binds an alias URI's ciphertexts to the alias.
ALIAS_CONTEXT_KEY = "kmsbox-aws:alias"


def make_kms_client(region: str, policy: RetryPolicy) -> KMSClient:
    """A boto3 KMS client for ``region`` whose time-outs follow ``policy`` and that never retries on its own.

    Credentials and the endpoint come from the usual AWS configuration (environment,
    shared config and credentials files, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL_KMS``...).
    """
    config = Config(
        connect_timeout=policy.timeout,
        read_timeout=policy.timeout,
        # One attempt per call: kmsbox's RetryPolicy alone decides on retries and the deadline.
        retries={"total_max_attempts": 1, "mode": "standard"},
        user_agent_extra="kmsbox",
    )
    try:
        # A session per client: boto3's default session is not safe to share across threads.
        return boto3.session.Session().client("kms", region_name=region, config=config)
    except BotoCoreError as exc:
        raise ConfigError(f"cannot create an AWS KMS client for region {region}: {type(exc).__name__}: {exc}") from exc
    except ValueError as exc:
        # botocore raises ValueError for a malformed endpoint URL in the environment or config.
        raise ConfigError(f"cannot create an AWS KMS client for region {region}: {exc}") from exc


class AwsKmsKekProvider(BaseKekProvider):
    """Wraps keys under one AWS KMS symmetric key, named by key ARN or alias ARN."""

    def __init__(self, uri: str, *, policy: RetryPolicy | None = None, client: KMSClient | None = None) -> None:
        """Open ``uri``; ConfigError if it is malformed. Makes no KMS call."""
        super().__init__(uri)
        self._arn = parse_uri(uri)
        self._policy = policy or RetryPolicy.from_env()
        self._client = client or make_kms_client(self._arn.region, self._policy)

    @property
    def arn(self) -> str:
        """The key or alias ARN this provider uses."""
        return self._arn.arn

    # -- calls -----------------------------------------------------------------------------

    def _call(self, operation: str, send: Callable[[], T]) -> T:
        """Send one KMS request under the retry policy; errors are kmsbox errors or ClientError.

        ClientErrors whose meaning depends on the caller (integrity, key state, not found)
        are re-raised unchanged for the caller to map.
        """
        try:
            return call_with_retry(send, classifier(operation, self._arn.arn), self._policy)
        except CREDENTIAL_ERRORS as exc:
            raise ConfigError(
                "no usable AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                "or run where an instance or task role is available"
            ) from exc

    def _as_permanent(self, exc: ClientError, operation: str) -> ProviderError:
        code = client_error_code(exc)
        message = client_error_message(exc) or "no message"
        return ProviderError(
            f"AWS KMS {operation} on {self._arn.arn} failed: {code}: {message}", transient=False, code=code
        )

    def _unwrap_error(self, exc: ClientError, operation: str, version: str) -> Exception:
        """Map a Decrypt or ReEncrypt failure that concerns the wrapped key itself."""
        code = client_error_code(exc)
        if code in INTEGRITY_CODES:
            # Opaque on purpose: wrong context, altered ciphertext and another key look the same.
            return IntegrityError("the wrapped key did not authenticate under the AWS KMS key")
        if code in KEY_STATE_CODES:
            return KeyUnavailable(f"AWS KMS key {version} cannot decrypt: {client_error_message(exc) or code}")
        if code == NOT_FOUND:
            return KeyUnavailable(f"AWS KMS key {version} no longer exists: {client_error_message(exc) or code}")
        return self._as_permanent(exc, operation)

    def _check_version(self, version: str) -> None:
        """KeyUnavailable unless ``version`` is a key ARN this provider may decrypt with."""
        if not self._version_possible(version):
            raise KeyUnavailable(f"KEK version {version!r} is not a key that {self._arn.arn} can use")

    def _version_possible(self, version: str) -> bool:
        # A key ARN URI uses only its key; an alias URI any key of its account and region
        # (the alias ARN in the encryption context keeps other URIs' ciphertexts out).
        try:
            parsed = parse_arn(version)
        except ConfigError:
            return False
        if parsed.kind != "key" or not parsed.same_home(self._arn):
            return False
        return self._arn.is_alias or parsed.arn == self._arn.arn

    def _checked_key_arn(self, value: object, operation: str) -> str:
        """The key ARN in a KMS reply, or a permanent ProviderError for a reply that is not one."""
        parsed: KmsArn | None = None
        if isinstance(value, str):
            try:
                parsed = parse_arn(value)
            except ConfigError:
                parsed = None
        if parsed is None or parsed.kind != "key" or not parsed.same_home(self._arn):
            raise ProviderError(
                f"AWS KMS {operation} replied without a valid key ARN", transient=False, code="BadResponse"
            )
        if not self._arn.is_alias and parsed.arn != self._arn.arn:
            raise ProviderError(
                f"AWS KMS {operation} used another key than {self._arn.arn}", transient=False, code="BadResponse"
            )
        return parsed.arn

    def _encryption_context(self, context: Context) -> dict[str, str]:
        """The KMS EncryptionContext: the kmsbox context, plus the alias ARN for an alias URI."""
        ctx = dict(context)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in ctx.items()):
            raise TypeError("context keys and values must be strings")
        if self._arn.is_alias:
            if ALIAS_CONTEXT_KEY in ctx:
                raise ValueError(f"context key {ALIAS_CONTEXT_KEY!r} is reserved by the AWS KMS provider")
            ctx[ALIAS_CONTEXT_KEY] = self._arn.arn
        return ctx

    def _describe(self, key_id: str | None = None) -> KeyMetadataTypeDef:
        """DescribeKey of ``key_id`` (default: the URI's key or alias)."""
        target = key_id or self._arn.arn
        try:
            reply = self._call("DescribeKey", lambda: self._client.describe_key(KeyId=target))
        except ClientError as exc:
            raise self._as_permanent(exc, "DescribeKey") from exc
        metadata = reply.get("KeyMetadata")
        if not isinstance(metadata, dict):
            raise ProviderError("AWS KMS DescribeKey replied without KeyMetadata", transient=False, code="BadResponse")
        return metadata

    def _current_target(self) -> str:
        return self._checked_key_arn(self._describe().get("Arn"), "DescribeKey")

    # -- KekProvider -----------------------------------------------------------------------

    def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """Encrypt ``key`` under the KMS key with ``context`` as encryption context.

        Raises ProviderError (permanent for a missing, disabled or forbidden key;
        transient after retries for throttling, 5xx and time-outs).
        """
        ctx = self._encryption_context(context)
        try:
            reply = self._call(
                "Encrypt", lambda: self._client.encrypt(KeyId=self._arn.arn, Plaintext=key, EncryptionContext=ctx)
            )
        except ClientError as exc:
            raise self._as_permanent(exc, "Encrypt") from exc
        blob = reply.get("CiphertextBlob")
        if not isinstance(blob, bytes) or not blob:
            raise ProviderError("AWS KMS Encrypt replied without a ciphertext", transient=False, code="BadResponse")
        return WrappedKey(self.uri, self._checked_key_arn(reply.get("KeyId"), "Encrypt"), blob)

    def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """Decrypt ``wrapped`` with ``context``.

        ``KeyId`` is the recorded version (a key ARN), so KMS refuses a ciphertext of any
        other key. Raises IntegrityError (wrong context, altered ciphertext or version,
        another key's or URI's ciphertext), KeyUnavailable (the key is disabled, pending
        deletion or deleted, or the version is not a key this URI may use), ProviderError
        otherwise.
        """
        self._check_uri(wrapped)
        self._check_version(wrapped.key_version)
        _check_blob(wrapped.ciphertext)
        ctx = self._encryption_context(context)
        try:
            reply = self._call(
                "Decrypt",
                lambda: self._client.decrypt(
                    CiphertextBlob=wrapped.ciphertext, EncryptionContext=ctx, KeyId=wrapped.key_version
                ),
            )
        except ClientError as exc:
            raise self._unwrap_error(exc, "Decrypt", wrapped.key_version) from exc
        if self._checked_key_arn(reply.get("KeyId"), "Decrypt") != wrapped.key_version:
            raise ProviderError("AWS KMS Decrypt used another key than requested", transient=False, code="BadResponse")
        plaintext = reply.get("Plaintext")
        if not isinstance(plaintext, bytes) or not plaintext:
            raise ProviderError("AWS KMS Decrypt replied without a plaintext", transient=False, code="BadResponse")
        return plaintext

    def rewrap(self, wrapped: WrappedKey, context: Context) -> WrappedKey:
        """Re-encrypt inside KMS (``ReEncrypt``) under the primary version's current material.

        The source is the recorded version, the destination the URI's key or alias; the
        key never leaves KMS. Raises the same errors as :meth:`unwrap`.
        """
        self._check_uri(wrapped)
        self._check_version(wrapped.key_version)
        _check_blob(wrapped.ciphertext)
        ctx = self._encryption_context(context)
        try:
            reply = self._call(
                "ReEncrypt",
                lambda: self._client.re_encrypt(
                    CiphertextBlob=wrapped.ciphertext,
                    SourceEncryptionContext=ctx,
                    SourceKeyId=wrapped.key_version,
                    DestinationKeyId=self._arn.arn,
                    DestinationEncryptionContext=ctx,
                ),
            )
        except ClientError as exc:
            raise self._unwrap_error(exc, "ReEncrypt", wrapped.key_version) from exc
        if self._checked_key_arn(reply.get("SourceKeyId"), "ReEncrypt") != wrapped.key_version:
            raise ProviderError(
                "AWS KMS ReEncrypt used another key than requested", transient=False, code="BadResponse"
            )
        blob = reply.get("CiphertextBlob")
        if not isinstance(blob, bytes) or not blob:
            raise ProviderError("AWS KMS ReEncrypt replied without a ciphertext", transient=False, code="BadResponse")
        return WrappedKey(self.uri, self._checked_key_arn(reply.get("KeyId"), "ReEncrypt"), blob)

    def rewrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[WrappedKey]:
        """ReEncrypt each item (KMS has no batch API); plaintext never leaves KMS."""
        return [self.rewrap(wrapped, context) for wrapped, context in items]

    def primary_version(self) -> str:
        """The key ARN new wraps use: the URI's key, or the key its alias targets now (one DescribeKey)."""
        if not self._arn.is_alias:
            return self._arn.arn
        return self._current_target()

    def version_available(self, version: str) -> bool | None:
        """Whether ``version`` can still unwrap through this URI (one DescribeKey of that key).

        True when the key is one this URI may use and its state is Enabled; False when
        it is disabled, pending deletion, deleted, or not a key this URI may use; None
        when DescribeKey is not permitted.
        """
        if not self._version_possible(version):
            return False
        try:
            metadata = self._describe(version)
        except ProviderError as exc:
            if exc.code == NOT_FOUND:
                return False
            if exc.code == "AccessDeniedException":
                return None
            raise
        if metadata.get("Arn") != version:
            return False
        return metadata.get("KeyState") == "Enabled"

    def describe(self) -> dict[str, str]:
        """Provider kind, ARN, region, account and primary version (never key material)."""
        try:
            primary = self.primary_version()
        except ProviderError as exc:
            primary = f"unknown ({exc.code or 'error'})"
        return {
            "provider": SCHEME,
            "key": self._arn.arn,
            "key_type": self._arn.kind,
            "region": self._arn.region,
            "account": self._arn.account,
            "primary_version": primary,
        }

    def close(self) -> None:
        """Close the client's HTTP connections."""
        self._client.close()


def _check_blob(blob: bytes) -> None:
    """IntegrityError for a ciphertext KMS could never have produced."""
    if not isinstance(blob, bytes) or not 1 <= len(blob) <= _MAX_CIPHERTEXT:
        raise IntegrityError("the wrapped key did not authenticate under the AWS KMS key")


def open_aws_kms_kek(uri: str) -> AwsKmsKekProvider:
    """Factory registered for ``aws-kms://``: open a provider (ConfigError for a bad URI)."""
    return AwsKmsKekProvider(uri)
