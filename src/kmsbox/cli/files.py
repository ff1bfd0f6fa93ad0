"""Reading and writing files the user named on the command line.

An OS error (a missing folder, no permission, a full disk) becomes a ValueError,
which the CLI prints as one ``kmsbox: error:`` line with the usage exit code. The
message names the path and the reason, never the file's contents.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FileProblem", "file_problem", "read_text_file", "write_text_file", "writing"]


class FileProblem(ValueError):
    """A file named on the command line cannot be read or written."""


def file_problem(verb: str, path: Path | str, exc: OSError | UnicodeDecodeError) -> FileProblem:
    """The one-line error for ``exc`` while trying to ``verb`` ``path``."""
    if isinstance(exc, UnicodeDecodeError):
        # The codec's own message quotes the offending bytes: say only what was wrong.
        return FileProblem(f"cannot {verb} {path}: UnicodeDecodeError (not UTF-8 text)")
    reason = f" ({exc.strerror})" if exc.strerror else ""
    return FileProblem(f"cannot {verb} {path}: {type(exc).__name__}{reason}")


def read_text_file(path: Path) -> str:
    """The UTF-8 text of ``path`` (``-`` is stdin); FileProblem if it cannot be read or decoded."""
    read: Callable[[], str] = sys.stdin.read if str(path) == "-" else lambda: path.read_text(encoding="utf-8")
    problem: FileProblem | None = None
    try:
        return read()
    except (OSError, UnicodeDecodeError) as exc:
        problem = file_problem("read", path, exc)
    # Raised outside the handler: a UnicodeDecodeError holds the file's bytes (secrets,
    # for an import) and must not even ride along as __context__.
    raise problem


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError raised inside the block into the FileProblem of writing ``path``."""
    try:
        yield
    except OSError as exc:
        raise file_problem("write", path, exc) from None


def write_text_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8; FileProblem if it cannot be written."""
    with writing(path):
        path.write_text(text, encoding="utf-8")
