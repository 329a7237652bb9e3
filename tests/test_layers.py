"""The folders keep their roles: who may import whom (docs: /work/shared/CONVENTIONS.md, Layout)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORMATS = {"jsonl", "vn_csv", "dhis2", "open311", "report_manifest", "definitions_csv"}


def imports(path: Path) -> set[str]:
    """The project modules `path` imports, named under `lienthong` ('adapters.dhis2', 'sync.errors', …)."""
    package = path.parent.name
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # function-level imports too
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("lienthong.")}
        elif isinstance(node, ast.ImportFrom) and node.level:  # from . import x, from .x import y
            base = package + (f".{node.module}" if node.module else "")
            found |= {base} if node.module else {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lienthong."):
            found |= {node.module or ""} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name.removeprefix("lienthong.") for name in found}


def test_config_imports_nothing_of_the_project() -> None:
    """config/ stands alone: every layer may import it, so it imports no other layer."""
    for path in (ROOT / "config").glob("*.py"):
        assert all(name.startswith("config") for name in imports(path)), f"{path.name}: {imports(path)}"


def test_sync_imports_neither_node_nor_adapters() -> None:
    """The domain core knows nothing of the process shell or the ingestion plugins."""
    for path in (ROOT / "sync").glob("*.py"):
        bad = {name for name in imports(path) if name.split(".")[0] in {"node", "adapters"}}
        assert not bad, f"sync/{path.name} imports {bad}"


def test_format_adapters_do_not_import_each_other() -> None:
    """A format module shares helpers through the plumbing (parsing.py, messages.py, …), never through another format."""
    for name in FORMATS:
        path = ROOT / "adapters" / f"{name}.py"
        others = {f"adapters.{other}" for other in FORMATS - {name}}
        bad = {imported for imported in imports(path) if any(imported == o or imported.startswith(o + ".") for o in others)}
        assert not bad, f"adapters/{name}.py imports {bad}"
