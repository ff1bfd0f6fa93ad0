"""The rewrite job: re-encrypt one column of a table in place, in committed batches, resumably.

It walks the table in primary-key order, a batch at a time, and for each row decides from
the stored bytes alone whether the value needs rewriting (a legacy format, a data key not
wrapped by the primary KEK's primary version, or every row with ``force``) and whether its
blind index needs recomputing (missing, or made with an older index-key version). Each
changed row is written with compare-and-set: ``UPDATE ... WHERE pk = ? AND value = <what
was read> AND index IS NOT DISTINCT FROM <what was read>``, so a row the application
changed meanwhile is left alone (it already holds a current value) and counted as a
conflict. The batch's updates and the job's checkpoint (the last key done, sealed with the
engine so it cannot be forged from the database) commit in one transaction: a job killed at
any point resumes after its last committed batch and loses nothing.

The ORM plugins supply a :class:`RewriteTarget` (the SQL); everything else is here.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kmsbox.errors import IntegrityError, KeyUnavailable
from kmsbox_orm.blind import BlindIndexSpec
from kmsbox_orm.column import EncryptedColumn
from kmsbox_orm.context import row_id
from kmsbox_orm.errors import ValueTooLarge, WrongValueType
from kmsbox_orm.index_keys import IndexKeyring

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_BATCH_SIZE",
    "ColumnScan",
    "Progress",
    "RewriteJob",
    "RewriteReport",
    "RewriteTarget",
    "RowChange",
    "StoredRow",
    "decode_key",
    "encode_key",
]

DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 100_000
_FAILED_SHOWN = 20
_ROW_ERRORS = (IntegrityError, KeyUnavailable, WrongValueType, ValueTooLarge)

#: ``progress(rows_done, rows_total)``.
Progress = Callable[[int, int | None], None]


@dataclass(slots=True)
class StoredRow:
    """One row as the job reads it: primary key, stored value, stored index (if the column has one)."""

    key: tuple[Any, ...]
    value: bytes | str | None
    index: bytes | None = None


@dataclass(slots=True)
class RowChange:
    """A compare-and-set of one row: write the new value and index only if the old ones are still there."""

    key: tuple[Any, ...]
    old_value: bytes | str | None
    new_value: bytes | str | None
    old_index: bytes | None
    new_index: bytes | None


class RewriteTarget(Protocol):
    """The SQL side of a rewrite job, supplied by an ORM plugin."""

    @property
    def job_name(self) -> str:
        """A stable name of the job (``table.column``), the key of its checkpoint."""
        ...

    def count_rows(self) -> int:
        """Rows in the table (for the progress bar)."""
        ...

    def read_batch(self, after: tuple[Any, ...] | None, limit: int) -> list[StoredRow]:
        """Up to ``limit`` rows with a key greater than ``after``, in key order."""
        ...

    def write_batch(self, changes: Sequence[RowChange], checkpoint: Callable[[int], bytes | None]) -> int:
        """Apply ``changes`` (compare-and-set), then store ``checkpoint(rows_changed)`` (None deletes
        the stored one), in one committed transaction; return how many rows changed."""
        ...

    def read_checkpoint(self) -> bytes | None:
        """The stored checkpoint of this job, if any."""
        ...


def encode_key(key: Sequence[Any]) -> list[list[Any]]:
    """A primary key as JSON-able, typed parts (for the checkpoint)."""
    out: list[list[Any]] = []
    for part in key:
        if isinstance(part, bool):
            raise TypeError("a boolean primary key cannot be checkpointed")
        if isinstance(part, int):
            out.append(["i", part])
        elif isinstance(part, str):
            out.append(["s", part])
        elif isinstance(part, uuid.UUID):
            out.append(["u", str(part)])
        elif isinstance(part, (bytes, bytearray, memoryview)):
            out.append(["b", bytes(part).hex()])
        else:
            raise TypeError(f"a primary key part of type {type(part).__name__} cannot be checkpointed")
    return out


def decode_key(parts: Sequence[Any]) -> tuple[Any, ...]:
    """The inverse of :func:`encode_key` (ValueError when malformed)."""
    decoders: dict[str, Callable[[Any], Any]] = {
        "i": int,
        "s": str,
        "u": uuid.UUID,
        "b": bytes.fromhex,
    }
    try:
        return tuple(decoders[tag](value) for tag, value in parts)
    except (KeyError, TypeError, ValueError):
        raise ValueError("malformed checkpoint key") from None


@dataclass
class RewriteReport:
    """What a rewrite job did (or, with ``dry_run``, would do).

    ``reasons`` counts the rows it decided to write, by why: ``legacy`` (a legacy format),
    ``old-kek`` (a data key not wrapped by the primary KEK's primary version), ``forced``,
    ``index`` (only the blind index was missing or old). ``written`` counts the rows its
    compare-and-set changed, ``conflicts`` those the application had changed first.
    """

    job: str
    dry_run: bool = False
    resumed: bool = False
    finished: bool = False
    scanned: int = 0
    written: int = 0
    unchanged: int = 0
    null: int = 0
    conflicts: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    failed_rows: list[dict[str, str]] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0

    def count(self, reason: str) -> None:
        """Count one row planned for ``reason``."""
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "job": self.job,
            "dry_run": self.dry_run,
            "resumed": self.resumed,
            "finished": self.finished,
            "scanned": self.scanned,
            "written": self.written,
            "unchanged": self.unchanged,
            "null": self.null,
            "conflicts": self.conflicts,
            "failed": self.failed,
            "reasons": dict(sorted(self.reasons.items())),
            "failed_rows": list(self.failed_rows),
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
        }

    _COUNTERS = ("scanned", "written", "unchanged", "null", "conflicts", "failed")

    def counters(self) -> dict[str, Any]:
        """The cumulative counters a checkpoint carries."""
        return {name: getattr(self, name) for name in self._COUNTERS} | {"reasons": dict(self.reasons)}

    def restore(self, counters: dict[str, Any]) -> None:
        """Continue from a checkpoint's counters."""
        for name in self._COUNTERS:
            value = counters.get(name, 0)
            setattr(self, name, value if isinstance(value, int) and not isinstance(value, bool) else 0)
        reasons = counters.get("reasons", {})
        if isinstance(reasons, dict):
            self.reasons = {str(k): v for k, v in reasons.items() if isinstance(v, int)}


class RewriteJob:
    """Re-encrypt ``column`` (and recompute its blind ``index``) over a :class:`RewriteTarget`.

    ``force`` rewrites every value with a fresh data key, not only old ones. Row-level
    failures (a tampered or moved value, a missing KEK version, a legacy value that does not
    fit the column) leave the row as it was and are counted and listed; a KMS failure
    (ProviderError) stops the job, which resumes from its checkpoint when run again.
    """

    def __init__(
        self,
        column: EncryptedColumn,
        target: RewriteTarget,
        *,
        index: BlindIndexSpec | None = None,
        keyring: IndexKeyring | None = None,
        force: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be an integer from 1 to {MAX_BATCH_SIZE}")
        if (index is None) != (keyring is None):
            raise ValueError("a blind index needs its keyring (and a keyring its index)")
        self.column = column
        self.target = target
        self.index = index
        self.keyring = keyring
        self.force = force
        self.batch_size = batch_size

    def _checkpoint_context(self) -> dict[str, str]:
        return {"kmsbox:purpose": "orm-rewrite-checkpoint", "job": self.target.job_name}

    def _seal_checkpoint(self, run: str, after: tuple[Any, ...], report: RewriteReport) -> bytes:
        payload = {"run": run, "after": encode_key(after), "counters": report.counters()}
        data = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
        return self.column.encryption.encrypt(data, self._checkpoint_context())

    def _open_checkpoint(self, sealed: bytes) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        # IntegrityError for a checkpoint that was altered, forged or copied from another job.
        data = self.column.encryption.decrypt(sealed, self._checkpoint_context())
        try:
            payload = json.loads(data)
            return str(payload["run"]), decode_key(payload["after"]), dict(payload["counters"])
        except (ValueError, KeyError, TypeError):
            raise IntegrityError("malformed rewrite checkpoint") from None

    def run(
        self,
        *,
        resume: bool = True,
        dry_run: bool = False,
        progress: Progress | None = None,
        max_batches: int | None = None,
    ) -> RewriteReport:
        """Run to the end (or for ``max_batches``); return the report.

        ``resume`` continues after the last committed batch of an unfinished run; otherwise
        the job starts at the first row. ``dry_run`` reads and decides but writes nothing
        (not even a checkpoint).
        """
        started = time.perf_counter()
        report = RewriteReport(self.target.job_name, dry_run=dry_run)
        run = uuid.uuid4().hex
        after: tuple[Any, ...] | None = None
        if resume and not dry_run:
            sealed = self.target.read_checkpoint()
            if sealed is not None:
                run, after, counters = self._open_checkpoint(sealed)
                report.restore(counters)
                report.resumed = True
        total = self.target.count_rows()
        if progress:
            progress(report.scanned, total)
        batches = 0
        while max_batches is None or batches < max_batches:
            rows = self.target.read_batch(after, self.batch_size)
            if not rows:
                report.finished = True
                if not dry_run:
                    self.target.write_batch([], lambda _changed: None)
                break
            changes = self._plan(rows, report)
            after = rows[-1].key
            if not dry_run:

                def checkpoint(
                    changed: int, changes: Sequence[RowChange] = changes, done: tuple[Any, ...] = after
                ) -> bytes:
                    # Counted inside the batch's transaction, so a resumed run's totals are exact.
                    report.written += changed
                    # A lost compare-and-set: the application wrote the row meanwhile (so it is current).
                    report.conflicts += len(changes) - changed
                    return self._seal_checkpoint(run, done, report)

                self.target.write_batch(changes, checkpoint)
            batches += 1
            report.batches += 1
            if progress:
                progress(report.scanned, total)
        report.seconds = time.perf_counter() - started
        return report

    def _plan(self, rows: Sequence[StoredRow], report: RewriteReport) -> list[RowChange]:
        column, index, keyring = self.column, self.index, self.keyring
        changes: list[RowChange] = []
        for row in rows:
            report.scanned += 1
            if row.value is None:
                if index is not None and row.index is not None:
                    changes.append(RowChange(row.key, None, None, row.index, None))
                    report.count("index")
                else:
                    report.null += 1
                continue
            try:
                message = column.message(row.value)
                if message is None:
                    if column.legacy is None:
                        raise IntegrityError("malformed or unauthentic ciphertext")
                    state = "legacy"
                else:
                    state = "current" if column.encryption.message_is_current(message) else "old-kek"
                reason = "forced" if self.force and state == "current" else state
                need_value = reason != "current"
                need_index = index is not None and keyring is not None and not index.is_current(keyring, row.index)
                if not need_value and not need_index:
                    report.unchanged += 1
                    continue
                rid = row_id(row.key)
                plaintext, value = self._read(row.value, message, rid, decode=need_index)
                new_value = column.seal_plaintext(plaintext, rid).stored if need_value else row.value
                new_index = row.index
                if need_index and index is not None and keyring is not None:
                    new_index = index.digest(keyring, column.codec, value)
            except _ROW_ERRORS as exc:
                report.failed += 1
                if len(report.failed_rows) < _FAILED_SHOWN:
                    report.failed_rows.append({"row": _row_label(row.key), "error": type(exc).__name__})
                continue
            report.count(reason if need_value else "index")
            changes.append(RowChange(row.key, row.value, new_value, row.index, new_index))
        return changes

    def _read(self, stored: bytes | str, message: bytes | None, rid: str, *, decode: bool) -> tuple[bytes, Any]:
        column = self.column
        if message is None:
            value = column.codec.coerce_legacy(column.open_legacy(stored))
            return column.codec.encode(value), value
        plaintext = column.encryption.envelope.decrypt_encoded(message, column.encoded_context(rid))
        return plaintext, column.codec.decode(plaintext) if decode else None


def _row_label(key: tuple[Any, ...]) -> str:
    try:
        return row_id(key)
    except (TypeError, ValueError):
        return "<unprintable key>"


@dataclass
class ColumnScan:
    """How a column's stored values stand (from their headers; nothing is decrypted)."""

    job: str
    rows: int = 0
    null: int = 0
    current: int = 0
    old_kek: int = 0
    legacy: int = 0
    malformed: int = 0
    kek_versions: dict[str, int] = field(default_factory=dict)
    index_versions: dict[int, int] = field(default_factory=dict)
    index_missing: int = 0

    @classmethod
    def run(
        cls,
        column: EncryptedColumn,
        target: RewriteTarget,
        *,
        has_index: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> ColumnScan:
        """Read every row's header (and index version) in batches."""
        from kmsbox_orm.message import read_header

        scan = cls(target.job_name)
        after: tuple[Any, ...] | None = None
        while True:
            rows = target.read_batch(after, batch_size)
            if not rows:
                return scan
            after = rows[-1].key
            for row in rows:
                scan.rows += 1
                if row.value is None:
                    scan.null += 1
                    continue
                if has_index:
                    if row.index is None or len(row.index) < 2:
                        scan.index_missing += 1
                    else:
                        version = int.from_bytes(row.index[:2], "big")
                        scan.index_versions[version] = scan.index_versions.get(version, 0) + 1
                try:
                    state = column.state(row.value)
                    message = column.message(row.value)
                    if message is not None and message[2:3] == b"\x01":
                        version_name = read_header(message).kek_version
                        scan.kek_versions[version_name] = scan.kek_versions.get(version_name, 0) + 1
                except IntegrityError:
                    scan.malformed += 1
                    continue
                if state == "current":
                    scan.current += 1
                elif state == "old-kek":
                    scan.old_kek += 1
                else:
                    scan.legacy += 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "job": self.job,
            "rows": self.rows,
            "null": self.null,
            "current": self.current,
            "old_kek": self.old_kek,
            "legacy": self.legacy,
            "malformed": self.malformed,
            "kek_versions": dict(sorted(self.kek_versions.items())),
            "index_versions": {str(k): v for k, v in sorted(self.index_versions.items())},
            "index_missing": self.index_missing,
        }
