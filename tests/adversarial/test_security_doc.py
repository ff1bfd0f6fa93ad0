"""docs/security.md stays true: every test it cites exists, and its list of known defects is
exactly the tests still marked xfail for a bug (so fixing one means updating the page)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "security.md"
_CITED = re.compile(r"`((?:tests|plugins)/[\w/.-]+\.py)::([\w:]+)`")


def _cited(text: str) -> set[tuple[str, str]]:
    return {(m[1], m[2]) for m in _CITED.finditer(text)}


def _tests(path: Path) -> dict[str, ast.FunctionDef]:
    """Test functions (and methods, as ``Class::name``) defined in a file."""
    found: dict[str, ast.FunctionDef] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            found.update({f"{node.name}::{f.name}": f for f in node.body if isinstance(f, ast.FunctionDef)})
    return found


def _is_xfail(function: ast.FunctionDef) -> bool:
    return any("xfail" in ast.unparse(d) for d in function.decorator_list)


def _exists(path: str, name: str) -> bool:
    defined = _tests(ROOT / path)
    if name in defined:
        return True
    # A test class may inherit the test from a conformance suite that ships in kmsbox.testing.
    cls, _, method = name.rpartition("::")
    classes = {n.name for n in ast.parse((ROOT / path).read_text(encoding="utf-8")).body if isinstance(n, ast.ClassDef)}
    suites = {n.split("::")[-1] for p in (ROOT / "src/kmsbox/testing").glob("*.py") for n in _tests(p)}
    return cls in classes and method in suites


def test_every_test_the_page_cites_exists() -> None:
    cited = _cited(PAGE.read_text(encoding="utf-8"))
    assert len(cited) > 40
    missing = [f"{path}::{name}" for path, name in sorted(cited) if not _exists(path, name)]
    assert missing == []


def test_the_known_defects_are_the_tests_still_marked_xfail() -> None:
    text = PAGE.read_text(encoding="utf-8")
    defects = _cited(text.split("Known defects", 1)[1].split("\n## ", 1)[0])
    marked = {
        (str(path.relative_to(ROOT)), name)
        for path in [*sorted((ROOT / "tests" / "adversarial").glob("test_*.py")), ROOT / "tests/store/test_sinks.py"]
        for name, function in _tests(path).items()
        if _is_xfail(function)
    }
    assert defects == marked
