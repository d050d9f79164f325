"""The layers run one way; this test reads every module's imports (ast) and fails on an arrow
that runs the wrong way.

    shm  <-  bus  <-  ingest | process  <-  cli        client <- bus        sinks <- bus, client
    web <- bus, client (and cli <- web)

A vendor folder never imports another vendor, and shared formats never import a vendor.
Imports inside functions and under ``TYPE_CHECKING`` count too: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, set[str]] = {
    "shm": {"shm"},
    "bus": {"shm", "bus"},
    "ingest": {"shm", "bus", "ingest"},
    "process": {"shm", "bus", "process"},
    "client": {"bus", "client"},
    "sinks": {"bus", "client", "sinks"},
    "web": {"bus", "client", "web"},
    "cli": {"shm", "bus", "ingest", "process", "client", "sinks", "web", "cli", "configs"},
}
"""For each layer (a top-level folder), the layers its modules may import."""

NOT_CODE = {"tests", "benchmarks", "docs", "configs", "streamctl", "build", "dist"}


def _layer_folders() -> list[str]:
    return sorted(p.name for p in REPO.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and any(p.glob("*.py"))
                  and p.name not in NOT_CODE)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted module) of every import in a module, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ["streamctl", *path.relative_to(REPO).with_suffix("").parts[:-1]]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _violations(folder: str) -> list[str]:
    allowed = ALLOWED[folder]
    bad: list[str] = []
    for path in sorted((REPO / folder).rglob("*.py")):
        rel = path.relative_to(REPO)
        own_vendor = rel.parts[2] if rel.parts[:2] == ("ingest", "vendors") and len(rel.parts) > 3 else None
        for line, module in _imports(path):
            parts = module.split(".")
            if parts[0] != "streamctl" or len(parts) < 2:
                continue
            if parts[1] not in allowed:
                bad.append(f"{rel}:{line} imports {module} ({folder} may import {', '.join(sorted(allowed))})")
            target_vendor = parts[3] if parts[1:3] == ["ingest", "vendors"] and len(parts) > 3 else None
            in_format = rel.parts[:2] == ("ingest", "formats")
            if target_vendor and target_vendor != own_vendor and (own_vendor or in_format):
                bad.append(f"{rel}:{line} imports {module} (a vendor or format never imports another vendor)")
    return bad


def test_every_code_folder_has_a_layer():
    assert set(_layer_folders()) <= set(ALLOWED), "a new top-level code folder needs a row in ALLOWED"


@pytest.mark.parametrize("folder", _layer_folders())
def test_imports_run_down_the_layers(folder):
    assert _violations(folder) == []


def test_the_checker_sees_a_wrong_arrow(tmp_path, monkeypatch):
    """The rule itself can fail: a module of `process` importing `ingest` is reported."""
    fake = tmp_path / "process"
    fake.mkdir()
    (fake / "bad.py").write_text("def f():\n    from streamctl.ingest.feed import run_feed\n")
    (tmp_path / "ingest" / "vendors" / "a").mkdir(parents=True)
    (tmp_path / "ingest" / "vendors" / "a" / "x.py").write_text("from streamctl.ingest.vendors.b import SPEC\n")
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    assert _violations("process") == [
        "process/bad.py:2 imports streamctl.ingest.feed (process may import bus, process, shm)",
        "process/bad.py:2 imports streamctl.ingest.feed.run_feed (process may import bus, process, shm)",
    ]
    assert any("never imports another vendor" in v for v in _violations("ingest"))


def test_the_import_package_links_every_layer():
    """`streamctl/` links each layer folder, so `streamctl.<layer>` resolves from a checkout."""
    links = {p.name for p in (REPO / "streamctl").iterdir() if p.is_symlink()}
    assert set(_layer_folders()) <= links
    for name in links:
        assert (REPO / "streamctl" / name).resolve() == (REPO / name).resolve()
