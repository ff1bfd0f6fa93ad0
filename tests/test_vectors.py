"""Known-answer vectors: every committed vector opens to its exact plaintext, and its tampered forms fail.

The vector files hold no key bytes: keys are derived from public labels with the
test-only derivation documented in tests/vectors/generate.py and docs/format.md.
Every later version of kmsbox must still open every file here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from kmsbox import Envelope, open_kek
from kmsbox import format as fmt
from kmsbox._crypto import Aead
from kmsbox.errors import IntegrityError, KeyUnavailable
from kmsbox.keys import open_secret

_DIR = Path(__file__).resolve().parent / "vectors"
_DERIVATION = 'key = SHA-256(b"kmsbox-test-vector-key:" + label.encode("utf-8")); public and test-only'


def derive_key(label: str) -> bytes:
    return hashlib.sha256(b"kmsbox-test-vector-key:" + label.encode("utf-8")).digest()


def _load(pattern: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    files = sorted(_DIR.glob(pattern))
    assert files, f"no vector files {pattern} in {_DIR}"
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for path in files:
        document = json.loads(path.read_text(encoding="utf-8"))
        out.extend((document, vector) for vector in document["vectors"])
    return out


_ENGINE = _load("engine-v*.json")
_SECRET = _load("secret-v*.json")


def _ids(items: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    return [vector["id"] for _, vector in items]


def test_vector_files_are_present_and_keyless() -> None:
    assert {p.name for p in _DIR.glob("*.json")} >= {"engine-v1.json", "secret-v1.json"}
    for path in _DIR.glob("*.json"):
        document = json.loads(path.read_text(encoding="utf-8"))
        assert document["key_derivation"] == _DERIVATION
        assert len(document["vectors"]) >= 4
        assert not any(k in path.read_text(encoding="utf-8") for k in ('"key":', '"key_hex"'))


# --- engine messages ---------------------------------------------------------------------------


def _engine_kek(monkeypatch: pytest.MonkeyPatch, document: dict[str, Any], drop: str | None = None) -> str:
    versions = [entry for entry in document["kek"]["versions"] if entry["version"] != drop]
    value = ",".join(f"{entry['version']}:{derive_key(entry['label']).hex()}" for entry in versions)
    uri: str = document["kek"]["uri"]
    monkeypatch.setenv(uri.removeprefix("env://"), value)
    return uri


@pytest.mark.parametrize(("document", "vector"), _ENGINE, ids=_ids(_ENGINE))
def test_engine_vector_opens_to_its_plaintext(
    monkeypatch: pytest.MonkeyPatch, document: dict[str, Any], vector: dict[str, Any]
) -> None:
    blob = bytes.fromhex(vector["blob_hex"])
    assert blob[:4] == b"KB" + bytes((document["format_version"], fmt.KIND_MESSAGE))
    assert fmt.parse_message(blob).kek_version == vector["kek_version"]
    envelope = Envelope(_engine_kek(monkeypatch, document))
    assert envelope.decrypt(blob, vector["context"]) == bytes.fromhex(vector["plaintext_hex"])


@pytest.mark.parametrize(("document", "vector"), _ENGINE, ids=_ids(_ENGINE))
def test_engine_vector_tampered_forms_fail(
    monkeypatch: pytest.MonkeyPatch, document: dict[str, Any], vector: dict[str, Any]
) -> None:
    uri = _engine_kek(monkeypatch, document)
    assert vector["tampered"]
    for tampered in vector["tampered"]:
        with pytest.raises(IntegrityError):
            Envelope(uri).decrypt(bytes.fromhex(tampered["blob_hex"]), tampered.get("context", vector["context"]))
    # And at run time: every single-bit flip in the first 200 bytes and the last 32, each truncation.
    blob = bytes.fromhex(vector["blob_hex"])
    envelope = Envelope(uri)
    positions = sorted(set(range(min(len(blob), 200))) | set(range(max(0, len(blob) - 32), len(blob))))
    for position in positions:
        data = bytearray(blob)
        data[position] ^= 0x04
        with pytest.raises(IntegrityError):
            envelope.decrypt(bytes(data), vector["context"])
    for length in range(0, len(blob), 7):
        with pytest.raises(IntegrityError):
            envelope.decrypt(blob[:length], vector["context"])


@pytest.mark.parametrize(("document", "vector"), _ENGINE, ids=_ids(_ENGINE))
def test_engine_vector_without_its_kek_version_is_key_unavailable(
    monkeypatch: pytest.MonkeyPatch, document: dict[str, Any], vector: dict[str, Any]
) -> None:
    uri = _engine_kek(monkeypatch, document, drop=vector["kek_version"])
    with pytest.raises(KeyUnavailable):
        Envelope(uri).decrypt(bytes.fromhex(vector["blob_hex"]), vector["context"])


def test_engine_vectors_cover_every_kek_version() -> None:
    for document, _ in _ENGINE:
        declared = {entry["version"] for entry in document["kek"]["versions"]}
        used = {vector["kek_version"] for d, vector in _ENGINE if d is document}
        assert used == declared


def test_engine_vector_kek_opens_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    document = _ENGINE[0][0]
    kek = open_kek(_engine_kek(monkeypatch, document))
    assert kek.primary_version() == document["kek"]["primary"]


# --- stored secrets -----------------------------------------------------------------------------


def _namespace_key_for(vector: dict[str, Any]) -> Any:
    def key_for(version: int) -> Aead:
        assert version == vector["namespace_key_version"]
        return Aead(derive_key(vector["namespace_key_label"]))

    return key_for


@pytest.mark.parametrize(("document", "vector"), _SECRET, ids=_ids(_SECRET))
def test_secret_vector_opens_to_its_payload(document: dict[str, Any], vector: dict[str, Any]) -> None:
    blob = bytes.fromhex(vector["blob_hex"])
    assert blob[:4] == b"KB" + bytes((document["format_version"], fmt.KIND_SECRET))
    assert fmt.parse_secret(blob).namespace_key_version == vector["namespace_key_version"]
    assert vector["namespace_key_label"] == document["namespace_key_label"].format(**vector)
    payload = open_secret(
        blob, _namespace_key_for(vector), vector["namespace"], vector["name"], vector["secret_version"]
    )
    assert payload == bytes.fromhex(vector["payload_hex"])
    assert payload[:1] in (b"s", b"b")
    assert len(blob) == len(payload) + fmt.SECRET_OVERHEAD


@pytest.mark.parametrize(("document", "vector"), _SECRET, ids=_ids(_SECRET))
def test_secret_vector_tampered_forms_fail(document: dict[str, Any], vector: dict[str, Any]) -> None:
    key_for = _namespace_key_for(vector)
    assert vector["tampered"]
    for tampered in vector["tampered"]:
        where = {k: tampered.get(k, vector[k]) for k in ("namespace", "name", "secret_version")}
        with pytest.raises(IntegrityError):
            open_secret(
                bytes.fromhex(tampered["blob_hex"]),
                lambda v: Aead(derive_key(vector["namespace_key_label"])),
                where["namespace"],
                where["name"],
                where["secret_version"],
            )
    blob = bytes.fromhex(vector["blob_hex"])
    for position in range(len(blob)):
        data = bytearray(blob)
        data[position] ^= 0x40
        with pytest.raises(IntegrityError):
            open_secret(
                bytes(data),
                lambda v: key_for(vector["namespace_key_version"]),
                vector["namespace"],
                vector["name"],
                vector["secret_version"],
            )


@pytest.mark.parametrize(("document", "vector"), _SECRET, ids=_ids(_SECRET))
def test_secret_vector_under_another_namespace_key_fails(document: dict[str, Any], vector: dict[str, Any]) -> None:
    other = Aead(derive_key(vector["namespace_key_label"] + "-other"))
    with pytest.raises(IntegrityError):
        open_secret(
            bytes.fromhex(vector["blob_hex"]),
            lambda v: other,
            vector["namespace"],
            vector["name"],
            vector["secret_version"],
        )
