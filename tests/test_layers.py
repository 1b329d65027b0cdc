"""The package's layers: data flows config → algorithms → runner → store → analysis, with no
import circle and no arrow back up. Checked on the source (imports at any depth)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "zopg"


def zopg_imports(path: Path) -> set[str]:
    """Every zopg module a file imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zopg"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("zopg"))
    return found


def files(subpackage: str) -> list[Path]:
    return sorted((PACKAGE / subpackage).rglob("*.py"))


@pytest.mark.parametrize("path", files("analysis"), ids=lambda p: p.name)
def test_analysis_reads_the_store_and_trains_nothing(path):
    """analysis may use the store's read functions, never the runner, schema or algorithms."""
    banned = ("zopg.algorithms", "zopg.envs", "zopg.rollout", "zopg.estimators")
    for name in zopg_imports(path):
        if name.startswith("zopg.experiments"):
            assert name.startswith("zopg.experiments.store") or name == "zopg.experiments", name
        assert not name.startswith(banned), name


@pytest.mark.parametrize("path", files("experiments"), ids=lambda p: p.name)
def test_experiments_never_import_analysis(path):
    """Reports and figures are made from the store after a run (the CLI calls them)."""
    assert not [n for n in zopg_imports(path) if n.startswith("zopg.analysis")]


@pytest.mark.parametrize("sub", ["algorithms", "envs", "policies", "preferences"])
def test_lower_layers_know_nothing_of_runs_or_files(sub):
    for path in files(sub):
        for name in zopg_imports(path):
            assert not name.startswith(("zopg.experiments", "zopg.analysis", "zopg.cli")), (
                path,
                name,
            )


def test_the_store_imports_no_other_layer():
    assert {n for n in zopg_imports(PACKAGE / "experiments" / "store.py")} == set()
