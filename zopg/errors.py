"""Errors for bad user input, with messages that name the field, the value and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# The largest int32: counters and sizes are int32 on the device (JAX's default integer), so
# every check of a count against that limit uses this one constant.
INT32_MAX = 2**31 - 1


class ConfigError(ValueError):
    """A user-supplied value is invalid; the message says which field and what is allowed."""


def bad_value(field: str, value: object, allowed: str) -> ConfigError:
    """Build the standard message: `field = value: allowed`."""
    return ConfigError(f"{field} = {value!r}: {allowed}")


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for the known name closest to a misspelt one, else ""."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, [k for k in known if isinstance(k, str)], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, name: object, known: Iterable[str]) -> ConfigError:
    """An unknown registry name; the message suggests the closest and lists every known one."""
    known = sorted(known)
    hint = did_you_mean(name, known)
    return ConfigError(f"unknown {kind} {name!r}{hint}; known {_plural(kind)}: {', '.join(known)}")


# The optional extras of the package and the top-level modules each provides (pyproject.toml).
EXTRAS = {
    "gymnax": ("gymnax", "six", "seaborn"),
    "brax": ("brax", "mujoco", "mujoco_mjx", "trimesh"),
    "slurm": ("submitit",),
}


def missing_extra(what: str, err: ModuleNotFoundError, extra: str) -> ConfigError | None:
    """The refusal when `what` needs an optional extra that is not installed, naming the extra
    to install; None when the missing module is not one the extra provides (a real bug)."""
    if (err.name or "").split(".")[0] not in EXTRAS[extra]:
        return None
    return ConfigError(f"{what} needs the {extra} extra: pip install 'zopg[{extra}]'")


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
    raise bad_value(field, value, f"must be in {interval(low, high, low_open, high_open)}")


def interval(low, high, low_open: bool = False, high_open: bool = False) -> str:
    """`[low, high]` with open ends as parentheses and missing bounds as ∓inf."""
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"


def integral(value: object) -> object:
    """An integral float (TOML reads 1e6 as 1000000.0) as an int; anything else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def checked_int(field: str, value: object, low: int | None = 1, high: int | None = None) -> int:
    """`value` as a Python int in [low, high], or a ConfigError naming `field`; an integral float
    such as 1e6 is taken as the integer it is."""
    value = integral(value)
    # bool is an int subclass; True as a count is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_value(field, value, f"must be an integer in {interval(low, high)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise bad_value(field, value, f"must be an integer in {interval(low, high)}")
    return value


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

    Links, teachers, oracles and algorithm configs are hashed as static jit arguments, so their
    fields must be plain floats (a jax or numpy scalar would hash by identity or not at all).
    """
    if isinstance(value, bool):
        raise bad_value(field, value, "must be a number, not a bool")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise bad_value(field, value, "must be a real number") from None
    except OverflowError:  # an int beyond a float's range (10**400)
        raise bad_value(
            field, value, f"must be in {interval(low, high, low_open, high_open)}"
        ) from None
    check_range(field, number, low, high, low_open=low_open, high_open=high_open)
    return number


def checked_choice(field: str, value: object, allowed: Iterable[str]) -> str:
    """`value` if it is one of `allowed`, else a ConfigError listing them all."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise bad_value(field, value, f"must be one of {', '.join(allowed)}")
    return value


def checked_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise bad_value(field, value, "must be true or false")
    return value
