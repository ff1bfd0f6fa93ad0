"""The PostgreSQL server of $KMSBOX_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test)."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from settings_common import *  # noqa: F403

_url = urlparse(os.environ.get("KMSBOX_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": (_url.path or "/test").lstrip("/"),
        "USER": _url.username or "postgres",
        "PASSWORD": _url.password or "",
        "HOST": _url.hostname or "127.0.0.1",
        "PORT": str(_url.port or 5432),
        # One test database per run, so parallel runs on one server never share one.
        "TEST": {"NAME": f"test_kmsbox_django_{os.getpid()}"},
    }
}
# $KMSBOX_DJANGO_PG_SCHEMA puts the tables in one schema of the server's database (the kill test).
if os.environ.get("KMSBOX_DJANGO_PG_SCHEMA"):
    DATABASES["default"]["OPTIONS"] = {"options": f"-c search_path={os.environ['KMSBOX_DJANGO_PG_SCHEMA']}"}
