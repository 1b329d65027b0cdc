"""`--set path.to.field=value` overrides and dotted paths into an experiment's raw TOML data."""

from __future__ import annotations

import tomllib
from typing import Any

from zopg.errors import ConfigError


def parse_value(text: str) -> Any:
    """A TOML value (number, bool, string, array, inline table), or the bare text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, ValueError):
        # ValueError: an integer of more than 4300 digits (Python's int-string limit).
        return text


def apply_override(raw: dict, assignment: str, source: str) -> None:
    """Apply `path.to.field=value` to the raw TOML data; list items are addressed by index."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected path.to.field=value")
    path, text = assignment.split("=", 1)
    set_path(raw, path.strip(), parse_value(text.strip()), f"{source}: --set {path.strip()}")


def set_path(raw: dict, path: str, value: Any, where_prefix: str) -> None:
    """raw[path] = value for a dotted path; list items are addressed by index."""
    keys = path.split(".")
    node: Any = raw
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        where = ".".join(keys[: i + 1])
        if isinstance(node, list):
            # isdecimal, not isdigit: int() refuses digits such as '²'.
            if not key.isdecimal() or int(key) >= len(node):
                raise ConfigError(f"{where_prefix}: {where!r} must index 0..{len(node) - 1}")
            key = int(key)
        elif not isinstance(node, dict):
            raise ConfigError(f"{where_prefix}: {where!r} is not a table or array")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]
