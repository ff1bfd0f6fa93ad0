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
for plugin in plugins/*/ docs/examples/*/; do
  # A plugin's "fake" and "test" extras (moto's server, a test client, ...) are
  # installed with it, as a user who runs its tests would install them.
  extras=$(.venv/bin/python - "${plugin}pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    declared = tomllib.load(f).get("project", {}).get("optional-dependencies", {})
print(",".join(e for e in ("fake", "test") if e in declared))
PY
)
  args+=(-e "${plugin}${extras:+[$extras]}")
done
.venv/bin/python -m pip install --quiet "${args[@]}"
.venv/bin/python -m pip check
