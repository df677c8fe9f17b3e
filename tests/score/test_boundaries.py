"""The package boundaries batch scoring relies on, read from the source: score/ uses runtime/ and
bundle/ but never convert/; runtime/ never imports score/ or pyspark (the serve image has no Spark)."""

from __future__ import annotations

import ast

from tests.support.server import ROOT


def _imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_score_never_imports_convert() -> None:
    offenders = {path for path, names in _imports("score").items() if "convert" in names}
    assert not offenders
    assert any("runtime" in names for names in _imports("score").values())  # it reuses the server's code


def test_runtime_never_imports_score_or_pyspark() -> None:
    offenders = {path for path, names in _imports("runtime").items() if names & {"score", "pyspark"}}
    assert not offenders
