"""A SQLite file (threads in the concurrency tests need a real file, not the in-memory test database)."""

from __future__ import annotations

import os
import tempfile

from settings_common import *  # noqa: F403

# $KMSBOX_DJANGO_DB_DIR lets several processes (the kill test) share one database file.
_DIR = os.environ.get("KMSBOX_DJANGO_DB_DIR") or tempfile.mkdtemp(prefix="kmsbox-django-")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(_DIR, "app.db"),
        "OPTIONS": {"timeout": 30},
        "TEST": {"NAME": os.path.join(_DIR, "test.db")},
    }
}
