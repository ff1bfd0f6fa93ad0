"""The legacy libraries' fields, as their users have them.

django-fernet-fields 0.6 imports ``force_text`` from ``django.utils.encoding``, which
Django 4.0 removed (it was an alias of ``force_str``). The alias is restored here, for
these tests only, so that the library's own field code writes the rows. django-cryptography
1.1 cannot import on Django 5 (``django.utils.baseconv`` is gone), so the tests use
django-cryptography-django5, its fork for Django 5 with the same stored format.
"""

from __future__ import annotations

import django.utils.encoding as encoding

if not hasattr(encoding, "force_text"):
    encoding.force_text = encoding.force_str  # type: ignore[attr-defined]

from django_cryptography.fields import encrypt
from fernet_fields import EncryptedTextField as FernetTextField

__all__ = ["FernetTextField", "encrypt"]
