"""Drive testapp's database from a separate process (the kill and CLI tests run this).

python dj_job_runner.py sqlite|postgres setup N     migrate, then create N people (ssn "ssn-<i>")
python dj_job_runner.py sqlite|postgres rewrite BATCH DELAY
python dj_job_runner.py sqlite|postgres check       print {"values": {pk: ssn}, "scan": {...}}
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = f"settings_{sys.argv[1]}"
    import django

    django.setup()
    from django.core.management import call_command
    from kmsbox_django import rewrite_field, scan_field
    from testapp.models import Person

    action = sys.argv[2]
    if action == "setup":
        call_command("migrate", run_syncdb=True, verbosity=0)
        Person.objects.bulk_create([Person(name=str(i)) for i in range(int(sys.argv[3]))])
        for i, person in enumerate(Person.objects.order_by("pk")):
            person.ssn = f"ssn-{i}"
            person.save()
    elif action == "rewrite":
        delay = float(sys.argv[4])

        def slow(done: int, total: int | None) -> None:
            print(f"progress {done}", flush=True)
            time.sleep(delay)

        report = rewrite_field(Person, "ssn", batch_size=int(sys.argv[3]), progress=slow)
        print(json.dumps(report.to_dict()))
    elif action == "check":
        from kmsbox_django.models import RewriteCheckpoint

        values = {str(p.pk): p.ssn for p in Person.objects.all()}
        checkpoint = RewriteCheckpoint.objects.exists()
        print(json.dumps({"values": values, "scan": scan_field(Person, "ssn").to_dict(), "checkpoint": checkpoint}))


if __name__ == "__main__":
    main()
