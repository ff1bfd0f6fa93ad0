"""Several KEKs: escrow copies of every namespace key, and migration to another KEK
(another provider too) without re-encrypting a single secret."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lifecycle_helpers import Keyring, fill, read_all, secret_blobs

from kmsbox.errors import ConfigError, KeyUnavailable
from kmsbox.plugins import fake_servers
from kmsbox.store.service import SecretStore

Opener = Callable[..., SecretStore]


def _fill(store: SecretStore, *namespaces: str, count: int = 8) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for ns in namespaces:
        out |= {(ns, name): value for name, value in fill(store, ns, count).items()}
    return out


def _wrap_uris(store: SecretStore) -> dict[tuple[str, int], set[str]]:
    return {
        (ns, key["version"]): {w["kek_uri"] for w in key["wraps"]}
        for ns, info in store.status()["namespaces"].items()
        for key in info["keys"]
    }


def test_a_store_opened_with_two_keks_opens_with_either_alone(
    open_store: Opener, keyring: Keyring, env_kek: str
) -> None:
    store = open_store(kek=[keyring.uri, env_kek])
    expected = _fill(store, "app", "tenant-1")
    store.rotate_namespace_key("app")
    store.put("after-rotation", "v2 value", namespace="app")
    expected[("app", "after-rotation")] = "v2 value"
    assert all(uris == {keyring.uri, env_kek} for uris in _wrap_uris(store).values())
    assert [k["uri"] for k in store.status()["keks"]] == [keyring.uri, env_kek]
    store.close()

    read_all(open_store(kek=[env_kek]), expected)  # the primary removed from the config
    read_all(open_store(kek=[keyring.uri]), expected)


def test_adding_an_escrow_kek_then_rewrap_copies_every_namespace_key_under_it(
    open_store: Opener, keyring: Keyring, second_keyring: Keyring, db_path: Path
) -> None:
    store = open_store()
    expected = _fill(store, "app", "tenant-1")
    store.close()
    before = secret_blobs(db_path)

    store = open_store(kek=[keyring.uri, second_keyring.uri])
    pending = store.status()["namespaces"]["app"]["pending"]
    assert pending == [
        f"v1: no wrap under configured KEK {second_keyring.uri} (if that KEK is new: kmsbox rewrap-namespace-keys; if the store was migrated away from it: stop configuring it)"
    ]
    assert "missing_wrap" in {i.code for i in store.diagnose().issues}
    report = store.rewrap_namespace_keys()
    assert (report.processed, report.remaining) == (3, 0)
    assert all(uris == {keyring.uri, second_keyring.uri} for uris in _wrap_uris(store).values())
    assert secret_blobs(db_path) == before
    store.close()

    read_all(open_store(kek=[second_keyring.uri]), expected)


def test_migrate_kek_from_env_to_file_then_drop_old_without_touching_a_secret(
    open_store: Opener, keyring: Keyring, env_kek: str, db_path: Path
) -> None:
    store = open_store(kek=env_kek)
    expected = _fill(store, "app", "tenant-1", "tenant-2")
    store.rotate_namespace_key("tenant-1")  # a second key version to carry over
    before = secret_blobs(db_path)

    dry = store.migrate_kek(keyring.uri, drop_old=True, dry_run=True)
    assert (dry.dry_run, dry.remaining, dry.processed, dry.details["would_drop"]) == (True, 5, 0, True)
    assert all(uris == {env_kek} for uris in _wrap_uris(store).values())

    # Escrow first: wrap everything under the new KEK, keep the old wraps.
    escrow = store.migrate_kek(keyring.uri)
    assert (escrow.processed, escrow.remaining, escrow.details["to"]) == (5, 0, keyring.uri)
    assert all(uris == {env_kek, keyring.uri} for uris in _wrap_uris(store).values())
    assert secret_blobs(db_path) == before
    read_all(open_store(kek=[keyring.uri]), expected)  # verify the new KEK alone opens everything

    again = store.migrate_kek(keyring.uri, drop_old=True)
    assert (again.processed, again.skipped, again.details["dropped_wraps"]) == (0, 5, 5)
    assert all(uris == {keyring.uri} for uris in _wrap_uris(store).values())
    assert secret_blobs(db_path) == before, "a KEK migration re-encrypts no secret"
    assert [e.detail["to"] for e in store.iter_audit_events() if e.action == "migrate"] == [keyring.uri] * 2
    store.close()

    read_all(open_store(kek=[keyring.uri]), expected)
    with pytest.raises(ConfigError, match="cannot be opened with the configured KEK"):
        open_store(kek=[env_kek])


def test_migrate_kek_drops_nothing_when_a_key_lacks_the_new_wrap(
    open_store: Opener, keyring: Keyring, second_keyring: Keyring
) -> None:
    store = open_store()
    expected = _fill(store, "app")
    rotated = False

    def rotate_midway(done: int, total: int | None) -> None:
        # A concurrent rotation between the wrap phase and the drop phase: its new key
        # is wrapped under the configured KEK only.
        nonlocal rotated
        if not rotated and done == total:  # after the last namespace's wraps are written
            rotated = True
            store.rotate_namespace_key("app")

    with pytest.raises(KeyUnavailable, match="not dropping"):
        store.migrate_kek(second_keyring.uri, drop_old=True, progress=rotate_midway)
    assert all(keyring.uri in uris for uris in _wrap_uris(store).values()), "no old wrap may be dropped"
    store.close()
    read_all(open_store(kek=[keyring.uri]), expected)

    store = open_store()
    report = store.migrate_kek(second_keyring.uri, drop_old=True)  # a re-run finishes the job
    assert (report.processed, report.details["dropped_wraps"]) == (1, 3)  # app v2 wrapped; 3 old wraps gone
    store.close()
    read_all(open_store(kek=[second_keyring.uri]), expected)


# --- moving to a cloud KMS (the fakes of the installed plugins) ---------------------------

CLOUDS = {"vault": "fake_vault", "aws": "fake_aws_kms", "gcp": "fake_gcp_kms"}


@pytest.fixture(params=sorted(CLOUDS))
def cloud_fake(request: pytest.FixtureRequest) -> Any:
    """A running fake KMS of an installed plugin; skipped (also in CI) when the plugin is not installed."""
    if request.param not in fake_servers():
        pytest.skip(f"the {request.param} fake is not installed (pip install kmsbox-{request.param})")
    return request.getfixturevalue(CLOUDS[request.param])


def test_migrate_kek_to_a_cloud_kms_then_rotate_it(
    open_store: Opener, env_kek: str, cloud_fake: Any, db_path: Path
) -> None:
    target = cloud_fake.create_key(f"lifecycle-{uuid.uuid4().hex[:10]}")
    store = open_store(kek=env_kek)
    expected = _fill(store, "app", "tenant-1", count=5)
    before = secret_blobs(db_path)

    report = store.migrate_kek(target, drop_old=True)
    assert (report.processed, report.remaining, report.details["dropped_wraps"]) == (3, 0, 3)
    assert all(uris == {target} for uris in _wrap_uris(store).values())
    store.close()
    assert secret_blobs(db_path) == before
    store = open_store(kek=[target])
    read_all(store, expected)
    store.close()
    with pytest.raises(ConfigError):
        open_store(kek=[env_kek])

    # Routine rotation in the new KMS: one rewrap of the namespace keys, no secret touched.
    cloud_fake.rotate_key(target)
    store = open_store(kek=[target])
    primary = store.status()["keks"][0]["primary_version"]
    rewrap = store.rewrap_namespace_keys()
    assert rewrap.remaining == 0
    assert rewrap.processed + rewrap.skipped == 3
    assert {
        w["kek_version"] for info in store.status()["namespaces"].values() for k in info["keys"] for w in k["wraps"]
    } == {primary}
    assert all(info["pending"] == [] for info in store.status()["namespaces"].values())
    assert secret_blobs(db_path) == before
    store.close()
    read_all(open_store(kek=[target]), expected)
