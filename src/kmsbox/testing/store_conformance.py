"""Conformance suite for a :class:`~kmsbox.store.service.SecretStore` on any backend and KEK.

Every storage backend and every KEK provider, ours or a third party's, runs these
behavioural tests against a store built on it. Subclass the suite in a test module
and give it a ``store`` fixture: an opened store on a *fresh* (empty) backend,
closed after the test::

    import pytest
    import kmsbox
    from kmsbox.testing.store_conformance import SecretStoreConformance

    class TestMyBackend(SecretStoreConformance):
        @pytest.fixture
        def store(self, kmsbox_local_kek):
            with kmsbox.open_store("mydb://test-database", kek=kmsbox_local_kek) as store:
                yield store

Open the store with the default settings (successful reads audited, a 1 MiB value
limit); the suite switches read audit off itself where it needs to. The tests use only
the public store API, so they check what a user relies on:
put/get and versions, values that come back as they went in, list with filters
and cursors (never values), history, delete, disable/enable, expiry and cleanup,
access counts, namespaces set per call or per block (isolated between threads and
asyncio tasks), validation, and the audit log (events, filters, cursors, verify,
checkpoints, and no value ever in an event). Each test works in its own
namespace, from the ``namespace`` fixture, which a subclass may override.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import threading
import time
from typing import Any

import pytest

from kmsbox.errors import SecretDisabled, SecretExpired, SecretNotFound
from kmsbox.storage.base import AuditFilter
from kmsbox.store.audit import AuditEvent
from kmsbox.store.models import SecretInfo
from kmsbox.store.service import SecretStore

__all__ = ["BAD_NAMES", "BAD_NAMESPACES", "SecretStoreConformance"]

#: Secret names every store must reject with ValueError (and store nothing).
BAD_NAMES: tuple[object, ...] = (
    "",
    " ",
    "-leading-dash",
    ".hidden",
    "/absolute",
    "has space",
    "semi;colon",
    "quote'",
    "new\nline",
    "nul\x00byte",
    "emoji-\N{KEY}",
    "ü-umlaut",
    "a" * 256,
    "back\\slash",
    "colon:name",
    None,
    42,
    b"bytes-name",
)
#: Namespaces every store must reject with ValueError (and store nothing).
BAD_NAMESPACES: tuple[object, ...] = (
    "",
    ":",
    "app:",
    ":app",
    "app::prod",
    "-app",
    "app/prod",
    "app prod",
    "!audit",
    "tenant\n1",
    "t" * 129,
    "ténant",
    None,
    7,
)


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def _past(seconds: float) -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=seconds)


def _all_events(
    store: SecretStore, filters: AuditFilter | None = None, *, namespace_events: bool = False
) -> list[AuditEvent]:
    """Every matching event, paged by cursor; the events of secrets only unless asked
    (a namespace's own events, such as the creation of its first key, have no name)."""
    events: list[AuditEvent] = []
    after: str | None = None
    while True:
        page, after = store.audit_events(filters, after=after, limit=500)
        events.extend(e for e in page if namespace_events or e.name is not None)
        if after is None:
            return events


class SecretStoreConformance:
    """Tests every store must pass. Provide a ``store`` fixture (a fresh, opened store)."""

    @pytest.fixture
    def namespace(self) -> str:
        """A namespace of this test's own (unique, so a shared backend stays tidy)."""
        return _unique("conformance")

    # --- put and get -----------------------------------------------------------------

    def test_put_then_get_returns_the_value(self, store: SecretStore, namespace: str) -> None:
        info = store.put("db/password", "hunter2", namespace=namespace)
        assert isinstance(info, SecretInfo)
        assert (info.namespace, info.name, info.version, info.status) == (namespace, "db/password", 1, "active")
        secret = store.get("db/password", namespace=namespace)
        assert secret.value == "hunter2"
        assert (secret.namespace, secret.name, secret.version) == (namespace, "db/password", 1)

    def test_each_put_makes_a_new_version_and_old_versions_stay_readable(
        self, store: SecretStore, namespace: str
    ) -> None:
        for number in range(1, 4):
            assert store.put("api-key", f"value-{number}", namespace=namespace).version == number
        assert store.get("api-key", namespace=namespace).value == "value-3"
        assert store.get("api-key", namespace=namespace).version == 3
        for number in range(1, 4):
            old = store.get("api-key", namespace=namespace, version=number)
            assert (old.version, old.value) == (number, f"value-{number}")
        assert store.info("api-key", namespace=namespace).version == 3

    @pytest.mark.parametrize(
        "value",
        [
            "plain",
            "",
            "ünïcödé ✓ 秘密",
            "trailing newline\n",
            "x" * 10_000,
            b"",
            bytes(range(256)),
            b"valid utf-8 but bytes",
            b"\x00\xff\x00",
        ],
        ids=["str", "empty-str", "unicode", "newline", "long-str", "empty-bytes", "all-bytes", "utf8-bytes", "nul"],
    )
    def test_values_come_back_as_they_went_in(self, store: SecretStore, namespace: str, value: str | bytes) -> None:
        store.put("value", value, namespace=namespace)
        got = store.get("value", namespace=namespace).value
        assert type(got) is type(value)
        assert got == value

    def test_bytearray_and_memoryview_are_stored_as_bytes(self, store: SecretStore, namespace: str) -> None:
        store.put("ba", bytearray(b"abc"), namespace=namespace)
        store.put("mv", memoryview(b"xyz"), namespace=namespace)
        assert store.get("ba", namespace=namespace).value == b"abc"
        assert store.get("mv", namespace=namespace).value == b"xyz"

    def test_repr_and_str_of_a_secret_hide_the_value(self, store: SecretStore, namespace: str) -> None:
        value = "s3cr3t-" + os.urandom(8).hex()
        store.put("token", value, namespace=namespace)
        secret = store.get("token", namespace=namespace)
        result = store.try_get("token", namespace=namespace)
        for text in (repr(secret), str(secret), repr(result), str(result), f"{secret}", repr([secret])):
            assert value not in text
            assert "***" in text
        assert "token" in repr(secret)

    def test_value_of_wrong_type_is_a_type_error(self, store: SecretStore, namespace: str) -> None:
        for bad in (12, None, ["x"], {"a": "b"}):
            with pytest.raises(TypeError):
                store.put("typed", bad, namespace=namespace)  # type: ignore[arg-type]
        with pytest.raises(SecretNotFound):
            store.get("typed", namespace=namespace)

    def test_value_larger_than_the_limit_is_refused(self, store: SecretStore, namespace: str) -> None:
        limit = store.max_value_size
        with pytest.raises(ValueError, match="limit"):
            store.put("big", b"\x00" * (limit + 1), namespace=namespace)
        with pytest.raises(ValueError, match="limit"):
            store.put("big", "é" * (limit // 2 + 1), namespace=namespace)  # counted in UTF-8 bytes
        with pytest.raises(SecretNotFound):
            store.get("big", namespace=namespace)
        store.put("big", b"\x01" * limit, namespace=namespace)
        assert len(store.get("big", namespace=namespace).value) == limit

    def test_missing_secret_and_missing_version_raise_not_found(self, store: SecretStore, namespace: str) -> None:
        with pytest.raises(SecretNotFound):
            store.get("nope", namespace=namespace)
        store.put("one", "1", namespace=namespace)
        with pytest.raises(SecretNotFound):
            store.get("one", namespace=namespace, version=2)
        with pytest.raises(SecretNotFound):
            store.info("nope", namespace=namespace)
        for bad_version in (0, -1, True, "1"):
            with pytest.raises(ValueError):
                store.get("one", namespace=namespace, version=bad_version)  # type: ignore[arg-type]

    def test_metadata_is_stored_and_kept_when_an_update_omits_it(self, store: SecretStore, namespace: str) -> None:
        expires = _dt.datetime.now(_dt.UTC) + _dt.timedelta(days=1)
        store.put(
            "meta",
            "v1",
            namespace=namespace,
            category="database",
            description="primary db",
            labels={"team": "pay"},
            expires=expires,
        )
        info = store.put("meta", "v2", namespace=namespace)
        assert (info.category, info.description, info.labels) == ("database", "primary db", {"team": "pay"})
        assert info.expires_at == pytest.approx(expires.timestamp(), abs=1e-3)
        info = store.put("meta", "v3", namespace=namespace, category="db", labels={"team": "core", "tier": "1"})
        assert (info.category, info.description, info.labels) == ("db", "primary db", {"team": "core", "tier": "1"})
        assert store.info("meta", namespace=namespace) == info
        assert info.created_at <= info.updated_at

    def test_bad_metadata_is_a_value_error(self, store: SecretStore, namespace: str) -> None:
        bad: list[dict[str, Any]] = [
            {"labels": {"": "x"}},
            {"labels": {"k": 1}},
            {"labels": {"k" * 129: "v"}},
            {"category": "c" * 129},
            {"description": "d" * 1025},
            {"expires": _dt.datetime(2030, 1, 1)},  # naive
            {"expires": -5},
            {"expires": 0},
            {"expires": "tomorrow"},
            {"expires": float("inf")},
            {"expires": float("nan")},
            {"expires": 10**12},  # past the 1000-year limit
            {"expires": _dt.timedelta(seconds=-5)},
            {"expires": _dt.datetime(9999, 1, 1, tzinfo=_dt.UTC)},
            {"labels": [("team", "pay")]},
            {"labels": "team=pay"},
            {"labels": {"k": "nul\x00"}},
            {"labels": {"nul\x00": "v"}},
            {"labels": {f"k{i}": "v" for i in range(65)}},
            {"category": "nul\x00"},
            {"category": 5},
            {"description": "lone \ud800 surrogate"},
            {"actor": 5},
            {"actor": 1.5},
            {"actor": "nul\x00"},
            {"actor": "a" * 257},
            {"request": {"k": 1}},
            {"request": {"k": "nul\x00"}},
            {"request": [("k", "v")]},
        ]
        for kwargs in bad:
            with pytest.raises(ValueError):
                store.put("meta", "v", namespace=namespace, **kwargs)
        with pytest.raises(SecretNotFound):
            store.get("meta", namespace=namespace)
        assert store.verify_audit().ok

    def test_an_actor_or_context_an_event_cannot_hold_is_refused_per_block(
        self, store: SecretStore, namespace: str
    ) -> None:
        for kwargs in ({"actor": 7}, {"actor": "nul\x00"}, {"trace": 7}, {"trace": "x" * 1025}):
            with pytest.raises(ValueError), store.audit_context(**kwargs):
                pass
        store.put("who", "v", namespace=namespace)
        with pytest.raises(ValueError):
            store.get("who", namespace=namespace, actor=5)  # type: ignore[arg-type]
        assert store.verify_audit().ok

    def test_a_str_value_that_is_not_utf8_is_refused_without_echoing_it(
        self, store: SecretStore, namespace: str
    ) -> None:
        with pytest.raises(ValueError) as caught:
            store.put("lone", "hunter\ud800two", namespace=namespace)
        # The codec's own error would hold the whole value in .object, args and repr.
        assert "hunter" not in repr(caught.value) and "hunter" not in repr(caught.value.args)
        assert type(caught.value) is ValueError
        assert caught.value.__cause__ is None and caught.value.__context__ is None
        assert not store.try_get("lone", namespace=namespace).ok

    def test_versions_and_cursors_out_of_range_are_value_errors(self, store: SecretStore, namespace: str) -> None:
        store.put("one", "v", namespace=namespace)
        for bad in (2**63, 2**70, -(2**70)):
            with pytest.raises(ValueError):
                store.get("one", namespace=namespace, version=bad)
            with pytest.raises(ValueError):
                store.try_get("one", namespace=namespace, version=bad)
            with pytest.raises(ValueError):
                store.audit_events(after=bad)
        for bad_limit in (0, 10_001, 2**70):
            with pytest.raises(ValueError):
                store.audit_events(limit=bad_limit)
        for bad_filter in (
            {"since": _dt.datetime.now(_dt.UTC)},
            {"until": "abc"},
            {"since": float("nan")},
            {"since": 10**400},
            {"since": True},
            {"name": 5},
            {"name": "lone \ud800"},
            {"namespace": "nul\x00"},
        ):
            with pytest.raises(ValueError):
                AuditFilter(**bad_filter)

    def test_an_expiry_is_removed_with_never_and_a_passed_one_is_not_carried_over(
        self, store: SecretStore, namespace: str
    ) -> None:
        from kmsbox import NEVER

        store.put("kept", "v1", namespace=namespace, expires=3600)
        assert store.put("kept", "v2", namespace=namespace).expires_at is not None
        assert store.put("kept", "v3", namespace=namespace, expires=NEVER).expires_at is None
        assert store.put("kept", "v4", namespace=namespace).expires_at is None
        # An expiry that has passed went with the value it expired: a new value starts without one.
        store.put("lapsed", "old", namespace=namespace, expires=_past(60))
        assert store.try_get("lapsed", namespace=namespace).reason == "expired"
        assert store.put("lapsed", "new", namespace=namespace).expires_at is None
        assert store.get("lapsed", namespace=namespace).value == "new"
        assert store.cleanup_expired() == 0
        assert store.get("lapsed", namespace=namespace).value == "new"

    def test_list_refuses_filters_and_cursors_no_backend_could_match(self, store: SecretStore, namespace: str) -> None:
        store.put("one", "v", namespace=namespace, category="db")
        bad: list[dict[str, Any]] = [
            {"category": "nul\x00"},
            {"category": 5},
            {"category": "lone \ud800"},
            {"cursor": "nul\x00"},
            {"cursor": 5},
            {"limit": True},
            {"label": ("k", 5)},
            {"label": "k=nul\x00"},
        ]
        for kwargs in bad:
            with pytest.raises(ValueError):
                store.list(namespace=namespace, **kwargs)
        assert [i.name for i in store.list(namespace=namespace, category="db").items] == ["one"]

    def test_expiry_bounds_are_exact_and_huge_numbers_are_value_errors(
        self, store: SecretStore, namespace: str
    ) -> None:
        from kmsbox.limits import LONGEST_SPAN

        assert store.put("far", "v", namespace=namespace, expires=LONGEST_SPAN).expires_at is not None
        for bad in (LONGEST_SPAN + 1, 10**400, _dt.timedelta(days=366_000)):
            with pytest.raises(ValueError):
                store.put("far", "v", namespace=namespace, expires=bad)
        for retention in (10**400, LONGEST_SPAN + 1):
            with pytest.raises(ValueError):
                store.cleanup_expired(retention)

    def test_never_survives_pickling_and_copying(self, store: SecretStore, namespace: str) -> None:
        import copy
        import pickle

        from kmsbox import NEVER

        assert pickle.loads(pickle.dumps(NEVER)) is NEVER
        assert copy.deepcopy(NEVER) is NEVER and copy.copy(NEVER) is NEVER
        store.put("x", "v", namespace=namespace, expires=60)
        assert store.put("x", "v", namespace=namespace, expires=copy.deepcopy(NEVER)).expires_at is None

    def test_nested_request_contexts_stay_within_the_limit(self, store: SecretStore, namespace: str) -> None:
        store.put("who", "v", namespace=namespace)
        first = {f"a{i}": "x" for i in range(20)}
        second = {f"b{i}": "x" for i in range(20)}
        with store.audit_context(**first):
            with pytest.raises(ValueError), store.audit_context(**second):
                pass
            with pytest.raises(ValueError):
                store.get("who", namespace=namespace, request=second)
            store.get("who", namespace=namespace, request={"b0": "x"})
        assert store.verify_audit().ok

    def test_import_checks_and_carries_metadata_like_put(self, store: SecretStore, namespace: str) -> None:
        for kwargs in ({"category": "nul\x00"}, {"category": 5}, {"category": "lone \ud800"}, {"source": 5}):
            with pytest.raises(ValueError):
                store.import_secrets({"x": "v"}, namespace=namespace, **kwargs)
        assert store.list(namespace=namespace).items == []
        store.put("lapsed", "old", namespace=namespace, expires=_past(60))
        store.import_secrets({"lapsed": "new"}, namespace=namespace, on_conflict="overwrite", category="")
        secret = store.get("lapsed", namespace=namespace)
        assert (secret.value, secret.info.expires_at) == ("new", None)

    def test_an_empty_category_or_description_clears_it(self, store: SecretStore, namespace: str) -> None:
        store.put("meta", "v1", namespace=namespace, category="db", description="primary")
        info = store.put("meta", "v2", namespace=namespace, category="", description="")
        assert (info.category, info.description) == (None, None)
        assert store.info("meta", namespace=namespace) == info

    # --- names and namespaces --------------------------------------------------------

    @pytest.mark.parametrize("bad", BAD_NAMES, ids=repr)
    def test_invalid_names_are_value_errors_and_store_nothing(
        self, store: SecretStore, namespace: str, bad: object
    ) -> None:
        with pytest.raises(ValueError):
            store.put(bad, "v", namespace=namespace)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            store.get(bad, namespace=namespace)  # type: ignore[arg-type]
        assert store.list(namespace=namespace).items == []

    @pytest.mark.parametrize("bad", BAD_NAMESPACES, ids=repr)
    def test_invalid_namespaces_are_value_errors_and_store_nothing(self, store: SecretStore, bad: object) -> None:
        before = store.namespaces()
        with pytest.raises(ValueError):
            store.put("name", "v", namespace=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            store.get("name", namespace=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError), store.namespace(bad):  # type: ignore[arg-type]
            pass
        assert store.namespaces() == before

    def test_valid_names_and_namespaces_are_accepted(self, store: SecretStore) -> None:
        suffix = os.urandom(3).hex()
        for ns in (
            f"app:production-{suffix}",
            f"tenant-123-{suffix}",
            f"team-alpha:testing:{suffix}",
            f"A.b_c-{suffix}",
        ):
            for name in ("db/password", "OPENAI_API_KEY", "a", "x" * 255, "v1.2/key-name_3"):
                store.put(name, "v", namespace=ns)
                assert store.get(name, namespace=ns).value == "v"

    def test_a_namespace_is_required(self, store: SecretStore) -> None:
        for call in (
            lambda: store.put("name", "v"),
            lambda: store.get("name"),
            lambda: store.try_get("name"),
            lambda: store.list(),
            lambda: store.history("name"),
            lambda: store.delete("name"),
            lambda: store.disable("name"),
            lambda: store.enable("name"),
            lambda: store.info("name"),
        ):
            with pytest.raises(ValueError, match="namespace"):
                call()

    def test_namespace_block_sets_the_default_and_an_explicit_one_wins(
        self, store: SecretStore, namespace: str
    ) -> None:
        other = namespace + ":other"
        with store.namespace(namespace):
            store.put("k", "in-block")
            store.put("k", "explicit", namespace=other)
            assert store.get("k").value == "in-block"
            with store.namespace(other):
                assert store.get("k").value == "explicit"
            assert store.get("k").value == "in-block"
        with pytest.raises(ValueError):
            store.get("k")
        assert store.get("k", namespace=other).value == "explicit"

    def test_namespaces_are_isolated(self, store: SecretStore, namespace: str) -> None:
        store.put("same-name", "a", namespace=namespace + ":a")
        store.put("same-name", "b", namespace=namespace + ":b")
        assert store.get("same-name", namespace=namespace + ":a").value == "a"
        assert store.get("same-name", namespace=namespace + ":b").value == "b"
        assert [i.name for i in store.list(namespace=namespace + ":a").items] == ["same-name"]
        with pytest.raises(SecretNotFound):
            store.get("same-name", namespace=namespace)
        assert {namespace + ":a", namespace + ":b"} <= set(store.namespaces())
        assert not any(ns.startswith("!") for ns in store.namespaces())  # the audit key's is hidden

    def test_namespace_blocks_are_isolated_between_threads(self, store: SecretStore, namespace: str) -> None:
        workers = 4
        barrier = threading.Barrier(workers)
        errors: list[BaseException] = []

        def work(index: int) -> None:
            try:
                ns = f"{namespace}:t{index}"
                with store.namespace(ns), store.audit_context(actor=f"thread-{index}"):
                    barrier.wait(timeout=30)  # every thread is inside its block before any writes
                    for round_ in range(5):
                        store.put("shared-name", f"{index}-{round_}")
                        assert store.get("shared-name").value == f"{index}-{round_}"
                        assert store.get("shared-name").namespace == ns
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        for index in range(workers):
            ns = f"{namespace}:t{index}"
            actors = {e.actor for e in _all_events(store, AuditFilter(namespace=ns))}
            assert actors == {f"thread-{index}"}
            assert store.get("shared-name", namespace=ns).value == f"{index}-4"

    def test_namespace_blocks_are_isolated_between_asyncio_tasks(self, store: SecretStore, namespace: str) -> None:
        async def task(index: int, started: asyncio.Event, count: list[int]) -> str:
            ns = f"{namespace}:task{index}"
            with store.namespace(ns), store.audit_context(actor=f"task-{index}", request_id=f"r{index}"):
                count[0] += 1
                if count[0] == 3:
                    started.set()
                await started.wait()  # all three tasks are inside their blocks now
                store.put("same", f"task-{index}")
                await asyncio.sleep(0)
                value = store.get("same").value
                assert isinstance(value, str)
                return value

        async def main() -> list[str]:
            started = asyncio.Event()
            count = [0]
            return list(await asyncio.gather(*(task(i, started, count) for i in range(3))))

        assert asyncio.run(main()) == ["task-0", "task-1", "task-2"]
        for index in range(3):
            events = _all_events(store, AuditFilter(namespace=f"{namespace}:task{index}"))
            assert {(e.actor, e.context.get("request_id")) for e in events} == {(f"task-{index}", f"r{index}")}
        with pytest.raises(ValueError):
            store.get("same")

    # --- list and history ------------------------------------------------------------

    def test_list_returns_metadata_only_ordered_by_name(self, store: SecretStore, namespace: str) -> None:
        values = {name: "value-of-" + name + "-" + os.urandom(6).hex() for name in ("c", "a", "b/x", "b")}
        for name, value in values.items():
            store.put(name, value, namespace=namespace, category="cat")
        page = store.list(namespace=namespace)
        assert [i.name for i in page.items] == ["a", "b", "b/x", "c"]
        assert page.next_cursor is None
        for item in page.items:
            assert isinstance(item, SecretInfo)
            assert not hasattr(item, "value")
            dumped = json.dumps(item.to_dict()) + repr(item)
            assert not any(value in dumped for value in values.values())

    def test_list_pages_with_cursors(self, store: SecretStore, namespace: str) -> None:
        names = [f"key-{i:03d}" for i in range(23)]
        for name in reversed(names):
            store.put(name, "v", namespace=namespace)
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = store.list(namespace=namespace, limit=10, cursor=cursor)
            assert len(page.items) <= 10
            seen.extend(i.name for i in page.items)
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
            assert pages < 10
        assert seen == names
        assert pages == 3
        assert [i.name for i in store.iter_secrets(namespace=namespace)] == names

    def test_list_filters_by_category_and_label(self, store: SecretStore, namespace: str) -> None:
        for i in range(12):
            store.put(
                f"s{i:02d}",
                "v",
                namespace=namespace,
                category="db" if i % 2 else "api",
                labels={"team": "red" if i % 3 == 0 else "blue", "n": str(i)},
            )
        by_category = [i.name for i in store.list(namespace=namespace, category="db").items]
        assert by_category == [f"s{i:02d}" for i in range(12) if i % 2]
        red = [f"s{i:02d}" for i in range(12) if i % 3 == 0]
        assert [i.name for i in store.list(namespace=namespace, label="team=red").items] == red
        assert [i.name for i in store.list(namespace=namespace, label=("team", "red")).items] == red
        both = [i.name for i in store.list(namespace=namespace, category="db", label="team=red").items]
        assert both == [f"s{i:02d}" for i in range(12) if i % 3 == 0 and i % 2]
        assert store.list(namespace=namespace, category="nothing").items == []
        assert store.list(namespace=namespace, label="team=green").items == []
        # Filtered pages stay full and the cursor walks through all matches.
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = store.list(namespace=namespace, label="team=blue", limit=3, cursor=cursor)
            seen.extend(i.name for i in page.items)
            if page.next_cursor is None:
                break
            assert len(page.items) == 3
            cursor = page.next_cursor
        assert seen == [f"s{i:02d}" for i in range(12) if i % 3 != 0]
        assert [i.name for i in store.iter_secrets(namespace=namespace, category="api", label="team=blue")] == [
            f"s{i:02d}" for i in range(12) if i % 2 == 0 and i % 3 != 0
        ]

    def test_list_rejects_bad_limits_and_label_filters(self, store: SecretStore, namespace: str) -> None:
        for limit in (0, -1, 10_001, 2.5):
            with pytest.raises(ValueError):
                store.list(namespace=namespace, limit=limit)  # type: ignore[arg-type]
        for label in ("no-equals", "=v", ("a",), ("a", 1)):
            with pytest.raises(ValueError):
                store.list(namespace=namespace, label=label)

    def test_history_lists_versions_oldest_first(self, store: SecretStore, namespace: str) -> None:
        for i in range(3):
            store.put("rotating", f"v{i}", namespace=namespace)
        history = store.history("rotating", namespace=namespace)
        assert [v.version for v in history] == [1, 2, 3]
        assert [v.current for v in history] == [False, False, True]
        assert history[0].created_at <= history[1].created_at <= history[2].created_at
        assert all(v.namespace_key_version >= 1 for v in history)
        assert not any(hasattr(v, "value") for v in history)
        with pytest.raises(SecretNotFound):
            store.history("missing", namespace=namespace)

    # --- delete, disable, enable -----------------------------------------------------

    def test_delete_removes_every_version(self, store: SecretStore, namespace: str) -> None:
        for i in range(3):
            store.put("doomed", f"v{i}", namespace=namespace)
        store.put("kept", "stays", namespace=namespace)
        assert store.delete("doomed", namespace=namespace) == 3
        for version in (None, 1, 2, 3):
            with pytest.raises(SecretNotFound):
                store.get("doomed", namespace=namespace, version=version)
        with pytest.raises(SecretNotFound):
            store.history("doomed", namespace=namespace)
        with pytest.raises(SecretNotFound):
            store.delete("doomed", namespace=namespace)
        assert [i.name for i in store.list(namespace=namespace).items] == ["kept"]
        assert store.get("kept", namespace=namespace).value == "stays"
        # A new secret under the deleted name goes on from the versions the audit log
        # recorded: a version number is never used twice.
        assert store.put("doomed", "reborn", namespace=namespace).version == 4
        assert [v.version for v in store.history("doomed", namespace=namespace)] == [4]

    def test_disable_blocks_reads_until_enabled(self, store: SecretStore, namespace: str) -> None:
        store.put("switch", "on", namespace=namespace)
        assert store.disable("switch", namespace=namespace).status == "disabled"
        with pytest.raises(SecretDisabled):
            store.get("switch", namespace=namespace)
        with pytest.raises(SecretDisabled):
            store.get("switch", namespace=namespace, version=1)
        result = store.try_get("switch", namespace=namespace)
        assert (result.ok, result.secret, result.reason) == (False, None, "disabled")
        assert store.info("switch", namespace=namespace).status == "disabled"
        assert store.list(namespace=namespace).items[0].status == "disabled"
        assert store.enable("switch", namespace=namespace).status == "active"
        assert store.get("switch", namespace=namespace).value == "on"

    def test_delete_disable_enable_of_a_missing_secret_raise_not_found(
        self, store: SecretStore, namespace: str
    ) -> None:
        for method in (store.delete, store.disable, store.enable):
            with pytest.raises(SecretNotFound):
                method("ghost", namespace=namespace)

    # --- expiry ----------------------------------------------------------------------

    def test_expired_secret_is_refused_at_read_time(self, store: SecretStore, namespace: str) -> None:
        store.put("old", "gone", namespace=namespace, expires=_past(60))
        store.put("fresh", "here", namespace=namespace, expires=_dt.timedelta(hours=1))
        store.put("seconds", "here too", namespace=namespace, expires=3600)
        with pytest.raises(SecretExpired):
            store.get("old", namespace=namespace)
        result = store.try_get("old", namespace=namespace)
        assert (result.ok, result.reason) == (False, "expired")
        assert store.get("fresh", namespace=namespace).value == "here"
        assert store.get("seconds", namespace=namespace).value == "here too"
        info = store.info("fresh", namespace=namespace)
        assert info.expires_at is not None and info.expires_at > time.time() + 3000

    def test_short_expiry_takes_effect(self, store: SecretStore, namespace: str) -> None:
        # The namespace key first: its KMS wrap must not eat into the 0.3 s being timed.
        store.put("warm-up", "x", namespace=namespace)
        store.put("brief", "now you see it", namespace=namespace, expires=0.3)
        assert store.get("brief", namespace=namespace).value == "now you see it"
        time.sleep(0.4)
        with pytest.raises(SecretExpired):
            store.get("brief", namespace=namespace)

    def test_cleanup_refuses_a_retention_that_is_not_a_finite_time(self, store: SecretStore, namespace: str) -> None:
        store.put("gone", "x", namespace=namespace, expires=_past(60))
        for bad in (float("nan"), float("inf"), -1, "7", None, _dt.timedelta(seconds=-1)):
            with pytest.raises(ValueError):
                store.cleanup_expired(bad)  # type: ignore[arg-type]
        assert store.try_get("gone", namespace=namespace).reason == "expired"

    def test_cleanup_deletes_expired_secrets_after_the_retention(self, store: SecretStore, namespace: str) -> None:
        store.put("expired-long-ago", "x", namespace=namespace, expires=_past(7200))
        store.put("expired-recently", "x", namespace=namespace, expires=_past(60))
        store.put("live", "x", namespace=namespace, expires=_dt.timedelta(hours=1))
        store.put("forever", "x", namespace=namespace)
        assert store.cleanup_expired(retention=_dt.timedelta(hours=3)) == 0
        assert store.cleanup_expired(retention=3600) == 1
        assert sorted(i.name for i in store.list(namespace=namespace).items) == [
            "expired-recently",
            "forever",
            "live",
        ]
        assert store.cleanup_expired() == 1
        assert sorted(i.name for i in store.list(namespace=namespace).items) == ["forever", "live"]
        with pytest.raises(SecretNotFound):
            store.get("expired-recently", namespace=namespace)
        expire_events = _all_events(store, AuditFilter(namespace=namespace, action="expire"))
        assert sorted((e.name, e.result) for e in expire_events) == [
            ("expired-long-ago", "success"),
            ("expired-recently", "success"),
        ]
        with pytest.raises(ValueError):
            store.cleanup_expired(retention=-1)

    # --- try_get and access tracking -------------------------------------------------

    def test_try_get_returns_ok_and_a_reason(self, store: SecretStore, namespace: str) -> None:
        store.put("here", "v", namespace=namespace)
        found = store.try_get("here", namespace=namespace)
        assert found.ok and found.reason is None
        assert found.secret is not None and found.secret.value == "v"
        missing = store.try_get("absent", namespace=namespace)
        assert (missing.ok, missing.secret, missing.reason) == (False, None, "not_found")
        assert missing.message
        with pytest.raises(ValueError):
            store.try_get("bad name", namespace=namespace)

    def test_reads_update_access_count_and_last_access(self, store: SecretStore, namespace: str) -> None:
        store.put("counted", "v", namespace=namespace)
        assert store.info("counted", namespace=namespace).access_count == 0
        assert store.info("counted", namespace=namespace).last_accessed_at is None
        before = time.time()
        for _ in range(3):
            store.get("counted", namespace=namespace)
        store.flush_access()
        info = store.info("counted", namespace=namespace)
        assert info.access_count == 3
        assert info.last_accessed_at is not None and info.last_accessed_at >= before - 1
        # info, list and history are not reads of the value.
        store.info("counted", namespace=namespace)
        store.list(namespace=namespace)
        store.history("counted", namespace=namespace)
        store.flush_access()
        assert store.info("counted", namespace=namespace).access_count == 3

    def test_access_counts_are_buffered_when_read_audit_is_off(self, store: SecretStore, namespace: str) -> None:
        store.put("quiet", "v", namespace=namespace)
        saved = store.audit_reads
        store.audit_reads = False
        try:
            for _ in range(4):
                assert store.get("quiet", namespace=namespace).value == "v"
            store.flush_access()
            info = store.info("quiet", namespace=namespace)
            assert info.access_count == 4
            assert info.last_accessed_at is not None
            assert _all_events(store, AuditFilter(namespace=namespace, action="read")) == []
            # Failed reads are audited even with read audit off.
            with pytest.raises(SecretNotFound):
                store.get("absent", namespace=namespace)
            store.disable("quiet", namespace=namespace)
            with pytest.raises(SecretDisabled):
                store.get("quiet", namespace=namespace)
        finally:
            store.audit_reads = saved
        reads = _all_events(store, AuditFilter(namespace=namespace, action="read"))
        assert [(e.name, e.result, e.detail.get("reason")) for e in reads] == [
            ("absent", "failure", "not_found"),
            ("quiet", "denied", "disabled"),
        ]

    # --- audit -----------------------------------------------------------------------

    def test_every_write_and_read_is_an_audit_event(self, store: SecretStore, namespace: str) -> None:
        start = time.time()
        store.put("audited", "v1", namespace=namespace)
        store.put("audited", "v2", namespace=namespace)
        store.get("audited", namespace=namespace)
        store.disable("audited", namespace=namespace)
        with pytest.raises(SecretDisabled):
            store.get("audited", namespace=namespace)
        store.enable("audited", namespace=namespace)
        with pytest.raises(SecretNotFound):
            store.get("audited", namespace=namespace, version=9)
        store.delete("audited", namespace=namespace)
        with pytest.raises(SecretNotFound):
            store.delete("audited", namespace=namespace)
        events = _all_events(store, AuditFilter(namespace=namespace))
        assert [(e.action, e.result, e.secret_version) for e in events] == [
            ("create", "success", 1),
            ("update", "success", 2),
            ("read", "success", 2),
            ("disable", "success", 2),
            ("read", "denied", 2),  # the version the read was refused
            ("enable", "success", 2),
            ("read", "failure", 9),
            ("delete", "success", 2),
            ("delete", "failure", None),
        ]
        assert all(e.namespace == namespace and e.name == "audited" for e in events)
        assert all(start - 1 <= e.time <= time.time() + 1 for e in events)
        cursors = [e.cursor for e in events]
        assert len(set(cursors)) == len(cursors)
        times = [e.time for e in events]
        assert times == sorted(times)
        assert events[4].detail["reason"] == "disabled"
        assert events[6].detail["reason"] == "not_found"
        assert events[7].detail["versions"] == 2
        assert store.verify_audit().ok

    def test_actor_and_request_context_per_call_and_per_block(self, store: SecretStore, namespace: str) -> None:
        store.put("who", "v", namespace=namespace, actor="alice", request={"request_id": "r-1"})
        with store.audit_context(actor="deploy-bot", ip="10.0.0.1", request_id="r-2"):
            store.get("who", namespace=namespace)
            with store.audit_context(request_id="r-3"):
                store.get("who", namespace=namespace, actor="carol", request={"trace": "t-9"})
        store.get("who", namespace=namespace)
        events = _all_events(store, AuditFilter(namespace=namespace))
        assert [(e.actor, e.context) for e in events] == [
            ("alice", {"request_id": "r-1"}),
            ("deploy-bot", {"ip": "10.0.0.1", "request_id": "r-2"}),
            ("carol", {"ip": "10.0.0.1", "request_id": "r-3", "trace": "t-9"}),
            (None, {}),
        ]

    def test_audit_filters(self, store: SecretStore, namespace: str) -> None:
        other = namespace + ":other"
        store.put("a", "v", namespace=namespace)
        store.put("b", "v", namespace=namespace)
        store.put("a", "v", namespace=other)
        time.sleep(0.01)
        middle = time.time()
        time.sleep(0.01)
        store.get("a", namespace=namespace)
        with pytest.raises(SecretNotFound):
            store.get("zzz", namespace=namespace)
        end = time.time() + 0.001

        def seen(**kwargs: Any) -> list[tuple[str | None, str | None, str, str]]:
            events = _all_events(store, AuditFilter(**kwargs))
            return [(e.namespace, e.name, e.action, e.result) for e in events]

        assert seen(namespace=namespace) == [
            (namespace, "a", "create", "success"),
            (namespace, "b", "create", "success"),
            (namespace, "a", "read", "success"),
            (namespace, "zzz", "read", "failure"),
        ]
        assert seen(namespace=namespace, name="a") == [
            (namespace, "a", "create", "success"),
            (namespace, "a", "read", "success"),
        ]
        assert seen(namespace=other) == [(other, "a", "create", "success")]
        assert seen(namespace=namespace, action="create") == [
            (namespace, "a", "create", "success"),
            (namespace, "b", "create", "success"),
        ]
        assert seen(namespace=namespace, result="failure") == [(namespace, "zzz", "read", "failure")]
        assert seen(namespace=namespace, since=middle) == [
            (namespace, "a", "read", "success"),
            (namespace, "zzz", "read", "failure"),
        ]
        assert seen(namespace=namespace, until=middle) == [
            (namespace, "a", "create", "success"),
            (namespace, "b", "create", "success"),
        ]
        assert seen(namespace=namespace, since=end) == []

    def test_audit_events_page_with_cursors(self, store: SecretStore, namespace: str) -> None:
        for i in range(7):
            store.put(f"p{i}", "v", namespace=namespace)
        everything = _all_events(store, AuditFilter(namespace=namespace))
        assert len(everything) == 7
        pages: list[list[AuditEvent]] = []
        after: str | None = None
        filters = AuditFilter(namespace=namespace, action="create")
        while True:
            page, after = store.audit_events(filters, after=after, limit=3)
            pages.append([e for e in page if e.name is not None])
            assert len(pages) < 10
            if after is None:
                break
        assert [e for p in pages for e in p] == everything
        assert sum(len(p) for p in pages) == 7
        with pytest.raises(ValueError):
            store.audit_events(after=0, limit=0)
        for bad in ("", "12", "1-2", "a-b-c", "-1-2-3", 5, 1.5, b"1-2-3"):
            with pytest.raises(ValueError):
                store.audit_events(after=bad, limit=3)  # type: ignore[arg-type]

    def test_audit_events_never_contain_values(self, store: SecretStore, namespace: str) -> None:
        text_value = "text-secret-" + os.urandom(8).hex()
        bytes_value = b"bytes-secret-" + os.urandom(8)
        store.put("t", text_value, namespace=namespace, category="c", labels={"l": "1"})
        store.put("t", text_value + "-v2", namespace=namespace)
        store.put("b", bytes_value, namespace=namespace)
        store.get("t", namespace=namespace)
        store.get("t", namespace=namespace, version=1)
        store.get("b", namespace=namespace)
        store.try_get("t", namespace=namespace)
        store.disable("t", namespace=namespace)
        store.try_get("t", namespace=namespace)
        store.delete("b", namespace=namespace)
        events = _all_events(store)
        assert len(events) >= 10
        needles = [
            text_value,
            text_value.encode().hex(),
            bytes_value.hex(),
            bytes_value.decode("latin-1"),
            repr(bytes_value)[2:-1],
        ]
        for event in events:
            dumped = json.dumps(event.to_dict()) + repr(event)
            for needle in needles:
                assert needle not in dumped

    def test_audit_chain_verifies_and_checkpoints_match(self, store: SecretStore, namespace: str) -> None:
        empty = store.verify_audit()
        assert empty.ok and empty.problems == []
        store.put("c", "v", namespace=namespace)
        checkpoint = store.audit_checkpoint()
        assert checkpoint.events >= 1
        assert all(len(bytes.fromhex(h.mac)) == 32 for h in checkpoint.heads)
        store.get("c", namespace=namespace)
        store.put("c", "v2", namespace=namespace)
        report = store.verify_audit(checkpoint)
        assert report.ok, report.problems
        later = store.audit_checkpoint()
        assert later.events == checkpoint.events + 2
        assert report.events_checked == later.events
        assert report.chains == len(later.heads)
        assert store.verify_audit(later).ok
        # A checkpoint survives JSON, and the single-chain form of earlier releases still parses.
        assert type(later).from_dict(json.loads(json.dumps(later.to_dict()))) == later
        assert type(later).from_dict({"seq": 0, "mac": ""}).heads[0].chain == 0

    def test_a_forged_checkpoint_is_reported(self, store: SecretStore, namespace: str) -> None:
        store.put("c", "v", namespace=namespace)
        real = store.audit_checkpoint()
        head = real.heads[-1]
        forged = type(real)((type(head)(head.chain, head.seq, "00" * 32),))
        report = store.verify_audit(forged)
        assert not report.ok
        assert any("checkpoint" in p for p in report.problems)
        ahead = type(real)((type(head)(head.chain, head.seq + 5, head.mac),))
        assert not store.verify_audit(ahead).ok
        bad: Any
        for bad in ({"chains": "x"}, {"chains": [{"chain": -1, "seq": 0, "mac": ""}]}, {"seq": "1", "mac": ""}, []):
            with pytest.raises(ValueError):
                type(real).from_dict(bad)
