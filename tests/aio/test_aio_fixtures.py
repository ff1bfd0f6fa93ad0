"""The async fixtures of kmsbox's pytest plugin (kmsbox.testing.aio): a fresh store per test,
a factory of stores of any URL and KEK, every one closed after the test, under anyio's
plugin (and pytest-asyncio's, where it is installed)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import textwrap
from pathlib import Path

import pytest

import kmsbox
import kmsbox.aio
from kmsbox.errors import ConfigError, PluginError, StorageError
from kmsbox.testing.aio import AsyncStoreFactory
from kmsbox.testing.fake_kek import FakeKek

pytest_plugins = ["pytester"]

anyio_test = pytest.mark.anyio

# Where pytest-asyncio is installed beside anyio, an inner run without this setting warns.
_QUIET_ASYNCIO_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the fixtures under anyio's plugin -----------------------------------------------------------


@anyio_test
async def test_the_store_is_a_fresh_sqlite_file_under_tmp_path_with_a_generated_local_kek(
    kmsbox_async_store: kmsbox.aio.AsyncSecretStore, tmp_path: Path
) -> None:
    assert isinstance(kmsbox_async_store, kmsbox.aio.AsyncSecretStore)
    described = kmsbox_async_store.backend.describe()
    assert described["backend"] == "sqlite"
    assert Path(described["location"]).parent == tmp_path / "kmsbox"
    assert [kek.uri for kek in kmsbox_async_store.keks] == ["env://KMSBOX_TEST_KEK"]
    assert len(bytes.fromhex(os.environ["KMSBOX_TEST_KEK"])) == 32
    assert await kmsbox_async_store.namespaces() == []
    await kmsbox_async_store.put("db/password", "p1", namespace="tenant-1")
    assert (await kmsbox_async_store.get("db/password", namespace="tenant-1")).value == "p1"


@anyio_test
async def test_the_store_runs_on_the_tests_own_event_loop(kmsbox_async_store: kmsbox.aio.AsyncSecretStore) -> None:
    # Concurrent tasks of this loop share the store: it was opened on this loop.
    await asyncio.gather(*[kmsbox_async_store.put(f"s{i}", f"v{i}", namespace="app") for i in range(20)])
    values = await asyncio.gather(*[kmsbox_async_store.get(f"s{i}", namespace="app") for i in range(20)])
    assert [v.value for v in values] == [f"v{i}" for i in range(20)]


@anyio_test
async def test_the_factory_opens_several_stores_of_any_url_and_kek(
    kmsbox_async_store_factory: AsyncStoreFactory, tmp_path: Path
) -> None:
    first = await kmsbox_async_store_factory()
    second = await kmsbox_async_store_factory()
    fake = FakeKek()
    in_memory = await kmsbox_async_store_factory("memory://", kek=fake)
    named = await kmsbox_async_store_factory(f"sqlite:///{tmp_path / 'named.db'}")
    assert kmsbox_async_store_factory.stores == [first, second, in_memory, named]
    assert first.backend.describe()["location"] != second.backend.describe()["location"]
    assert in_memory.backend.describe()["backend"] == "memory"
    assert [k.uri for k in in_memory.keks] == [fake.uri]
    assert named.backend.describe()["location"] == str(tmp_path / "named.db")
    await first.put("k", "in-first", namespace="app")
    await in_memory.put("k", "in-memory", namespace="app")
    assert await second.namespaces() == []
    assert (await in_memory.get("k", namespace="app")).value == "in-memory"


@anyio_test
async def test_the_factory_passes_open_store_options(kmsbox_async_store_factory: AsyncStoreFactory) -> None:
    quiet = await kmsbox_async_store_factory(audit_reads=False, audit_chains=4)
    assert quiet.audit_reads is False
    await quiet.put("k", "v", namespace="app")
    await quiet.get("k", namespace="app")
    actions = [e.action async for e in quiet.iter_audit_events() if e.name == "k"]
    assert actions == ["create"]  # the read was not audited


@anyio_test
async def test_a_store_the_factory_cannot_open_raises_and_is_not_kept(
    kmsbox_async_store_factory: AsyncStoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KMSBOX_UNSET_KEK", raising=False)
    with pytest.raises(PluginError, match="nosuch"):
        await kmsbox_async_store_factory("nosuch://store")
    with pytest.raises(ConfigError):
        await kmsbox_async_store_factory(kek="env://KMSBOX_UNSET_KEK")
    with pytest.raises(TypeError):
        await kmsbox_async_store_factory(no_such_option=True)
    assert kmsbox_async_store_factory.stores == []
    # The factory still works after failures.
    store = await kmsbox_async_store_factory()
    await store.put("k", "v", namespace="app")


@anyio_test
async def test_the_working_folders_settings_stay_out(
    kmsbox_async_store_factory: AsyncStoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "kmsbox.toml").write_text("[store]\naudit_reads = false\nnot_a_key = 1\n")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("KMSBOX_CONFIG", str(folder / "kmsbox.toml"))
    store = await kmsbox_async_store_factory()
    assert store.audit_reads is True  # the malformed file was not read at all
    # A settings file passed on purpose is read.
    chosen = tmp_path / "chosen.toml"
    chosen.write_text("[store]\naudit_reads = false\n")
    assert (await kmsbox_async_store_factory(config_file=chosen)).audit_reads is False
    with pytest.raises(ConfigError, match="not_a_key"):
        await kmsbox_async_store_factory(config_file=folder / "kmsbox.toml")


@pytest.mark.postgres
@anyio_test
async def test_the_factory_opens_a_postgresql_store(
    kmsbox_async_store_factory: AsyncStoreFactory, postgres_url: str
) -> None:
    store = await kmsbox_async_store_factory(postgres_url)
    assert store.backend.describe()["backend"] == "postgres"
    await store.put("k", "v", namespace="app")
    assert (await store.get("k", namespace="app")).value == "v"


@anyio_test
async def test_a_closed_factory_opens_nothing_more(tmp_path: Path, kmsbox_local_kek: str) -> None:
    async with AsyncStoreFactory(tmp_path, kmsbox_local_kek) as factory:
        await factory()
    with pytest.raises(RuntimeError, match="closed"):
        await factory()
    assert len(factory.stores) == 1


@anyio_test
async def test_a_store_closed_by_the_factory_refuses_calls_as_the_sync_store_does(
    tmp_path: Path, kmsbox_local_kek: str
) -> None:
    async with AsyncStoreFactory(tmp_path, kmsbox_local_kek) as factory:
        store = await factory()
        await store.put("k", "v", namespace="app")
    sync = kmsbox.open_store(f"sqlite:///{tmp_path / 'sync.db'}", kek=kmsbox_local_kek)
    sync.put("k", "v", namespace="app")
    sync.close()
    with pytest.raises(StorageError, match="closed"):
        sync.get("k", namespace="app")
    with pytest.raises(StorageError, match="closed"):
        await store.get("k", namespace="app")


# --- what happens after the test, and under other runners (a pytest run inside this one) ----------

_ANYIO_HEADER = """
import json, os
from pathlib import Path

import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"
"""

_RECORD = """
async def record(store, name):
    await store.put("k", "v", namespace="app")
    for _ in range(3):
        await store.get("k", namespace="app")
    location = store.backend.describe()["location"]
    Path("{out}", name + ".json").write_text(json.dumps({{"location": location, "kek": os.environ["KMSBOX_TEST_KEK"]}}))
    assert Path(location + "-wal").exists()  # open: SQLite keeps its write-ahead log
"""


def _recorded(out: Path, name: str) -> tuple[Path, str]:
    data = json.loads((out / f"{name}.json").read_text())
    return Path(data["location"]), data["kek"]


def _assert_closed_with_counts_folded(
    location: Path, kek_hex: str, monkeypatch: pytest.MonkeyPatch, *, reads: int = 3
) -> None:
    # SQLite removes the write-ahead log when the last connection closes.
    assert location.exists() and not Path(f"{location}-wal").exists()
    monkeypatch.setenv("KMSBOX_TEST_KEK", kek_hex)  # the KEK URI is part of what the store recorded
    with kmsbox.open_store(f"sqlite:///{location}", kek="env://KMSBOX_TEST_KEK") as store:
        assert store.info("k", namespace="app").access_count == reads


def test_every_store_is_closed_after_the_test_even_a_failed_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = pytester.mkdir("out")
    pytester.makepyfile(
        test_inner=_ANYIO_HEADER
        + _RECORD.format(out=out)
        + textwrap.dedent(
            """
            async def test_passes(kmsbox_async_store, kmsbox_async_store_factory):
                await record(kmsbox_async_store, "single")
                await record(await kmsbox_async_store_factory(), "second")
                await record(await kmsbox_async_store_factory(), "third")

            async def test_fails(kmsbox_async_store):
                await record(kmsbox_async_store, "failed")
                raise AssertionError("the test failed after opening its store")
            """
        )
    )
    pytester.makeini(_QUIET_ASYNCIO_INI)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    for name in ("single", "second", "third", "failed"):
        _assert_closed_with_counts_folded(*_recorded(out, name), monkeypatch)


def test_under_trio_the_fixtures_say_they_need_asyncio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_inner="""
        import pytest

        pytestmark = pytest.mark.anyio

        @pytest.fixture
        def anyio_backend():
            return "trio"

        async def test_store(kmsbox_async_store):
            pass
        """
    )
    pytester.makeini(_QUIET_ASYNCIO_INI)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*kmsbox_async_store_factory needs an asyncio event loop*anyio_backend*"])


_needs_pytest_asyncio = pytest.mark.skipif(
    importlib.util.find_spec("pytest_asyncio") is None,
    reason="pytest-asyncio is not installed (kmsbox's environment tests under anyio; pip install pytest-asyncio to run this)",
)


@_needs_pytest_asyncio
def test_under_pytest_asyncio_auto_mode_the_fixtures_work_as_they_are(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = pytester.mkdir("out")
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        test_inner="import json, os\nfrom pathlib import Path\n"
        + _RECORD.format(out=out)
        + textwrap.dedent(
            """
            async def test_store(kmsbox_async_store, kmsbox_async_store_factory):
                await record(kmsbox_async_store, "single")
                await record(await kmsbox_async_store_factory(), "second")
            """
        )
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:anyio")
    result.assert_outcomes(passed=1)
    for name in ("single", "second"):
        _assert_closed_with_counts_folded(*_recorded(out, name), monkeypatch)


@_needs_pytest_asyncio
def test_under_pytest_asyncio_strict_mode_the_documented_redeclaration_works(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = pytester.mkdir("out")
    pytester.makeini("[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n")
    # The conftest that docs/async.md gives for strict mode.
    pytester.makeconftest(
        """
        import pytest_asyncio

        from kmsbox.testing.aio import AsyncStoreFactory


        @pytest_asyncio.fixture
        async def kmsbox_async_store_factory(tmp_path, kmsbox_local_kek):
            async with AsyncStoreFactory(tmp_path / "kmsbox", kmsbox_local_kek) as factory:
                yield factory


        @pytest_asyncio.fixture
        async def kmsbox_async_store(kmsbox_async_store_factory):
            return await kmsbox_async_store_factory()
        """
    )
    pytester.makepyfile(
        test_inner="import json, os\nfrom pathlib import Path\n\nimport pytest\n"
        + _RECORD.format(out=out)
        + textwrap.dedent(
            """
            @pytest.mark.asyncio
            async def test_store(kmsbox_async_store):
                await record(kmsbox_async_store, "single")
            """
        )
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:anyio")
    result.assert_outcomes(passed=1)
    _assert_closed_with_counts_folded(*_recorded(out, "single"), monkeypatch)
