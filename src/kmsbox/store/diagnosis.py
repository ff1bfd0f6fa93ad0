"""Diagnosis and repair (filled in by the lifecycle work)."""

from __future__ import annotations


class DiagnosisMixin:
    """Diagnosis and repair."""
