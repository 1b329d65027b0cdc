"""Reading and checking TOML files (experiments and rate sweeps): errors name the file, the key
and what is allowed."""

from __future__ import annotations

import tomllib
from pathlib import Path

from zopg.errors import ConfigError


def read_toml(path) -> dict:
    """The file's tables, or a ConfigError saying it is missing or not valid TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


def fail(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {message}")


def check_keys(source, where, table, allowed) -> None:
    if not isinstance(table, dict):
        raise fail(source, where, f"must be a table, got {table!r}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise fail(
            source,
            f"{where}.{unknown[0]}" if where else unknown[0],
            f"unknown key; allowed: {', '.join(sorted(allowed))}",
        )


def positive_int(source, key, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise fail(source, key, f"= {value!r}: must be an integer >= {low}")
    return value


def table_list(source, key, value, id_key) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise fail(source, key, f"must be a non-empty array of tables ([[{key}]])")
    for i, item in enumerate(value):
        if not isinstance(item, dict) or id_key not in item:
            raise fail(source, f"{key}[{i}]", f"must be a table with a {id_key!r} key")
    return value
