"""docs/orm.md's SQLAlchemy example runs as written and prints what the page says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "orm.md"


def test_the_sqlalchemy_example_in_docs_runs(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## SQLAlchemy: a complete example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    env = {k: v for k, v in os.environ.items() if k not in ("APP_KEK", "KMSBOX_KEK")}
    result = subprocess.run(
        [sys.executable, "-c", code.group(1)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sk-live-123 {'2fa': True}"
    assert (tmp_path / "app.db").exists()
