"""Normalisers of text before it is blind-indexed: equal after normalising means a lookup matches.

Named, so that a Django migration can record the choice: ``exact`` (the text as is),
``nfc`` (Unicode NFC, the default: composed and decomposed accents match), ``casefold``
(NFKC, case-folded, surrounding white space removed) and ``email`` (the same as casefold).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

__all__ = ["NORMALIZERS", "Normalizer", "get_normalizer"]

Normalizer = Callable[[str], str]


def _exact(text: str) -> str:
    return text


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _casefold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().strip()


NORMALIZERS: dict[str, Normalizer] = {"exact": _exact, "nfc": _nfc, "casefold": _casefold, "email": _casefold}


def get_normalizer(name: str) -> Normalizer:
    """The normaliser called ``name`` (ValueError naming the choices for any other)."""
    try:
        return NORMALIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"normalize must be one of {', '.join(sorted(NORMALIZERS))}") from None
