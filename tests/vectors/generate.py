"""Write the known-answer vectors engine-v1.json and secret-v1.json (run once per format version).

    .venv/bin/python tests/vectors/generate.py            # refuses to overwrite
    .venv/bin/python tests/vectors/generate.py --force    # only when adding a new format version

No key bytes are stored in the files. Every key is derived at run time from a
public label with the test-only derivation

    key = SHA-256(b"kmsbox-test-vector-key:" + label.encode("utf-8"))

which anyone can recompute: these keys protect nothing and must never be used
for real data. Nonces are random, so running this again writes different blobs;
the committed files are the reference that every later kmsbox version must still
open (tests/test_vectors.py), so never regenerate them to make a test pass.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kmsbox import Envelope
from kmsbox import format as fmt
from kmsbox._crypto import Aead
from kmsbox.keys import KeyCache, rewrap_secret, seal_secret
from kmsbox.providers.local import LocalKekProvider

HERE = Path(__file__).resolve().parent
DERIVATION_PREFIX = b"kmsbox-test-vector-key:"
DERIVATION = 'key = SHA-256(b"kmsbox-test-vector-key:" + label.encode("utf-8")); public and test-only'
ENV_VAR = "KMSBOX_VECTOR_KEK"
KEK_LABELS = {"v3": "engine-kek-v3", "v2": "engine-kek-v2", "v1": "engine-kek-v1"}
LONG_TEXT = ("The quick brown fox jumps over the lazy dog. " * 8).encode("ascii")


def derive_key(label: str) -> bytes:
    """The public, test-only key of a label."""
    return hashlib.sha256(DERIVATION_PREFIX + label.encode("utf-8")).digest()


def _flip(blob: bytes, position: int) -> str:
    data = bytearray(blob)
    data[position] ^= 0x01
    return bytes(data).hex()


def _engine_provider(primary: str) -> LocalKekProvider:
    keys = {version: derive_key(label) for version, label in KEK_LABELS.items()}
    return LocalKekProvider(f"env://{ENV_VAR}", keys, primary, "test vectors")


def _engine_tampered(blob: bytes, context: dict[str, str]) -> list[dict[str, Any]]:
    env = fmt.parse_message(blob)
    header = len(env.header)
    return [
        {"what": "flipped bit in the KEK version", "blob_hex": _flip(blob, 5)},
        {
            "what": "flipped bit in the wrapped data key",
            "blob_hex": _flip(blob, header - 4 - len(env.wrapped_key) // 2),
        },
        {"what": "flipped bit in the header CRC", "blob_hex": _flip(blob, header - 1)},
        {"what": "flipped bit in the nonce", "blob_hex": _flip(blob, header)},
        {"what": "flipped bit in the tag", "blob_hex": _flip(blob, len(blob) - 1)},
        {"what": "truncated by one byte", "blob_hex": blob[:-1].hex()},
        {"what": "extended by one byte", "blob_hex": (blob + b"\x00").hex()},
        {"what": "another context", "blob_hex": blob.hex(), "context": {**context, "kmsbox:tampered": "1"}},
    ]


def engine_vectors() -> dict[str, Any]:
    """Messages under each KEK version, with several contexts and plaintexts."""
    cases: list[tuple[str, str, dict[str, str], bytes]] = [
        ("empty plaintext, empty context", "v3", {}, b""),
        ("short text with a row context", "v3", {"table": "payments", "row": "42"}, b"hello, kmsbox"),
        (
            "unicode context and plaintext",
            "v2",
            {"tenant": "t\u00fcr-123", "purpose": "\u6d4b\u8bd5"},
            "na\u00efve \u2713".encode(),
        ),
        ("empty context value, wrapped by v1", "v1", {"k": ""}, LONG_TEXT),
        ("binary plaintext", "v3", {"table": "blobs"}, bytes(range(256))),
    ]
    vectors = []
    for index, (description, version, context, plaintext) in enumerate(cases, start=1):
        envelope = Envelope(_engine_provider(version), cache=KeyCache(max_uses=1))
        blob = envelope.encrypt(plaintext, context)
        assert Envelope(_engine_provider("v3")).decrypt(blob, context) == plaintext
        vectors.append(
            {
                "id": f"engine-{index}",
                "description": description,
                "kek_version": version,
                "context": context,
                "plaintext_hex": plaintext.hex(),
                "blob_hex": blob.hex(),
                "tampered": _engine_tampered(blob, context),
            }
        )
    return {
        "format": "kmsbox-vectors/1",
        "blob_kind": "engine message (kind 0x01)",
        "format_version": fmt.FORMAT_VERSION,
        "key_derivation": DERIVATION,
        "kek": {
            "uri": f"env://{ENV_VAR}",
            "env_value": "v3:KEY(engine-kek-v3),v2:KEY(engine-kek-v2),v1:KEY(engine-kek-v1) as hex",
            "versions": [{"version": v, "label": label} for v, label in KEK_LABELS.items()],
            "primary": "v3",
        },
        "vectors": vectors,
    }


def _secret_tampered(blob: bytes, namespace: str, name: str, secret_version: int) -> list[dict[str, Any]]:
    return [
        {"what": "flipped bit in the namespace-key version", "blob_hex": _flip(blob, 7)},
        {"what": "flipped bit in the header CRC", "blob_hex": _flip(blob, 11)},
        {"what": "flipped bit in the DEK nonce", "blob_hex": _flip(blob, 12)},
        {"what": "flipped bit in the wrapped DEK", "blob_hex": _flip(blob, 40)},
        {"what": "flipped bit in the value nonce", "blob_hex": _flip(blob, 72)},
        {"what": "flipped bit in the value tag", "blob_hex": _flip(blob, len(blob) - 1)},
        {"what": "truncated by one byte", "blob_hex": blob[:-1].hex()},
        {"what": "extended by one byte", "blob_hex": (blob + b"\x00").hex()},
        {"what": "moved to another name", "blob_hex": blob.hex(), "name": name + "-moved"},
        {"what": "moved to another namespace", "blob_hex": blob.hex(), "namespace": namespace + "-moved"},
        {"what": "moved to another secret version", "blob_hex": blob.hex(), "secret_version": secret_version + 1},
    ]


def _namespace_key_label(namespace: str, version: int) -> str:
    return f"namespace-key:{namespace}:v{version}"


def secret_vectors() -> dict[str, Any]:
    """Stored secret blobs; the payload starts with the store's 1-byte value type tag."""
    cases: list[tuple[str, str, str, int, int, bytes]] = [
        ("a str value", "app:production", "openai", 1, 1, b"s" + b"sk-test-not-a-real-key"),
        ("an empty str value", "app:production", "empty", 1, 1, b"s"),
        ("a bytes value in a tenant namespace", "tenant-123", "cert.der", 4, 2, b"b" + bytes(range(64))),
        ("unicode str value", "team-alpha:testing", "greeting", 2, 1, b"s" + "gr\u00fc\u00df dich \u2713".encode()),
    ]
    vectors = []
    for index, (description, namespace, name, secret_version, nkv, payload) in enumerate(cases, start=1):
        key = Aead(derive_key(_namespace_key_label(namespace, nkv)))
        blob = seal_secret(key, nkv, namespace, name, secret_version, payload)
        vectors.append(
            _secret_entry(f"secret-{index}", description, namespace, name, secret_version, nkv, payload, blob)
        )

    # A DEK rewrapped from namespace-key v1 to v2: the value ciphertext was made under v1's era.
    namespace, name, secret_version, payload = "app:production", "rotated", 3, b"s" + b"value from before rotation"
    v1 = Aead(derive_key(_namespace_key_label(namespace, 1)))
    v2 = Aead(derive_key(_namespace_key_label(namespace, 2)))
    blob = rewrap_secret(
        seal_secret(v1, 1, namespace, name, secret_version, payload), v1, v2, 2, namespace, name, secret_version
    )
    vectors.append(
        _secret_entry(
            f"secret-{len(vectors) + 1}",
            "DEK rewrapped to namespace-key v2",
            namespace,
            name,
            secret_version,
            2,
            payload,
            blob,
        )
    )
    return {
        "format": "kmsbox-vectors/1",
        "blob_kind": "stored secret (kind 0x02)",
        "format_version": fmt.FORMAT_VERSION,
        "key_derivation": DERIVATION,
        "namespace_key_label": "namespace-key:{namespace}:v{namespace_key_version}",
        "payload_note": "payload = 1-byte type tag added by the store (b's' str as UTF-8, b'b' bytes) + value",
        "vectors": vectors,
    }


def _secret_entry(
    vector_id: str,
    description: str,
    namespace: str,
    name: str,
    secret_version: int,
    nkv: int,
    payload: bytes,
    blob: bytes,
) -> dict[str, Any]:
    return {
        "id": vector_id,
        "description": description,
        "namespace": namespace,
        "name": name,
        "secret_version": secret_version,
        "namespace_key_version": nkv,
        "namespace_key_label": _namespace_key_label(namespace, nkv),
        "payload_hex": payload.hex(),
        "blob_hex": blob.hex(),
        "tampered": _secret_tampered(blob, namespace, name, secret_version),
    }


def main(argv: list[str]) -> int:
    """Write both files; refuse to overwrite without --force."""
    outputs: dict[str, Callable[[], dict[str, Any]]] = {
        "engine-v1.json": engine_vectors,
        "secret-v1.json": secret_vectors,
    }
    force = "--force" in argv
    for filename, build in outputs.items():
        path = HERE / filename
        if path.exists() and not force:
            print(f"{path} exists; committed vectors are the reference (pass --force only for a new format)")
            return 1
        path.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
