#!/usr/bin/env bash
# Build a fresh .venv with kmsbox, every plugin under plugins/, the example
# third-party plugin under docs/examples/, and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
rm -rf .venv
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
args=(-e ".[dev]")
for plugin in plugins/*/; do
  # The AWS plugin's fake (moto's server) is an extra, as a user would install it.
  if [ "$(basename "$plugin")" = "kmsbox-aws" ]; then
    args+=(-e "${plugin}[fake]")
  else
    args+=(-e "$plugin")
  fi
done
for example in docs/examples/*/; do
  args+=(-e "$example")
done
.venv/bin/python -m pip install --quiet "${args[@]}"
.venv/bin/python -m pip check
