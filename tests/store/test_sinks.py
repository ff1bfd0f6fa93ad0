"""Audit sinks: copies of every event outside the database (JSON lines, stdout, a plugin's),
what a failing sink does to the operation, abort records, checking a copy against the
database, automatic checkpoints every N events, and bad sink settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoker, isolate, json_of, ok

import kmsbox
from kmsbox.cli.output import EXIT_CODES
from kmsbox.errors import ConfigError, KmsboxError, PluginError, SecretNotFound, StorageError
from kmsbox.hookspecs import hookimpl
from kmsbox.kek import open_kek
from kmsbox.plugins import get_plugin_manager, reset_plugin_manager
from kmsbox.storage import open_storage
from kmsbox.storage.base import AuditFilter
from kmsbox.store.audit import Checkpoint
from kmsbox.store.service import SecretStore
from kmsbox.store.sinks import SinkSet
from kmsbox.testing.tamper import execute

Opener = Callable[..., SecretStore]
NS = "app:production"
RECORD_FIELDS = {"kmsbox_audit", "chain", "seq", "at", "time", "action", "result", "prev", "mac", "namespace", "name"}


def _records(*paths: Path) -> list[dict[str, Any]]:
    """Every line of the copies, oldest file first, parsed."""
    return [json.loads(line) for path in paths for line in path.read_text(encoding="utf-8").splitlines()]


def _events(store: SecretStore) -> list[tuple[int, int, str]]:
    """(chain, seq, action) of every event in the database, in the store-wide order."""
    return [(e.chain, e.seq, e.action) for e in store.iter_audit_events()]


def _verify_copy(store: SecretStore, *paths: Path) -> list[str]:
    def lines() -> Iterator[str]:
        for path in paths:
            with path.open(encoding="utf-8") as handle:
                yield from handle

    return store.verify_audit_copy(lines()).problems


# --- the JSON-lines sink -------------------------------------------------------------------------


def test_jsonl_copy_holds_every_event_with_its_chain_position_and_mac_and_no_value(
    open_test_store: Opener, tmp_path: Path
) -> None:
    copy = tmp_path / "audit.jsonl"
    store = open_test_store(audit_sinks=[f"jsonl://{copy}"])
    store.put("token", "value-a8f3c1", namespace=NS, description="the payment token")
    store.get("token", namespace=NS)
    store.disable("token", namespace=NS)
    store.delete("token", namespace=NS)
    records = _records(copy)
    assert [(r["chain"], r["seq"], r["action"]) for r in records] == _events(store)
    for record in records:
        assert set(record) >= RECORD_FIELDS and record["kmsbox_audit"] == 2
        assert len(bytes.fromhex(record["mac"])) == 32
    # Each chain's copy links up on its own: every record names the MAC before it.
    last: dict[int, str] = {}
    for record in records:
        assert record["prev"] == last.get(record["chain"], "")
        last[record["chain"]] = record["mac"]
    assert "a8f3c1" not in copy.read_text(encoding="utf-8")
    assert _verify_copy(store, copy) == []


def test_jsonl_copy_is_appended_across_opens_and_kept_private_whatever_the_umask(
    open_test_store: Opener, tmp_path: Path
) -> None:
    copy = tmp_path / "audit.jsonl"
    copy.write_text("", encoding="utf-8")
    copy.chmod(0o644)  # made by someone else, readable by all: kmsbox narrows it
    previous = os.umask(0)
    try:
        first = open_test_store(audit_sinks=[f"jsonl://{copy}"])
        first.put("one", "v", namespace=NS)
        first.close()
        assert copy.stat().st_mode & 0o777 == 0o600
        before = copy.read_text(encoding="utf-8")
        second = open_test_store(audit_sinks=[f"jsonl://{copy}"])
        second.put("two", "v", namespace=NS)
    finally:
        os.umask(previous)
    after = copy.read_text(encoding="utf-8")
    assert after.startswith(before) and len(after) > len(before)
    assert [r["name"] for r in _records(copy) if r["action"] == "create" and r["name"]] == ["one", "two"]
    assert _verify_copy(second, copy) == []


def test_jsonl_sink_fsyncs_each_batch_of_complete_lines(
    open_test_store: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "audit.jsonl"
    store = open_test_store(audit_sinks=[f"jsonl://{copy}"])
    store.put("warm", "v", namespace=NS)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.realpath(f"/proc/self/fd/{fd}") == str(copy):
            # What the sink wrote is whole lines by the time it asks for them to be durable.
            assert copy.read_bytes().endswith(b"\n")
            synced.append(len(copy.read_bytes().splitlines()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    for index in range(5):
        store.put(f"s{index}", "v", namespace=NS)
    store.get("s0", namespace=NS)
    # One fsync per transaction's batch of events, each after that batch's lines.
    lines = len(_records(copy))
    assert len(synced) == 6 and synced[-1] == lines and synced == sorted(set(synced))


def test_jsonl_sink_rotates_by_size_and_keeps_the_newest_files(open_test_store: Opener, tmp_path: Path) -> None:
    copy = tmp_path / "audit.jsonl"
    store = open_test_store(audit_sinks=[f"jsonl://{copy}?max_bytes=4000&keep=2"])
    for index in range(60):
        store.put(f"s{index}", "v", namespace=NS)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("audit.jsonl"))
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for path in (tmp_path / n for n in names):
        assert path.stat().st_mode & 0o777 == 0o600
    for rotated in ("audit.jsonl.1", "audit.jsonl.2"):
        # A file is rotated before the batch that would take it past max_bytes is written.
        assert 4000 <= (tmp_path / rotated).stat().st_size < 4000 + 1000
    kept = [tmp_path / "audit.jsonl.2", tmp_path / "audit.jsonl.1", copy]
    records = _records(*kept)
    # The kept files are the newest events, in order, without a gap.
    assert [(r["chain"], r["seq"], r["action"]) for r in records] == _events(store)[-len(records) :]
    assert _verify_copy(store, *kept) == []


_APPENDER = """
import sys
import kmsbox

url, kek, sink, prefix, count = sys.argv[1:6]
with kmsbox.open_store(url, kek=kek, audit_sinks=[sink]) as store:
    for index in range(int(count)):
        store.put(f"{prefix}-{index}", "v", namespace="ns")
"""


def test_several_processes_append_to_one_rotating_copy_without_losing_a_line(
    open_test_store: Opener, tmp_path: Path, sqlite_url: str, kek_uri: str
) -> None:
    copy = tmp_path / "audit.jsonl"
    sink = f"jsonl://{copy}?max_bytes=20000&keep=100"
    open_test_store(audit_sinks=[sink]).put("first", "v", namespace="ns")
    processes = [
        subprocess.Popen([sys.executable, "-c", _APPENDER, sqlite_url, kek_uri, sink, f"p{n}", "40"]) for n in range(4)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0, 0]
    rotated = sorted(tmp_path.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:]))
    assert rotated, "the copy was never rotated"
    files = [*rotated, copy]
    records = [r for r in _records(*files) if not r.get("abort")]  # every line is one whole JSON object
    store = open_test_store()
    positions = [(r["chain"], r["seq"]) for r in records]
    assert len(positions) == len(set(positions))
    assert sorted(positions) == sorted((chain, seq) for chain, seq, _ in _events(store))
    assert sum(r["action"] == "create" and r["name"] is not None for r in records) == 1 + 4 * 40
    assert _verify_copy(store, *files) == []
    assert store.verify_audit().ok


# --- stdout --------------------------------------------------------------------------------------


def test_stdout_sink_writes_one_record_per_line(open_test_store: Opener, capsys: pytest.CaptureFixture[str]) -> None:
    store = open_test_store(audit_sinks=["stdout://"])
    capsys.readouterr()
    store.put("token", "value-77e0d2", namespace=NS)
    store.get("token", namespace=NS)
    out = capsys.readouterr().out
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["action"], r["name"]) for r in records] == [("create", None), ("create", "token"), ("read", "token")]
    assert all(set(r) >= RECORD_FIELDS for r in records)
    assert "77e0d2" not in out
    assert store.verify_audit_copy(out.splitlines()).ok


# --- a plugin's sink, and what a failing sink does -----------------------------------------------


class RecordingSink:
    """A plugin's sink that keeps records in memory and can be told to fail."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.emitted: list[dict[str, Any]] = []
        self.aborted: list[dict[str, Any]] = []
        self.closed = False
        self.failing = False
        #: Batches still accepted before every later one fails (None: no limit).
        self.batches_left: int | None = None

    def emit(self, records: Sequence[dict[str, Any]]) -> None:
        """Keep the records, or fail like a full disk."""
        if self.batches_left is not None:
            self.failing = self.batches_left <= 0
            self.batches_left -= 1
        if self.failing:
            raise OSError(28, "No space left on device")
        self.emitted += [dict(r) for r in records]

    def abort(self, records: Sequence[dict[str, Any]]) -> None:
        """Keep the aborted records."""
        self.aborted += [dict(r) for r in records]

    def close(self) -> None:
        """Note the close."""
        self.closed = True


class RecordingSinkPlugin:
    """A tiny plugin serving ``recording://NAME`` through the ``register_audit_sinks`` hook."""

    def __init__(self) -> None:
        self.sinks: dict[str, RecordingSink] = {}

    @hookimpl
    def register_audit_sinks(self, register: Any) -> None:
        """Register the recording sink."""
        register("recording", self.open, "keeps events in memory (tests)")

    def open(self, url: str) -> RecordingSink:
        """The factory: one sink per URL."""
        sink = self.sinks[url] = RecordingSink(url)
        return sink


@pytest.fixture
def recording() -> Iterator[RecordingSinkPlugin]:
    """The recording-sink plugin, registered with the plugin manager for this test only."""
    reset_plugin_manager()
    plugin = RecordingSinkPlugin()
    get_plugin_manager().register(plugin, name="test-recording-sink")
    yield plugin
    reset_plugin_manager()


def test_a_plugins_sink_registered_through_the_hook_receives_every_event(
    open_test_store: Opener, recording: RecordingSinkPlugin
) -> None:
    store = open_test_store(audit_sinks=["recording://main"])
    sink = recording.sinks["recording://main"]
    store.put("token", "value", namespace=NS)
    store.get("token", namespace=NS)
    assert [(r["chain"], r["seq"], r["action"]) for r in sink.emitted] == _events(store)
    assert store.verify_audit_copy(json.dumps(r) for r in sink.emitted).ok
    store.close()
    assert sink.closed


def test_a_failing_sink_fails_the_operation_and_nothing_reaches_the_database(
    open_test_store: Opener, recording: RecordingSinkPlugin
) -> None:
    store = open_test_store(audit_sinks=["recording://main"])
    store.put("before", "before-value", namespace=NS)
    sink = recording.sinks["recording://main"]
    events_before = _events(store)
    sink.failing = True
    with pytest.raises(StorageError, match="audit sink") as caught:
        store.put("during", "during-value-5c1e", namespace=NS)
    assert "5c1e" not in str(caught.value)
    with pytest.raises(StorageError):
        store.put("before", "before-value-2", namespace=NS)
    with pytest.raises(StorageError):  # an unrecorded read is no read
        store.get("before", namespace=NS)
    outside = open_test_store()  # another process, without the sink
    with pytest.raises(SecretNotFound):
        outside.get("during", namespace=NS)
    assert outside.get("before", namespace=NS).version == 1
    assert _events(outside)[: len(events_before)] == events_before
    assert not [e for e in _events(outside)[len(events_before) :] if e[2] != "read"]
    sink.failing = False
    assert store.put("during", "during-value", namespace=NS).version == 1
    assert store.verify_audit().ok


def test_an_ignored_sink_failure_lets_the_operation_succeed_and_is_counted(
    sqlite_url: str, kek_uri: str, recording: RecordingSinkPlugin, tmp_path: Path
) -> None:
    sink = RecordingSink("recording://direct")
    sinks = SinkSet([sink], "ignore")
    with SecretStore(open_storage(sqlite_url), [open_kek(kek_uri)], sinks=sinks) as store:
        store.put("before", "v", namespace=NS)
        sink.failing = True
        assert store.put("during", "v", namespace=NS).version == 1
        assert store.get("during", namespace=NS).value == "v"
        assert sinks.failures == 2
        assert [r["name"] for r in sink.emitted if r["action"] == "create"] == [None, "before"]
        assert store.verify_audit().ok
    # The same from kmsbox.toml: [audit] sink_failure = "ignore".
    config = tmp_path / "kmsbox.toml"
    config.write_text('[audit]\nsinks = ["recording://configured"]\nsink_failure = "ignore"\n', encoding="utf-8")
    with kmsbox.open_store(sqlite_url, kek=kek_uri, config_file=config) as configured:
        recording.sinks["recording://configured"].failing = True
        assert configured.put("after", "v", namespace=NS).version == 1


def _two_expired(store: SecretStore) -> None:
    for name in ("old-1", "old-2"):
        store.put(name, "v", namespace=NS, expires=0.2)
    time.sleep(0.3)


def test_sinks_are_told_when_the_transaction_of_their_records_rolls_back(
    open_test_store: Opener, recording: RecordingSinkPlugin
) -> None:
    # A cleanup batch appends one event per secret it deletes, in one transaction: the sink
    # takes the first and fails on the second, so the whole batch rolls back.
    store = open_test_store(audit_sinks=["recording://main"])
    _two_expired(store)
    sink = recording.sinks["recording://main"]
    sink.batches_left = 1
    with pytest.raises(StorageError):
        store.cleanup_expired(0)
    first = [r for r in sink.emitted if r["action"] == "expire"]
    assert [r["name"] for r in first] == ["old-1"]
    assert [(r["chain"], r["seq"], r["mac"]) for r in sink.aborted] == [(r["chain"], r["seq"], r["mac"]) for r in first]
    # Nothing of the batch is in the database, and the copy with its abort line checks out.
    assert [e for e in _events(store) if e[2] == "expire"] == []
    lines = [json.dumps(r) for r in sink.emitted] + [json.dumps({**r, "abort": True}) for r in sink.aborted]
    assert store.verify_audit_copy(lines).ok
    sink.batches_left = None
    sink.failing = False
    assert store.cleanup_expired(0) == 2


def test_an_earlier_sink_is_told_when_a_later_sink_fails_the_transaction(
    open_test_store: Opener, recording: RecordingSinkPlugin, tmp_path: Path
) -> None:
    copy = tmp_path / "audit.jsonl"
    # The file gets the record first; the second sink then fails, which rolls the put back.
    store = open_test_store(audit_sinks=[f"jsonl://{copy}", "recording://second"])
    store.put("before", "v", namespace=NS)
    recording.sinks["recording://second"].failing = True
    with pytest.raises(StorageError):
        store.put("during", "v", namespace=NS)
    records = _records(copy)
    created = {(r["chain"], r["seq"], r["mac"]) for r in records if r.get("name") == "during" and not r.get("abort")}
    assert created, "the copy never got the record"
    assert created <= {(r["chain"], r["seq"], r["mac"]) for r in records if r.get("abort")}
    assert _verify_copy(store, copy) == []


# --- checking a copy against the database ---------------------------------------------------------


def test_a_copy_finds_events_erased_or_altered_in_the_database(
    open_test_store: Opener, tmp_path: Path, db_path: Path
) -> None:
    copy = tmp_path / "audit.jsonl"
    store = open_test_store(audit_sinks=[f"jsonl://{copy}"])
    for index in range(4):
        store.put(f"s{index}", "v", namespace=NS)
    records = _records(copy)
    erased, altered, donor = records[-3], records[-2], records[-4]
    execute(db_path, "DELETE FROM kmsbox_audit_events WHERE chain = ? AND seq = ?", (erased["chain"], erased["seq"]))
    # Another event's MAC in its place: the chain walk and the copy both see it.
    execute(
        db_path,
        "UPDATE kmsbox_audit_events SET mac = ? WHERE chain = ? AND seq = ?",
        (bytes.fromhex(donor["mac"]), altered["chain"], altered["seq"]),
    )
    problems = _verify_copy(store, copy)
    assert any(f"event {erased['chain']}:{erased['seq']} is in the copy but not in the database" in p for p in problems)
    assert any(f"event {altered['chain']}:{altered['seq']} differs from the copy" in p for p in problems)
    assert len(problems) == 2


def test_a_copy_that_is_not_one_kmsbox_writes_is_a_value_error(open_test_store: Opener) -> None:
    store = open_test_store()
    store.put("s", "v", namespace=NS)
    for lines in (["not json"], ["[1, 2]"], ['{"chain": "x", "seq": 1, "at": 1, "mac": "00"}'], ['{"chain": 1}']):
        with pytest.raises(ValueError, match="line 1 of the audit copy"):
            store.verify_audit_copy(lines)


def test_cli_verify_against_rotated_copies_finds_an_altered_event(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    db_file = tmp_path / "secrets.db"
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{db_file}", kek=True)
    copy = tmp_path / "audit.jsonl"
    (tmp_path / "kmsbox.toml").write_text(
        f'[audit]\nsinks = ["jsonl://{copy}?max_bytes=3000&keep=5"]\n', encoding="utf-8"
    )
    run = invoker()
    ok(run("init"))
    for index in range(20):
        ok(run("put", NS, f"s{index}", input="v"))
    files = [str(p) for p in sorted(tmp_path.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:]))] + [str(copy)]
    assert len(files) > 1
    flags = [arg for path in files for arg in ("--against", path)]
    report = json_of(run("--json", "audit", "verify", *flags))
    assert report["ok"] is True and report["copy"]["files"] == files
    assert report["copy"]["records_checked"] == len(_records(*map(Path, files)))
    oldest = _records(Path(files[0]))[0]
    execute(
        db_file,
        "UPDATE kmsbox_audit_events SET mac = ? WHERE chain = ? AND seq = ?",
        (os.urandom(32), oldest["chain"], oldest["seq"]),
    )
    result = run("--json", "audit", "verify", *flags)
    assert result.exit_code == EXIT_CODES["verify_failed"]
    broken = json.loads(result.stdout)
    assert any(
        f"event {oldest['chain']}:{oldest['seq']} differs from the copy" in p for p in broken["copy"]["problems"]
    )


# --- automatic checkpoints ----------------------------------------------------------------------------


def test_checkpoint_every_n_events_bounds_what_can_be_cut_unnoticed(
    tmp_path: Path, sqlite_url: str, kek_uri: str, db_path: Path
) -> None:
    checkpoint_file = tmp_path / "checkpoint.json"
    config = tmp_path / "kmsbox.toml"
    config.write_text(f'[audit]\ncheckpoint_file = "{checkpoint_file}"\ncheckpoint_every = 5\n', encoding="utf-8")
    store = kmsbox.open_store(sqlite_url, kek=kek_uri, config_file=config)
    try:
        seen: set[str] = set()
        for index in range(30):
            store.put(f"s{index}", "v", namespace=NS)
            total = len(_events(store))
            if not checkpoint_file.exists():
                assert total < 5
                continue
            assert checkpoint_file.stat().st_mode & 0o777 == 0o600
            saved = Checkpoint.from_dict(json.loads(checkpoint_file.read_text(encoding="utf-8")))
            seen.add(checkpoint_file.read_text(encoding="utf-8"))
            assert 0 <= total - saved.events < 5  # never more than N events after the last checkpoint
        assert len(seen) >= 5
        assert store.verify_audit(saved).ok

        # Go on until a checkpoint was just written, then cut its newest event off, head row
        # included (replayed from before that event): only the checkpoint still knows of it.
        heads = execute(db_path, "SELECT chain, seq, at, mac, seal FROM kmsbox_audit_chains")
        while True:
            before = heads
            store.put(f"more-{total}", "v", namespace=NS)
            total = len(_events(store))
            saved = Checkpoint.from_dict(json.loads(checkpoint_file.read_text(encoding="utf-8")))
            heads = execute(db_path, "SELECT chain, seq, at, mac, seal FROM kmsbox_audit_chains")
            if total == saved.events and len(heads) == len(before) == 1:
                break
        (chain, seq, _, _, _), (_, old_seq, old_at, old_mac, old_seal) = heads[0], before[0]
        execute(db_path, "DELETE FROM kmsbox_audit_events WHERE chain = ? AND seq = ?", (chain, seq))
        execute(
            db_path,
            "UPDATE kmsbox_audit_chains SET seq = ?, at = ?, mac = ?, seal = ? WHERE chain = ?",
            (old_seq, old_at, old_mac, old_seal, chain),
        )
        assert store.verify_audit().ok
        problems = store.verify_audit(saved).problems
        assert f"chain {chain}: event {seq} from the checkpoint is gone: the chain was cut back" in problems
    finally:
        store.close()


# --- bad settings -------------------------------------------------------------------------------------

BAD_SINK_URLS = {
    "relative path": ("jsonl://relative/audit.jsonl", ConfigError),
    "zero max_bytes": ("jsonl:///tmp/audit.jsonl?max_bytes=0", ConfigError),
    "text max_bytes": ("jsonl:///tmp/audit.jsonl?max_bytes=s3cr3t-91", ConfigError),
    "negative keep": ("jsonl:///tmp/audit.jsonl?keep=-s3cr3t-91", ConfigError),
    "unknown option": ("jsonl:///tmp/audit.jsonl?password=s3cr3t-91", ConfigError),
    "repeated option": ("jsonl:///tmp/audit.jsonl?keep=1&keep=2", ConfigError),
    "broken query": ("jsonl:///tmp/audit.jsonl?s3cr3t-91", ConfigError),
    "missing folder": ("jsonl:///no/such/folder/audit.jsonl", ConfigError),
    "stdout with a path": ("stdout://s3cr3t-91", ConfigError),
    "no scheme": ("s3cr3t-91", ConfigError),
    "unknown scheme": ("syslogx://s3cr3t-91", PluginError),
}


@pytest.mark.parametrize(("url", "error"), list(BAD_SINK_URLS.values()), ids=list(BAD_SINK_URLS))
def test_a_bad_sink_url_is_refused_at_open_without_echoing_its_values(
    sqlite_url: str, kek_uri: str, db_path: Path, url: str, error: type[KmsboxError]
) -> None:
    with pytest.raises(error) as caught:
        kmsbox.open_store(sqlite_url, kek=kek_uri, audit_sinks=[url])
    assert "s3cr3t" not in str(caught.value)
    assert not db_path.exists()  # refused before the store was even made


BAD_AUDIT_SETTINGS = {
    "sinks not an array": 'sinks = "jsonl:///tmp/s3cr3t-91.jsonl"',
    "sink not a string": "sinks = [86420]",
    "empty sink": 'sinks = [" "]',
    "unknown failure mode": 'sink_failure = "s3cr3t-91"',
    "failure mode not text": "sink_failure = true",
    "checkpoint_every negative": 'checkpoint_file = "/tmp/cp.json"\ncheckpoint_every = -86420',
    "checkpoint_every text": 'checkpoint_file = "/tmp/cp.json"\ncheckpoint_every = "s3cr3t-91"',
    "checkpoint_every boolean": 'checkpoint_file = "/tmp/cp.json"\ncheckpoint_every = true',
    "checkpoint_every without a file": "checkpoint_every = 86420",
    "checkpoint_file not text": "checkpoint_file = 86420",
    "chains zero": "chains = 0",
    "chains text": 'chains = "s3cr3t-91"',
    "unknown setting": 'sink = "s3cr3t-91"',
}


@pytest.mark.parametrize("setting", list(BAD_AUDIT_SETTINGS.values()), ids=list(BAD_AUDIT_SETTINGS))
def test_a_bad_audit_setting_is_a_config_error_naming_the_key_not_the_value(
    tmp_path: Path, sqlite_url: str, kek_uri: str, db_path: Path, setting: str
) -> None:
    config = tmp_path / "kmsbox.toml"
    config.write_text(f"[audit]\n{setting}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[audit\]") as caught:
        kmsbox.open_store(sqlite_url, kek=kek_uri, config_file=config)
    assert "s3cr3t" not in str(caught.value) and "86420" not in str(caught.value)
    assert not db_path.exists()


def test_sink_failure_mode_given_in_code_is_checked(recording: RecordingSinkPlugin) -> None:
    with pytest.raises(ConfigError, match="sink_failure"):
        SinkSet([RecordingSink("recording://x")], "sometimes")


def test_an_audit_time_filter_sees_sink_written_events(open_test_store: Opener, tmp_path: Path) -> None:
    # The copy's times are the database's: a listing since a copied time starts at that event.
    copy = tmp_path / "audit.jsonl"
    store = open_test_store(audit_sinks=[f"jsonl://{copy}"])
    store.put("a", "v", namespace=NS)
    time.sleep(0.01)
    store.put("b", "v", namespace=NS)
    last = _records(copy)[-1]
    events = store.audit_events(AuditFilter(since=last["time"]))[0]
    assert [(e.chain, e.seq) for e in events] == [(last["chain"], last["seq"])]
