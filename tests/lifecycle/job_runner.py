"""Run one long lifecycle job in its own process, for test_lifecycle_kill.py to SIGKILL.

    python tests/lifecycle/job_runner.py --url URL --kek URI [--kek URI] --job JOB [options]

Prints ``ready`` once the store is open, ``commit`` after every committed write
transaction of the job (so the test can kill it at a chosen point), and finally
``done {report as JSON}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmsbox
from kmsbox.store.importing import parse_dotenv

JOBS = ("rewrap_deks", "reencrypt", "rewrap_namespace_keys", "migrate_kek", "cleanup_expired", "import")


def main(argv: list[str]) -> int:
    """Open the store, run the job, report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--kek", action="append", required=True)
    parser.add_argument("--job", choices=JOBS, required=True)
    parser.add_argument("--namespace", default="big")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--to", help="migrate_kek: the target KEK")
    parser.add_argument("--source", type=Path, help="import: a dotenv file")
    args = parser.parse_args(argv)

    store = kmsbox.open_store(args.url, kek=args.kek)
    store.batch_size = args.batch_size
    ports = store._io  # the store's own ports: every transaction of the job goes through them
    transact = ports.transact

    def announced(write: bool, body: Callable[..., Any], *, read: bool = False) -> Any:
        result = transact(write, body, read=read)
        if write:
            print("commit", flush=True)
        return result

    ports.transact = announced  # type: ignore[method-assign]
    print("ready", flush=True)
    result: Any
    if args.job == "rewrap_deks":
        result = store.rewrap_deks(args.namespace).to_dict()
    elif args.job == "reencrypt":
        result = store.reencrypt(args.namespace).to_dict()
    elif args.job == "rewrap_namespace_keys":
        result = store.rewrap_namespace_keys().to_dict()
    elif args.job == "migrate_kek":
        result = store.migrate_kek(args.to, drop_old=True).to_dict()
    elif args.job == "cleanup_expired":
        result = {"deleted": store.cleanup_expired()}
    else:
        pairs = parse_dotenv(args.source.read_text(encoding="utf-8"))
        result = store.import_secrets(pairs, namespace=args.namespace).to_dict()
    store.close()
    print("done " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
