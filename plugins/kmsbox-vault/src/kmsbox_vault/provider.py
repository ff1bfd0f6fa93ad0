"""The Vault transit KEK provider: ``hcvault://HOST[:PORT]/MOUNT/keys/NAME``.

Keys are wrapped with the transit ``encrypt`` endpoint and unwrapped with
``decrypt``; batches use ``batch_input``. The kmsbox context is bound to each
ciphertext in one of two ways, chosen by the transit key itself:

- a *derived* key (``derived=true``, recommended): the context goes as Vault's
  ``context``, so Vault derives a per-context key; ``rewrap`` then runs inside
  Vault and the plaintext never leaves it;
- a plain key: the context goes as ``associated_data`` (AES-GCM / ChaCha20 AAD).
  Vault's ``rewrap`` endpoint does not accept ``associated_data`` (hashicorp/vault
  #29532), so rewrap falls back to decrypt + encrypt through this process.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import hvac
import hvac.exceptions as hvac_exc
import requests
from requests.adapters import HTTPAdapter

from kmsbox import format as fmt
from kmsbox.errors import ConfigError, IntegrityError, KmsboxError, ProviderError
from kmsbox.kek import BaseKekProvider, Context, WrappedKey
from kmsbox.retry import RetryPolicy, call_with_retry
from kmsbox_vault.errors import classify_transport, error_for_message, error_for_status
from kmsbox_vault.settings import VaultSettings, settings_from_env
from kmsbox_vault.uri import VaultKeyRef, parse_key_uri

__all__ = ["BATCH_SIZE", "VaultKekProvider", "open_vault_kek"]

#: Items per ``batch_input`` request (Vault has no fixed limit; this keeps bodies small).
BATCH_SIZE = 500
_AEAD_TYPES = frozenset({"aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "xchacha20-poly1305"})
_CIPHERTEXT_RE = re.compile(r"^vault:v([1-9][0-9]{0,9}):[A-Za-z0-9+/]+={0,2}$")
_VERSION_RE = re.compile(r"^v([1-9][0-9]{0,9})$")
T = TypeVar("T")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _batch_results(body: Any) -> list[Any] | None:
    data = body.get("data") if isinstance(body, dict) else None
    results = data.get("batch_results") if isinstance(data, dict) else None
    return results if isinstance(results, list) else None


def _refuse_ignored_aad(body: Any, what: str) -> Any:
    """Fail closed when Vault (before 1.13) ignored ``associated_data``: the context would not be bound."""
    warnings = body.get("warnings") if isinstance(body, dict) else None
    if isinstance(warnings, list) and any("associated_data" in str(w) for w in warnings):
        raise ProviderError(
            f"{what}: this Vault ignores associated_data (it needs Vault 1.13+); use a derived key instead",
            transient=False,
            code="unsupported",
        )
    return body


class VaultKekProvider(BaseKekProvider):
    """A KEK held in a Vault transit key. Thread-safe: concurrent calls use separate HTTP sessions."""

    def __init__(self, uri: str, ref: VaultKeyRef, settings: VaultSettings, policy: RetryPolicy) -> None:
        super().__init__(uri)
        self._ref = ref
        self._settings = settings
        self._policy = policy
        self._lock = threading.Lock()
        self._idle: list[hvac.Client] = []
        self._closed = False
        self._token: str | None = settings.token
        self._derived: bool | None = None
        self._what = f"Vault key {ref.mount}/keys/{ref.name}"

    # -- plumbing -----------------------------------------------------------------

    def _new_client(self) -> hvac.Client:
        session = requests.Session()
        # kmsbox's call_with_retry owns retries; the HTTP layer must not add its own.
        for prefix in ("http://", "https://"):
            session.mount(prefix, HTTPAdapter(max_retries=0))
        # hvac takes verify/cert from a given session, so set them there too.
        session.verify = self._settings.verify
        session.cert = self._settings.client_cert
        return hvac.Client(
            url=self._settings.address,
            token="",
            verify=self._settings.verify,
            cert=self._settings.client_cert,
            timeout=self._policy.timeout,  # type: ignore[arg-type]  # the stub says int; requests takes floats
            namespace=self._settings.namespace,
            session=session,
        )

    def _borrow(self) -> hvac.Client:
        """An idle client, or a new one: concurrent calls never share an HTTP session."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._new_client()

    def _give_back(self, client: hvac.Client) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(client)
                return
        client.adapter.close()

    def _login(self, client: hvac.Client) -> str:
        approle = self._settings.approle
        assert approle is not None
        try:
            response = client.auth.approle.login(
                role_id=approle.role_id, secret_id=approle.secret_id, use_token=False, mount_point=approle.mount
            )
        except hvac_exc.InvalidRequest as exc:
            raise ProviderError(
                f"AppRole login at auth/{approle.mount}/login was refused (wrong role id or secret id?)",
                transient=False,
                code="auth_failed",
            ) from exc
        token = response.get("auth", {}).get("client_token") if isinstance(response, dict) else None
        if not isinstance(token, str) or not token:
            raise ProviderError("AppRole login returned no client token", transient=False, code="bad_response")
        return token

    def _token_for(self, client: hvac.Client) -> str:
        with self._lock:
            if self._token is None:
                self._token = self._login(client)
            client.token = self._token
            return self._token

    def _forget_token(self, stale: str) -> None:
        with self._lock:
            if self._token == stale:
                self._token = None

    def _call(self, action: str, request: Callable[[hvac.Client], Any], *, batch: bool = False) -> Any:
        """Run one Vault request with retries; 400s become typed kmsbox errors at once."""
        what = f"{action} with {self._what}"

        def attempt() -> Any:
            client = self._borrow()
            try:
                return self._attempt(client, request, what, batch)
            finally:
                self._give_back(client)

        return call_with_retry(attempt, lambda exc: classify_transport(exc, what), self._policy)

    def _attempt(self, client: hvac.Client, request: Callable[[hvac.Client], Any], what: str, batch: bool) -> Any:
        relogged = False
        while True:
            token = self._token_for(client)
            try:
                return _refuse_ignored_aad(request(client), what)
            except hvac_exc.Forbidden:
                # An AppRole token may have expired: log in again, once.
                if self._settings.approle is None or relogged:
                    raise
                relogged = True
                self._forget_token(token)
            except hvac_exc.InvalidRequest as exc:
                # Vault answers a batch with per-item errors as a 400 that still carries the results.
                if batch and _batch_results(exc.json) is not None:
                    return exc.json
                raise error_for_status(exc, what) from exc

    def _read_key(self) -> dict[str, Any]:
        ref = self._ref
        body = self._call(
            "read",
            # types-hvac leaves read_key untyped.
            lambda c: c.secrets.transit.read_key(name=ref.name, mount_point=ref.mount),  # type: ignore[no-untyped-call]
        )
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("latest_version"), int):
            raise ProviderError(
                f"{self._what}: Vault returned an unexpected key description", transient=False, code="bad_response"
            )
        if self._derived is None:
            self._derived = self._check_key(data)
        return data

    def _check_key(self, data: dict[str, Any]) -> bool:
        """Refuse keys kmsbox cannot use; return whether the key is derived (Vault never changes that)."""
        key_type = data.get("type")
        if key_type not in _AEAD_TYPES:
            raise ConfigError(f"{self._what} is of type {key_type!r}; kmsbox needs an AEAD key such as aes256-gcm96")
        if data.get("convergent_encryption"):
            raise ConfigError(f"{self._what} uses convergent encryption; create a non-convergent key for kmsbox")
        return bool(data.get("derived"))

    def _is_derived(self) -> bool:
        """Whether the transit key derives per-context keys (learned from the first key read)."""
        if self._derived is None:
            self._read_key()
        assert self._derived is not None
        return self._derived

    def _binding(self, context: Context) -> dict[str, str]:
        encoded = _b64(fmt.encode_context(context))
        return {"context": encoded} if self._is_derived() else {"associated_data": encoded}

    def _wrapped(self, ciphertext: Any) -> WrappedKey:
        match = _CIPHERTEXT_RE.match(ciphertext) if isinstance(ciphertext, str) else None
        if match is None:
            raise ProviderError(
                f"{self._what}: Vault returned a malformed ciphertext", transient=False, code="bad_response"
            )
        return WrappedKey(self.uri, f"v{match.group(1)}", ciphertext.encode("ascii"))

    def _ciphertext(self, wrapped: WrappedKey) -> str:
        self._check_uri(wrapped)
        try:
            text = wrapped.ciphertext.decode("ascii")
        except UnicodeDecodeError:
            raise IntegrityError("wrapped key is not a Vault ciphertext") from None
        match = _CIPHERTEXT_RE.match(text)
        if match is None or f"v{match.group(1)}" != wrapped.key_version:
            raise IntegrityError("wrapped key is not a Vault ciphertext of the recorded version")
        return text

    def _plaintext(self, value: Any) -> bytes:
        try:
            if not isinstance(value, str):
                raise ValueError("not a string")
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ProviderError(
                f"{self._what}: Vault returned a malformed plaintext", transient=False, code="bad_response"
            ) from None

    def _items(self, results: list[Any] | None, expected: int, field: str) -> list[Any]:
        if results is None or len(results) != expected:
            raise ProviderError(
                f"{self._what}: Vault returned a batch of the wrong size", transient=False, code="bad_response"
            )
        values = []
        for item in results:
            if not isinstance(item, dict):
                raise ProviderError(
                    f"{self._what}: Vault returned a malformed batch item", transient=False, code="bad_response"
                )
            if item.get("error"):
                raise error_for_message(str(item["error"]), self._what)
            values.append(item.get(field))
        return values

    # -- the KEK protocol ---------------------------------------------------------

    def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """Encrypt ``key`` under the latest key version, binding ``context``."""
        fields = self._binding(context)
        ref = self._ref
        body = self._call(
            "wrap",
            lambda c: c.secrets.transit.encrypt_data(
                name=ref.name, plaintext=_b64(key), mount_point=ref.mount, **fields
            ),
        )
        return self._wrapped(body.get("data", {}).get("ciphertext") if isinstance(body, dict) else None)

    def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """Decrypt ``wrapped``; IntegrityError when the context or bytes do not authenticate."""
        ciphertext = self._ciphertext(wrapped)
        fields = self._binding(context)
        ref = self._ref
        body = self._call(
            "unwrap",
            lambda c: c.secrets.transit.decrypt_data(
                name=ref.name, ciphertext=ciphertext, mount_point=ref.mount, **fields
            ),
        )
        return self._plaintext(body.get("data", {}).get("plaintext") if isinstance(body, dict) else None)

    def wrap_many(self, items: Sequence[tuple[bytes, Context]]) -> list[WrappedKey]:
        """Encrypt several keys with ``batch_input`` (one request per ``BATCH_SIZE`` items)."""
        out: list[WrappedKey] = []
        ref = self._ref
        for chunk in _chunks(items, BATCH_SIZE):
            batch = [{"plaintext": _b64(key), **self._binding(context)} for key, context in chunk]

            def send(c: hvac.Client, b: list[dict[str, str]] = batch) -> Any:
                return c.secrets.transit.encrypt_data(name=ref.name, batch_input=b, mount_point=ref.mount)

            body = self._call("wrap", send, batch=True)
            out.extend(self._wrapped(ct) for ct in self._items(_batch_results(body), len(chunk), "ciphertext"))
        return out

    def unwrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[bytes]:
        """Decrypt several keys with ``batch_input``; the first failing item raises."""
        out: list[bytes] = []
        ref = self._ref
        for chunk in _chunks(items, BATCH_SIZE):
            batch = [{"ciphertext": self._ciphertext(w), **self._binding(context)} for w, context in chunk]

            def send(c: hvac.Client, b: list[dict[str, str]] = batch) -> Any:
                return c.secrets.transit.decrypt_data(name=ref.name, batch_input=b, mount_point=ref.mount)

            body = self._call("unwrap", send, batch=True)
            out.extend(self._plaintext(p) for p in self._items(_batch_results(body), len(chunk), "plaintext"))
        return out

    def rewrap(self, wrapped: WrappedKey, context: Context) -> WrappedKey:
        """Re-encrypt under the latest version; inside Vault for derived keys."""
        if not self._is_derived():
            return super().rewrap(wrapped, context)
        ciphertext = self._ciphertext(wrapped)
        fields = self._binding(context)
        ref = self._ref
        body = self._call(
            "rewrap",
            lambda c: c.secrets.transit.rewrap_data(  # type: ignore[no-untyped-call]  # untyped in types-hvac
                name=ref.name, ciphertext=ciphertext, mount_point=ref.mount, **fields
            ),
        )
        return self._wrapped(body.get("data", {}).get("ciphertext") if isinstance(body, dict) else None)

    def rewrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[WrappedKey]:
        """Re-encrypt several keys: Vault's batch ``rewrap`` for derived keys, else decrypt + encrypt."""
        if not self._is_derived():
            return super().rewrap_many(items)
        out: list[WrappedKey] = []
        ref = self._ref
        for chunk in _chunks(items, BATCH_SIZE):
            batch = [{"ciphertext": self._ciphertext(w), **self._binding(context)} for w, context in chunk]

            def send(c: hvac.Client, b: list[dict[str, str]] = batch) -> Any:
                # types-hvac leaves rewrap_data untyped.
                return c.secrets.transit.rewrap_data(  # type: ignore[no-untyped-call]
                    name=ref.name, ciphertext=None, batch_input=b, mount_point=ref.mount
                )

            body = self._call("rewrap", send, batch=True)
            out.extend(self._wrapped(ct) for ct in self._items(_batch_results(body), len(chunk), "ciphertext"))
        return out

    def primary_version(self) -> str:
        """``vN`` for the key's ``latest_version`` (what encrypt uses)."""
        return f"v{self._read_key()['latest_version']}"

    def version_available(self, version: str) -> bool:
        """True when ``version`` is in the key's working set (not below ``min_decryption_version``, not trimmed)."""
        match = _VERSION_RE.match(version)
        if match is None:
            return False
        data = self._read_key()
        number = int(match.group(1))
        keys = data.get("keys")
        minimum = data.get("min_decryption_version")
        minimum = minimum if isinstance(minimum, int) else 1
        return isinstance(keys, dict) and str(number) in keys and number >= minimum

    def describe(self) -> dict[str, str]:
        """Address, mount, key, auth method, binding and primary version; never a token."""
        info = {
            "provider": "vault",
            "address": self._settings.address,
            "namespace": self._settings.namespace or "",
            "mount": self._ref.mount,
            "key": self._ref.name,
            "auth": self._settings.auth_method,
        }
        try:
            info["binding"] = "context (derived key)" if self._is_derived() else "associated_data"
            info["primary_version"] = self.primary_version()
        except KmsboxError as exc:
            info["primary_version"] = f"unavailable ({getattr(exc, 'code', None) or type(exc).__name__})"
        return info

    def close(self) -> None:
        """Close the idle HTTP sessions; sessions in use close when their call ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for client in idle:
            client.adapter.close()


def open_vault_kek(uri: str) -> VaultKekProvider:
    """Open ``hcvault://...`` with settings from the environment; ConfigError when malformed or unauthenticated."""
    ref = parse_key_uri(uri)
    return VaultKekProvider(uri, ref, settings_from_env(ref), RetryPolicy.from_env())
