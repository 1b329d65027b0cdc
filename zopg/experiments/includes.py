"""`include = [...]`: tuned fragments merged into an experiment's method tables."""

from __future__ import annotations

import copy
from pathlib import Path

from zopg.errors import ConfigError
from zopg.experiments.tomlfile import check_keys, fail, read_toml

FRAGMENT_KEYS = {"methods", "provenance"}


def apply_includes(raw: dict, path: Path) -> None:
    """Merge the fragments named by `include` (paths relative to the experiment file) into the
    experiment's method tables. A fragment may set fields the experiment leaves unset; a field
    set in both is an error naming both files, and so is a method the experiment lacks."""
    source = str(path)
    names = raw.get("include", [])
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise fail(source, "include", f"= {names!r}: must be a list of TOML file paths")
    methods = raw.get("methods")
    for name in names:
        fragment_path = path.parent / name
        try:
            fragment = read_toml(fragment_path)
        except ConfigError as err:
            # Say which include it was: the path alone may be the experiment's own folder.
            raise fail(source, f"include {name}", str(err)) from None
        check_keys(str(fragment_path), "", fragment, FRAGMENT_KEYS)
        tables = fragment.get("methods", {})
        if not isinstance(tables, dict):
            raise fail(str(fragment_path), "methods", "must be a table of [methods.LABEL] tables")
        for label, table in tables.items():
            if not isinstance(methods, dict) or label not in methods:
                raise fail(
                    source,
                    f"include {name}",
                    f"sets methods.{label}, which this experiment does not have",
                )
            if not isinstance(table, dict):
                raise fail(str(fragment_path), f"methods.{label}", "must be a table")
            if not isinstance(methods[label], dict):
                raise fail(source, f"methods.{label}", "must be a table with an 'algorithm' key")
            _merge_method(methods[label], table, f"methods.{label}", source, name)
        provenance = fragment.get("provenance", {})
        if not isinstance(provenance, dict):
            raise fail(str(fragment_path), "provenance", "must be a table")
        if not isinstance(raw.setdefault("provenance", {}), dict):
            raise fail(source, "provenance", "must be a table")
        raw["provenance"].update(provenance)


def _merge_method(target: dict, table: dict, where: str, source: str, name: str) -> None:
    for key, value in table.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_method(target[key], value, f"{where}.{key}", source, name)
        elif key in target:
            raise fail(
                source,
                f"{where}.{key}",
                f"is set here and in the included {name}; remove one of them",
            )
        else:
            target[key] = copy.deepcopy(value)
