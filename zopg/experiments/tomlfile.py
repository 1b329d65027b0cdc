"""Reading and checking TOML files (experiments and rate sweeps): errors name the file, the key
and what is allowed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from zopg.errors import ConfigError, did_you_mean, integral


def read_toml(path) -> dict:
    """The file's tables, or a ConfigError saying it is missing or not valid TOML."""
    path = Path(path)
    try:
        # TOML files are UTF-8 whatever the locale says.
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 ({err})") from None
    except (OSError, ValueError) as err:
        # A folder, no permission, or a NUL in the name (ValueError).
        raise ConfigError(f"{path}: cannot read: {err}") from None
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as err:
        # ValueError: an integer of more than 4300 digits (Python's int-string limit).
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


def fail(source: str, key: str, message: str) -> ConfigError:
    """`source: key: message`, or `source: key = value: rule` for a message "= value: rule"."""
    separator = " " if message.startswith("= ") else ": "
    return ConfigError(f"{source}: {key}{separator}{message}")


BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key_text(key: str) -> str:
    """A key as a message shows it: bare, or quoted when blank or odd (`"" = 1`, `"a.b" = 1`)."""
    return key if BARE_KEY.fullmatch(key) else repr(key)


def check_keys(source, where, table, allowed) -> None:
    if not isinstance(table, dict):
        raise fail(source, where, f"must be a table, got {table!r}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        key = key_text(unknown[0])
        raise fail(
            source,
            f"{where}.{key}" if where else key,
            f"unknown key{did_you_mean(unknown[0], allowed)}; "
            f"allowed: {', '.join(sorted(allowed))}",
        )


def positive_int(source, key, value, low: int = 1, high: int | None = None) -> int:
    value = integral(value)  # 1e6 is a million
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise fail(source, key, f"= {value!r}: must be an integer >= {low}")
    if high is not None and value > high:
        raise fail(source, key, f"= {value!r}: must be an integer in [{low}, {high}]")
    return value


def table_list(source, key, value, id_key) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise fail(source, key, f"must be a non-empty array of tables ([[{key}]])")
    for i, item in enumerate(value):
        if not isinstance(item, dict) or id_key not in item:
            raise fail(source, f"{key}[{i}]", f"must be a table with a {id_key!r} key")
    return value
