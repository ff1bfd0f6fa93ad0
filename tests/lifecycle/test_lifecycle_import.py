"""Import: dotenv and JSON parsing, import into a namespace, and moving rows encrypted by a
hand-rolled "master key" scheme in through a user-supplied decrypt function."""

from __future__ import annotations

import os
import string
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from lifecycle_helpers import read_all

from kmsbox.store.importing import parse_dotenv, parse_json_secrets
from kmsbox.store.service import SecretStore

Opener = Callable[..., SecretStore]

DOTENV = """\
# a comment
export DATABASE_URL=postgres://u:p@db/app
API_KEY = "quoted \\"value\\" with \\n escapes"
SINGLE='single # not a comment $HOME'
  INDENTED=plain value # an inline comment
EMPTY=
HASH=abc#def

dotted.name-1=x
"""


def test_parse_dotenv_handles_export_quotes_comments_and_escapes() -> None:
    assert parse_dotenv(DOTENV) == [
        ("DATABASE_URL", "postgres://u:p@db/app"),
        ("API_KEY", 'quoted "value" with \n escapes'),
        ("SINGLE", "single # not a comment $HOME"),
        ("INDENTED", "plain value"),
        ("EMPTY", ""),
        ("HASH", "abc#def"),
        ("dotted.name-1", "x"),
    ]
    assert parse_dotenv("") == []
    assert parse_dotenv("\r\n# only comments\r\nA=1\r\n") == [("A", "1")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nthis line has s3cret-value and no equals\n", "dotenv line 2 is not KEY=VALUE"),
        ("A=1\n\n1BAD=s3cret-value\n", "dotenv line 3 is not KEY=VALUE"),
        ('A="s3cret-value\n', "dotenv line 1: unterminated quote"),
        ("A='s3cret-value\n", "dotenv line 1: unterminated quote"),
        ("A=1\nB=2\nA=s3cret-value\n", "dotenv line 3: A is defined twice"),
    ],
)
def test_a_bad_dotenv_line_is_named_by_number_never_by_value(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_dotenv(text)
    assert str(info.value) == message
    assert "s3cret" not in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_dotenv_of_any_text_returns_pairs_or_raises_value_error(text: str) -> None:
    try:
        pairs = parse_dotenv(text)
    except ValueError as exc:
        assert str(exc).startswith("dotenv line ")
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in pairs)
    assert len({k for k, _ in pairs}) == len(pairs)


_VALUE_CHARS = st.characters(
    blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\x85"
) | st.sampled_from("\n\t\r\"\\'#= ")
_NAMES = st.text(string.ascii_letters + "_", min_size=1, max_size=8).flatmap(
    lambda head: st.text(string.ascii_letters + string.digits + "_.-", max_size=12).map(lambda tail: head + tail)
)


def _quote(value: str) -> str:
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_NAMES, st.text(_VALUE_CHARS, max_size=40), max_size=8))
def test_double_quoted_dotenv_values_round_trip(items: dict[str, str]) -> None:
    text = "\n".join(f"{'export ' if i % 2 else ''}{k}={_quote(v)}" for i, (k, v) in enumerate(items.items()))
    assert parse_dotenv(text) == list(items.items())


def test_parse_json_secrets() -> None:
    assert parse_json_secrets('{"a": "1", "b.c": "two\\nlines"}') == [("a", "1"), ("b.c", "two\nlines")]
    for text, message in [
        ('{"a": "s3cret-value"', "JSON is malformed at line 1"),
        ('["s3cret-value"]', "must be an object"),
        ('{"a": 123}', "the value of 'a' is not a string"),
        ("[" * 100_000, "nested too deeply"),
    ]:
        with pytest.raises(ValueError, match=message) as info:
            parse_json_secrets(text)
        assert "s3cret" not in str(info.value)


def test_import_from_dotenv_and_json_into_a_namespace(open_store: Opener) -> None:
    store = open_store()
    report = store.import_secrets(parse_dotenv(DOTENV), namespace="app", category="imported")
    assert (report.processed, report.skipped) == (7, 0)
    assert store.get("API_KEY", namespace="app").value == 'quoted "value" with \n escapes'
    assert store.info("EMPTY", namespace="app").category == "imported"
    report = store.import_secrets(parse_json_secrets('{"token": "t-1", "API_KEY": "changed"}'), namespace="app")
    assert (report.processed, report.skipped) == (1, 1)  # skip: an existing name keeps its value
    assert store.get("API_KEY", namespace="app").value == 'quoted "value" with \n escapes'

    report = store.import_secrets({"API_KEY": "changed"}, namespace="app", on_conflict="overwrite")
    assert report.processed == 1
    assert store.get("API_KEY", namespace="app").value == "changed"
    assert [v.version for v in store.history("API_KEY", namespace="app")] == [1, 2]
    with pytest.raises(ValueError, match="already exists"):
        store.import_secrets({"API_KEY": "again"}, namespace="app", on_conflict="fail")
    with pytest.raises(ValueError, match="on_conflict must be one of"):
        store.import_secrets({}, namespace="app", on_conflict="merge")

    events = [e for e in store.iter_audit_events() if e.action == "import"]
    assert len(events) == 9
    assert {e.detail["source"] for e in events} == {"import"}
    assert not any("changed" in repr(e.to_dict()) or "t-1" in repr(e.to_dict()) for e in events)


def test_an_import_stopped_by_a_bad_item_keeps_earlier_batches_and_resumes(open_store: Opener) -> None:
    store = open_store()
    store.batch_size = 10
    items = [(f"k{i:03d}", f"value {i}") for i in range(25)]
    with pytest.raises(ValueError, match=r"^import item 23: ") as info:
        store.import_secrets([*items[:22], ("bad name!", "s3cret-value"), *items[22:]], namespace="app")
    assert "s3cret" not in str(info.value)
    assert len(list(store.iter_secrets(namespace="app"))) == 20  # two committed batches

    report = store.import_secrets(items, namespace="app")
    assert (report.processed, report.skipped) == (5, 20)
    read_all(store, {("app", k): v for k, v in items})


# --- legacy rows: a hand-rolled AES-GCM "master key" scheme --------------------------------


def _legacy_table(master_key: bytes, count: int) -> list[tuple[int, str, bytes, bytes]]:
    aead = AESGCM(master_key)
    rows = []
    for i in range(count):
        nonce = os.urandom(12)
        rows.append(
            (i, f"legacy_{i:03d}", nonce, aead.encrypt(nonce, f"legacy secret {i} ✓".encode(), b"secrets-table"))
        )
    return rows


def test_import_rows_decrypts_legacy_ciphertext_with_the_users_function(open_store: Opener) -> None:
    master_key = AESGCM.generate_key(bit_length=256)
    table = _legacy_table(master_key, 30)
    aead = AESGCM(master_key)

    def decrypt(row: tuple[int, str, bytes, bytes]) -> tuple[str, str]:
        _, name, nonce, ciphertext = row
        return name, aead.decrypt(nonce, ciphertext, b"secrets-table").decode()

    store = open_store()
    store.batch_size = 8
    report = store.import_rows(table, decrypt, namespace="legacy", category="migrated", labels={"from": "v1-table"})
    assert (report.processed, report.batches) == (30, 4)
    expected = {("legacy", f"legacy_{i:03d}"): f"legacy secret {i} ✓" for i in range(30)}
    read_all(store, expected)
    assert store.info("legacy_000", namespace="legacy").labels == {"from": "v1-table"}
    assert {e.detail["source"] for e in store.iter_audit_events() if e.action == "import"} == {"legacy-rows"}

    # A row the function cannot decrypt stops the import, naming its position only.
    broken = [*table[:20], (99, "legacy_bad", os.urandom(12), b"not a ciphertext at all"), *table[20:]]
    fresh = open_store(url=None)
    fresh.batch_size = 8
    with pytest.raises(ValueError, match=r"^legacy row 21 could not be decrypted \(InvalidTag\)$"):
        fresh.import_rows(broken, decrypt, namespace="legacy-2")
    assert len(list(fresh.iter_secrets(namespace="legacy-2"))) == 16  # two committed batches
    report = fresh.import_rows(table, decrypt, namespace="legacy-2")
    assert (report.processed, report.skipped) == (14, 16)
