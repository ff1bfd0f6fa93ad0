"""This process's id, kept current across ``fork`` without a system call on every read
(``os.getpid`` is one; the hot paths check it to notice a forked child)."""

from __future__ import annotations

import os

__all__ = ["current_pid"]

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def current_pid() -> int:
    """The id of the running process."""
    return _pid
