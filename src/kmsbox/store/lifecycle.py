"""Key lifecycle jobs (filled in by the lifecycle work)."""

from __future__ import annotations


class LifecycleMixin:
    """Rotation, rewrap, re-encryption and migration."""
