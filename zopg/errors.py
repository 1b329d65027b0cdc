"""Errors for bad user input, with messages that name the field, the value and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A user-supplied value is invalid; the message says which field and what is allowed."""


def bad_value(field: str, value: object, allowed: str) -> ConfigError:
    """Build the standard message: `field = value: allowed`."""
    return ConfigError(f"{field} = {value!r}: {allowed}")


def unknown_name(kind: str, name: object, known: Iterable[str]) -> ConfigError:
    """An unknown registry name; the message lists every known one."""
    names = ", ".join(sorted(known))
    return ConfigError(f"unknown {kind} {name!r}; known {_plural(kind)}: {names}")


def _plural(noun: str) -> str:
    """English plural of the registry kinds we name (policy -> policies, link -> links)."""
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return noun[:-1] + "ies"
    return noun + "s"


def check_range(
    field: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise a ConfigError unless low <= value <= high (open ends when asked)."""
    lo_ok = low is None or (value > low if low_open else value >= low)
    hi_ok = high is None or (value < high if high_open else value <= high)
    # NaN fails every comparison, so it is rejected here too.
    if lo_ok and hi_ok and value == value:
        return
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    raise bad_value(field, value, f"must be in {left}{lo}, {hi}{right}")
