"""Validation shared by links, teachers and oracles: user values become checked plain floats."""

from __future__ import annotations

from zopg.errors import bad_value, check_range


def checked_float(
    field: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """`value` as a Python float in the given range, or a ConfigError naming `field`.

    Links, teachers and oracles are hashed as static jit arguments, so their fields must be plain
    floats (a jax or numpy scalar would hash by identity or not at all).
    """
    # bool is an int subclass; True as a scale or threshold is surely a mistake.
    if isinstance(value, bool):
        raise bad_value(field, value, "must be a number, not a bool")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise bad_value(field, value, "must be a real number") from None
    check_range(field, number, low, high, low_open=low_open, high_open=high_open)
    return number
