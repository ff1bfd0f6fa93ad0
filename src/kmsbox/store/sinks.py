"""Audit sinks: copies of every audit event outside the database, like Vault's audit devices.

A sink receives each event as a JSON-ready record carrying its chain position, the MAC
before it and its own MAC, so the copy can be checked against the database later
(``kmsbox audit verify --against FILE``): an event erased or altered in the database is
still in the copy, which the database's attacker cannot reach.

Events go to the sinks inside the transaction that records them, before it commits: a
sink that fails fails the operation (the default; ``sink_failure = "ignore"`` only
counts the failure instead). If the transaction then rolls back, the sinks are told
(``abort``), so a copy never holds an event that did not happen without saying so.

Built in: ``jsonl:///abs/path/audit.jsonl[?max_bytes=N&keep=K]`` (appended, fsynced per
batch, rotated by size, 0600) and ``stdout://``. Plugins add more through the
``register_audit_sinks`` hook.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlparse

from kmsbox.errors import ConfigError, StorageError
from kmsbox.hookspecs import hookimpl

__all__ = ["SINK_FAILURE_MODES", "AuditSink", "JsonLinesSink", "SinkSet", "StdoutSink", "open_sink", "read_records"]

SINK_FAILURE_MODES = ("fail", "ignore")
_DEFAULT_MAX_BYTES = 100 * 1024 * 1024
_DEFAULT_KEEP = 5


@runtime_checkable
class AuditSink(Protocol):
    """Where copies of audit events go."""

    def emit(self, records: Sequence[dict[str, Any]]) -> None:
        """Make these records durable before returning; raise if that cannot be done."""
        ...

    def abort(self, records: Sequence[dict[str, Any]]) -> None:
        """Note that the transaction of these (already emitted) records rolled back."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...


def _encode(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, sort_keys=True, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def _abort_record(record: dict[str, Any]) -> dict[str, Any]:
    return {"abort": True, "chain": record["chain"], "seq": record["seq"], "at": record["at"], "mac": record["mac"]}


class JsonLinesSink:
    """Appends one JSON object per line to a file, fsynced per batch, rotated by size.

    Several processes may share the file: each batch is written under an exclusive
    ``flock``, and a process whose file was rotated away by another reopens it.
    """

    def __init__(self, path: str, *, max_bytes: int = _DEFAULT_MAX_BYTES, keep: int = _DEFAULT_KEEP) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        self._fd: int | None = None
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ConfigError(f"audit sink folder {os.path.dirname(os.path.abspath(path))} does not exist")

    def __repr__(self) -> str:
        return f"JsonLinesSink({self.path!r})"

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def _current(self) -> int:
        # Reopen when another process rotated the file under this one.
        if self._fd is not None:
            try:
                same = os.fstat(self._fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(self._fd)
                self._fd = None
        if self._fd is None:
            self._fd = self._open()
        return self._fd

    def _write(self, lines: bytes) -> None:
        with self._lock:
            try:
                fd = self._current()
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    fd = self._rotate_if_full(fd)
                    view = memoryview(lines)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError as exc:
                raise StorageError(f"audit sink {self.path} cannot be written: {exc.strerror}") from None

    def _rotate_if_full(self, fd: int) -> int:
        if os.fstat(fd).st_size < self.max_bytes:
            return fd
        for index in range(self.keep - 1, 0, -1):
            older = f"{self.path}.{index}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{index + 1}")
        os.replace(self.path, f"{self.path}.1")
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        self._fd = self._open()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self._fd

    def emit(self, records: Sequence[dict[str, Any]]) -> None:
        """Append and fsync."""
        self._write(b"".join(_encode(r) for r in records))

    def abort(self, records: Sequence[dict[str, Any]]) -> None:
        """Append an abort line per record."""
        self._write(b"".join(_encode(_abort_record(r)) for r in records))

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class StdoutSink:
    """Writes one JSON object per line to standard output (for a log shipper to collect)."""

    def __repr__(self) -> str:
        return "StdoutSink()"

    def emit(self, records: Sequence[dict[str, Any]]) -> None:
        """Write and flush."""
        sys.stdout.write("".join(_encode(r).decode("ascii") for r in records))
        sys.stdout.flush()

    def abort(self, records: Sequence[dict[str, Any]]) -> None:
        """Write the abort lines."""
        self.emit([_abort_record(r) for r in records])

    def close(self) -> None:
        """Nothing to close."""


def _jsonl(url: str) -> JsonLinesSink:
    parsed = urlparse(url)
    if parsed.netloc or not parsed.path.startswith("/"):
        raise ConfigError("audit sink URL: use jsonl:///absolute/path/audit.jsonl")
    options: dict[str, int] = {}
    try:
        pairs = parse_qsl(parsed.query, strict_parsing=True) if parsed.query else []
    except ValueError:
        raise ConfigError("audit sink URL: the query must look like ?max_bytes=N&keep=K") from None
    for key, value in pairs:
        if key not in ("max_bytes", "keep") or key in options:
            raise ConfigError(f"audit sink URL: unknown or repeated parameter {key!r} (known: max_bytes, keep)")
        if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 2**40:
            raise ConfigError(f"audit sink URL: {key} must be a positive integer")
        options[key] = int(value)
    return JsonLinesSink(unquote(parsed.path), **options)


def _stdout(url: str) -> StdoutSink:
    if url.rstrip("/") != "stdout:":
        raise ConfigError("audit sink URL: use stdout:// with nothing after it")
    return StdoutSink()


@hookimpl(trylast=True)
def register_audit_sinks(register: Any) -> None:
    """Register the built-in sinks."""
    register("jsonl", _jsonl, "JSON lines appended to a file (fsynced, rotated by size)")
    register("stdout", _stdout, "JSON lines on standard output")


def open_sink(url: str) -> AuditSink:
    """Open the sink that serves ``url``'s scheme (ConfigError or PluginError otherwise)."""
    from kmsbox.plugins import audit_sink_factories, missing_scheme_error, scheme_of

    scheme = scheme_of(url, "audit sink URL")
    factories = audit_sink_factories()
    registration = factories.get(scheme)
    if registration is None:
        raise missing_scheme_error(scheme, "audit sink", factories)
    sink = registration.factory(url)
    if not isinstance(sink, AuditSink):
        raise ConfigError(f"the plugin serving {scheme}:// returned an object that is not an audit sink")
    return sink


class SinkSet:
    """The store's sinks and what a failure of one means (``fail`` or ``ignore``)."""

    def __init__(self, sinks: Sequence[AuditSink], on_failure: str = "fail") -> None:
        if on_failure not in SINK_FAILURE_MODES:
            raise ConfigError(f"audit sink_failure must be one of {', '.join(SINK_FAILURE_MODES)}")
        self.sinks = list(sinks)
        self.on_failure = on_failure
        #: Failures passed over with ``ignore``.
        self.failures = 0

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def emit(self, records: Sequence[dict[str, Any]]) -> None:
        """Give the records to every sink (raising, unless failures are ignored).

        A failure fails the transaction, so the sinks that already took the records are
        told to abort them before the error is raised (the caller's abort hook is only
        registered once every sink has them).
        """
        for index, sink in enumerate(self.sinks):
            try:
                sink.emit(records)
            except Exception as exc:
                if self.on_failure == "fail":
                    self._abort(self.sinks[:index], records)
                    raise StorageError(f"audit sink {sink!r} failed: {type(exc).__name__}") from None
                self.failures += 1

    def abort(self, records: Sequence[dict[str, Any]]) -> None:
        """Tell every sink; an abort that cannot be written is only counted."""
        self._abort(self.sinks, records)

    def _abort(self, sinks: Sequence[AuditSink], records: Sequence[dict[str, Any]]) -> None:
        for sink in sinks:
            try:
                sink.abort(records)
            except Exception:
                self.failures += 1

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                self.failures += 1


def read_records(lines: Iterable[str]) -> Iterable[tuple[int, dict[str, Any]]]:
    """The records of a JSON-lines copy with their line numbers (ValueError for a line
    that is not a JSON object)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            raise ValueError(f"line {number} of the audit copy is not JSON") from None
        if not isinstance(record, dict):
            raise ValueError(f"line {number} of the audit copy is not a JSON object")
        yield number, record
