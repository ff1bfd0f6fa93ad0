"""Run the rewrite job of users.api_key in this process (the kill test SIGKILLs it).

Usage: python sa_job_runner.py URL SEARCH_PATH BATCH DELAY_SECONDS
The KEK comes from $KMSBOX_KEK. Prints one JSON report line when it finishes.
"""

from __future__ import annotations

import json
import sys
import time

import kmsbox_sqlalchemy as ks
from sa_models import User
from sqlalchemy import create_engine


def main() -> None:
    url, search_path, batch, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    engine = create_engine(url, connect_args={"options": f"-csearch_path={search_path}"} if search_path else {})
    ks.configure(engine=engine)

    def slow(done: int, total: int | None) -> None:
        print(f"progress {done}", flush=True)
        time.sleep(delay)

    report = ks.rewrite_column(engine, User.api_key, batch_size=batch, progress=slow)
    print(json.dumps(report.to_dict()), flush=True)


if __name__ == "__main__":
    main()
