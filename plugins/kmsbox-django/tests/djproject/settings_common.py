"""Settings shared by the SQLite and PostgreSQL runs. Keys are generated at run time."""

from __future__ import annotations

import os
import secrets

# One KEK per test run, generated now; the tests add versions to it as they rotate.
os.environ.setdefault("KMSBOX_DJANGO_TEST_KEK", secrets.token_hex(32))

SECRET_KEY = os.environ.setdefault("KMSBOX_DJANGO_TEST_SECRET_KEY", secrets.token_urlsafe(50))
INSTALLED_APPS = ["django.contrib.contenttypes", "kmsbox_django", "testapp"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
KMSBOX_ORM = {"KEK": ["env://KMSBOX_DJANGO_TEST_KEK"], "INDEX_GRACE": 0}
