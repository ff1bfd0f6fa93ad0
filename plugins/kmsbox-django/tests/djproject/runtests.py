"""Run the Django test suite of kmsbox-django with Django's own test runner.

    python runtests.py sqlite      # a SQLite file
    python runtests.py postgres    # the PostgreSQL server of $KMSBOX_TEST_POSTGRES_URL

Exits with the runner's status (non-zero when a test fails or the database is missing).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("sqlite", "postgres"):
        print("usage: runtests.py sqlite|postgres [test labels...]", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE))
    os.environ["DJANGO_SETTINGS_MODULE"] = f"settings_{sys.argv[1]}"
    import django
    from django.conf import settings
    from django.test.utils import get_runner

    django.setup()
    runner = get_runner(settings)(verbosity=1, interactive=False, failfast=False)
    failures = runner.run_tests(sys.argv[2:] or ["testapp"])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
