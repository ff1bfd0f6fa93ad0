#!/usr/bin/env bash
# The whole test suite: lint, strict typing, then every test (core, plugins,
# the example plugin). Run scripts/install.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
PATHS=(src plugins tests benchmarks docs/examples)
.venv/bin/python -m ruff check "${PATHS[@]}"
.venv/bin/python -m ruff format --check "${PATHS[@]}"
.venv/bin/python -m mypy src plugins/*/src docs/examples/*/src
.venv/bin/python -m pytest "$@"
