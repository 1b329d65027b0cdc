"""The package's floors: every import points down, so there is no circle and no arrow back up.

Checked on the source, imports at any depth (inside functions too: a lazy import is still an
arrow). A unit is a top-level module or subpackage of zopg; a unit may import itself and any
unit on a lower floor, nothing on its own floor or above.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "zopg"

# Lowest first. The results store sits on the ground floor, so reading a report imports no
# training code; search spaces live in algorithms/, so nothing below tuning/ imports it.
FLOORS = [
    {"errors"},
    {"store", "provenance", "rollout"},
    {"zopg", "plugins", "networks", "estimators"},  # "zopg": the package's __init__
    # sequence_kl sits below exact, so that exact may re-export it.
    {"envs", "policies", "preferences", "sequence_kl"},
    # lm: the token family's reference, gold utilities, proxies and best-of-n.
    {"exact", "occupancy", "lm"},
    {"evaluation", "regimes"},
    {"algorithms"},
    {"experiments", "analysis"},
    {"tuning", "rates"},
    {"cli"},
    {"__main__"},
]
FLOOR = {unit: level for level, units in enumerate(FLOORS) for unit in units}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "zopg"


def source_unit(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return (
        "zopg"
        if relative.name == "__init__.py" and relative.parent == Path(".")
        else (relative.parts[0].removesuffix(".py"))
    )


def is_submodule(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()


def zopg_imports(path: Path) -> set[str]:
    """Every zopg module a file imports, at top level or inside functions; `from zopg import
    store` counts as zopg.store."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; use the absolute zopg.… path")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zopg"):
            if node.module == "zopg":  # a submodule, or a name the package's __init__ holds
                found.update(
                    f"zopg.{alias.name}" if is_submodule(alias.name) else "zopg"
                    for alias in node.names
                )
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("zopg"))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_floor():
    units = {source_unit(path) for path in SOURCES}
    assert units <= set(FLOOR), f"place these in FLOORS: {sorted(units - set(FLOOR))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    unit = source_unit(path)
    for name in zopg_imports(path):
        target = unit_of(name)
        if target == unit:
            continue
        assert target in FLOOR, f"{name}: not a zopg unit"
        assert FLOOR[target] < FLOOR[unit], (
            f"{path.relative_to(PACKAGE)} imports {name}: {target} is not below {unit}"
        )


# The arrows the old layout had, named, so a failure says which one came back.
def _importers(prefix: str, subpackages) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE)} -> {name}"
        for sub in subpackages
        for path in sorted((PACKAGE / sub).rglob("*.py"))
        for name in zopg_imports(path)
        if name == prefix or name.startswith(prefix + ".")
    ]


def test_analysis_imports_nothing_from_experiments_or_training():
    banned = ("zopg.experiments", "zopg.algorithms", "zopg.envs", "zopg.tuning", "zopg.rates")
    assert not [hit for prefix in banned for hit in _importers(prefix, ["analysis"])]


def test_lower_layers_import_nothing_from_tuning_runs_or_reports():
    lower = ["algorithms", "envs", "policies", "preferences"]
    banned = ("zopg.tuning", "zopg.experiments", "zopg.analysis", "zopg.rates", "zopg.cli")
    assert not [hit for prefix in banned for hit in _importers(prefix, lower)]


def test_nothing_below_the_cli_imports_it():
    hits = [
        f"{path.relative_to(PACKAGE)}"
        for path in SOURCES
        if source_unit(path) not in ("cli", "__main__")
        and any(unit_of(name) == "cli" for name in zopg_imports(path))
    ]
    assert not hits


def test_the_store_imports_no_other_layer():
    assert zopg_imports(PACKAGE / "store.py") <= {"zopg.errors"}
