"""Architecture rules that import-linter cannot say: the policy imports only the stdlib."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "autoscaler"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_policy_imports_only_stdlib_and_itself() -> None:
    offenders = []
    for path in sorted((PACKAGE / "policy").glob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if name.startswith("autoscaler.policy") or top == "__future__":
                continue
            if top not in sys.stdlib_module_names or top == "asyncio":
                offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_only_kube_imports_the_kubernetes_client() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "kube") in path.parents:
            continue
        for name in imported_modules(path):
            if name.split(".")[0] in ("kubernetes", "kubernetes_asyncio"):
                offenders.append(f"{path.relative_to(PACKAGE)}: {name}")
    assert offenders == []
