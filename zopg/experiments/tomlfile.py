"""Reading and checking TOML files (experiments and rate sweeps): errors name the file, the key
and what is allowed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from zopg.errors import ConfigError, did_you_mean, integral


def read_toml(path) -> dict:
    """The file's tables, or a ConfigError saying it is missing, too large or not valid TOML."""
    path = Path(path)
    try:
        # Read at most one byte past the limit: /dev/zero or a huge file must not fill memory.
        with path.open("rb") as file:
            data = file.read(MAX_TOML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, ValueError) as err:
        # A folder, no permission, or a NUL in the name (ValueError).
        raise ConfigError(f"{path}: cannot read: {err}") from None
    if len(data) > MAX_TOML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_TOML_BYTES // 1024} KiB; not an experiment")
    try:
        # TOML files are UTF-8 whatever the locale says.
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 ({err})") from None
    check_shape(path, text)
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as err:
        # ValueError: an integer of more than 4300 digits (Python's int-string limit).
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be an experiment") from None


# Bounds on what an experiment file may be, checked before tomllib parses it: the largest file
# in benchmarks/ is a few KiB; tomllib's time and memory grow with the square of a dotted key's
# parts (a 100 KB key of 50,000 parts took 14.6 GB), and deep nesting exhausts the stack.
MAX_TOML_BYTES = 256 * 1024
MAX_KEY_PARTS = 32
MAX_NESTING = 32
# A basic or literal string on one line: a dot or bracket inside one is text, not structure
# (a GridWorld layout row of 40 cells, "S.......", is one string, not 40 key parts).
ONE_LINE_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'')


def check_shape(path: Path, text: str) -> None:
    """Refuse keys of too many dotted parts and brackets nested too deeply, before tomllib sees
    the file, in one linear pass. A key is what ends at `=` or at a table header's `]`, counted
    from the last `,`, `{` or `[`, so keys in inline tables count and floats (after `=`) do not.
    Strings on one line are left out; text inside a multi-line string is scanned as if it were
    TOML, which errs on the side of refusing files no experiment would be."""
    depth = deepest = 0
    for number, line in enumerate(text.splitlines(), start=1):
        bare = ONE_LINE_STRING.sub('""', line).split("#", 1)[0]
        dots = 0
        for char in bare:
            if char == ".":
                dots += 1
                if dots >= MAX_KEY_PARTS:
                    raise ConfigError(
                        f"{path}: line {number}: a key of more than {MAX_KEY_PARTS} dotted parts"
                    )
            elif char in "=,]}":
                dots = 0
            if char in "[{":
                dots = 0
                depth += 1
                deepest = max(deepest, depth)
            elif char in "]}":
                depth -= 1
        if deepest > MAX_NESTING:
            raise ConfigError(f"{path}: brackets nested more than {MAX_NESTING} deep")


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
