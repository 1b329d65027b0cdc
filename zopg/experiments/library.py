"""The experiment files that ship with zopg: benchmarks/*.toml, installed as `zopg.library`."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from zopg.errors import ConfigError, did_you_mean


def library_dir() -> Path:
    """The folder of the shipped experiment files: benchmarks/ in a clone (an editable install
    maps zopg.library there), the package's own folder in an installed wheel."""
    return Path(str(importlib.resources.files("zopg.library")))


def experiment_names() -> list[str]:
    return [p.stem for p in sorted(library_dir().glob("*.toml"))]


def sweep_names() -> list[str]:
    """The rate-sweep files (`python -m zopg.rates`), not `zopg run` experiments."""
    return [f"rates/{p.stem}" for p in sorted((library_dir() / "rates").glob("*.toml"))]


def resolve_experiment(name: str) -> Path:
    """A path to a TOML file, or the name of a shipped experiment (from any folder)."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return path
    candidate = library_dir() / f"{name}.toml"
    if candidate.exists():
        return candidate
    names = experiment_names()
    raise ConfigError(
        f"unknown experiment {name!r}{did_you_mean(name, names)}; shipped experiments "
        f"({library_dir()}): {', '.join(names) or 'none found'}; or give a path to a .toml file"
    )
