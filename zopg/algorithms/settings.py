"""Declared settings: config fields that say what values they allow and how TOML becomes them.

A config is a frozen dataclass derived from `Settings` whose fields are declared with the
helpers here (`integer`, `real`, `positive`, `flag`, `choice`, `sizes`, `link_setting`,
`nested`). Every config then validates itself the same way (`validate`: each field against its
`Rule`, then the config's own `check` of relations), is built from a TOML table (`from_data`:
unknown keys refused, link names built, nested tables become nested configs) and written back
(`to_data`). The rules also give the valid range of every field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

from zopg.errors import (
    INT32_MAX,
    bad_value,
    checked_bool,
    checked_choice,
    checked_float,
    checked_int,
    did_you_mean,
    integral,
)
from zopg.preferences import make_link

# Counts become JAX scalars, indices and shapes, and JAX's default integer is int32: a count
# beyond it overflows while the trainer is traced, whatever the field's declared bounds.


@dataclasses.dataclass(frozen=True)
class Rule:
    """What values one config field allows, and how a value read from TOML becomes one.

    kind: integer, real, bool, choice, sizes (tuple of ints >= 1), link (a Link or None; TOML
    gives its name or a table with `name` and the link's parameters) or config (nested
    Settings; TOML gives a table of its fields). schedule: a real field that may also be a
    callable of the iteration index (optax style).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    schedule: bool = False
    optional: bool = False  # None allowed

    def check(self, name: str, value, problem=None):
        if value is None and self.optional:
            return None
        if self.kind == "integer":
            value = checked_int(name, value, self.low, self.high)
            if abs(value) > INT32_MAX:
                low = -INT32_MAX if self.low is None else self.low
                raise bad_value(name, value, f"must be an integer in [{low}, {INT32_MAX}] (int32)")
            return value
        if self.kind == "real":
            if self.schedule and callable(value):
                return value
            return checked_float(
                name, value, self.low, self.high, low_open=self.low_open, high_open=self.high_open
            )
        if self.kind == "bool":
            return checked_bool(name, value)
        if self.kind == "choice":
            return checked_choice(name, value, self.choices)
        if self.kind == "sizes":
            if not isinstance(value, tuple) or not all(
                isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= INT32_MAX
                for h in value
            ):
                raise bad_value(name, value, f"must be a tuple of integers in [1, {INT32_MAX}]")
            return value
        if self.kind == "link":
            if not (callable(getattr(value, "prob", None)) and hasattr(value, "inverse")):
                raise bad_value(name, value, "must be a link (zopg.preferences.make_link)")
            return value
        if self.kind == "config":
            if not isinstance(value, Settings):
                raise bad_value(name, value, "must be a config dataclass")
            value.validate(problem, prefix=f"{name}.")
            return value
        raise AssertionError(f"unknown rule kind {self.kind}")

    def describe(self) -> str:
        """What the field allows, in words (for `zopg list` and the docs)."""
        none = " or none" if self.optional and self.kind != "link" else ""
        if self.kind in ("integer", "real"):
            word = "an integer" if self.kind == "integer" else "a number"
            low = "-inf" if self.low is None else f"{self.low:g}"
            high = "inf" if self.high is None else f"{self.high:g}"
            left = "(" if self.low_open or self.low is None else "["
            right = ")" if self.high_open or self.high is None else "]"
            if self.kind == "integer" and self.high is None:
                high, right = f"{INT32_MAX}", "]"  # the int32 bound every count meets
            bounds = "" if left + low + high == "(-infinf" else f" in {left}{low}, {high}{right}"
            schedule = ", or a schedule t -> value (Python only)" if self.schedule else ""
            return f"{word}{bounds}{none}{schedule}"
        return {
            "bool": "true or false",
            "choice": "one of " + ", ".join(map(str, self.choices)),
            "sizes": "a list of integers >= 1",
            "link": "a link name or a table {name = ..., parameters}; none: the teacher's",
            "config": "a table of the nested config's fields",
        }[self.kind] + none

    def from_data(self, name: str, value, field_type):
        """A TOML value for this field as the config expects it; for a nested config,
        field_type is the parent's default instance of it."""
        if value is None:
            return value
        if self.kind == "integer":
            return integral(value)  # TOML reads 1e6 as a float; it is the integer 1000000
        if self.kind == "real" and isinstance(value, int) and not isinstance(value, bool):
            # TOML writes 2 for 2.0. Kept an int, a value past int32 (sigma = 3e9 written out)
            # would overflow as a JAX scalar inside the trainer; checked_float also refuses an
            # int too large for a float.
            return checked_float(
                name, value, self.low, self.high, low_open=self.low_open, high_open=self.high_open
            )
        if self.kind == "sizes" and isinstance(value, list):
            return tuple(value)
        if self.kind == "link" and isinstance(value, str | dict):
            return link_from_data(name, value)
        if self.kind == "config" and isinstance(value, dict):
            # field_type is the parent's default for this nested config (an instance): the
            # table overrides only the fields it names, on top of that default.
            return field_type.from_data(value, prefix=f"{name}.", base=field_type)
        return value


def link_from_data(name: str, value):
    """A link from its name, or from a table {name = ..., parameters...}."""
    if isinstance(value, str):
        return make_link(value)
    params = dict(value)
    link_name = params.pop("name", None)
    if not isinstance(link_name, str):
        raise bad_value(f"{name}.name", link_name, "a link table needs its name")
    return make_link(link_name, **params)


def _setting(default, rule: Rule, doc: str, factory=None) -> Any:
    metadata = {"rule": rule, "doc": doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def integer(default, low: int | None = 1, high: int | None = None, doc: str = "") -> Any:
    """An int in [low, high]; a default of None also allows None."""
    return _setting(default, Rule("integer", low, high, optional=default is None), doc)


def real(
    default,
    low=None,
    high=None,
    *,
    low_open=False,
    high_open=False,
    schedule=False,
    doc: str = "",
) -> Any:
    rule = Rule("real", low, high, low_open, high_open, schedule=schedule)
    return _setting(default, rule, doc)


def positive(default, *, schedule=False, doc: str = "") -> Any:
    """A real in (0, inf)."""
    return real(default, 0.0, math.inf, low_open=True, high_open=True, schedule=schedule, doc=doc)


def flag(default: bool, doc: str = "") -> Any:
    return _setting(default, Rule("bool"), doc)


def choice(default: str, choices, doc: str = "") -> Any:
    return _setting(default, Rule("choice", choices=tuple(choices)), doc)


def sizes(default: tuple[int, ...], doc: str = "") -> Any:
    return _setting(default, Rule("sizes"), doc)


def link_setting(doc: str = "") -> Any:
    """A link the learner assumes; None means the oracle's own (a known link)."""
    return _setting(None, Rule("link", optional=True), doc)


def nested(factory: Callable, doc: str = "") -> Any:
    return _setting(None, Rule("config"), doc, factory=factory)


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One config field as `zopg list` and the experiment-file reference show it."""

    path: str
    default: Any
    allowed: str
    doc: str


class Settings:
    """Base of every config dataclass whose fields are declared settings (see `Rule`).

    check(problem, prefix): relations between fields and with the problem, run after every field
    passed its own rule; raise a ConfigError naming prefix + the field.
    """

    # field -> why: keys a config refuses with a reason instead of "unknown field" (e.g. a
    # sign method given a link to invert).
    refused: ClassVar[dict[str, str]] = {}

    def check(self, problem, prefix: str) -> None:
        del problem, prefix

    @classmethod
    def rules(cls) -> dict[str, Rule]:
        return {f.name: f.metadata["rule"] for f in dataclasses.fields(cls) if "rule" in f.metadata}

    def validate(self, problem=None, prefix: str = ""):
        """Every field against its declared rule, then `check`; returns self."""
        for name, rule in self.rules().items():
            rule.check(prefix + name, getattr(self, name), problem)
        self.check(problem, prefix)
        return self

    @classmethod
    def from_data(cls, data: dict, prefix: str = "", base: Settings | None = None):
        """The config from a table of field values (TOML): unknown keys are refused, nested
        tables become nested configs, link names become links, lists become tuples.

        Fields the table leaves out keep their value in `base` (default: the class's defaults).
        A nested table starts from the parent's default for that nested config, not from the
        nested class's own defaults: RMPPOConfig's ppo defaults to one PPO iteration per round,
        and `[ppo] num_trajectories = 16` must keep that one iteration."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, reason in cls.refused.items():
            if name in data:
                raise bad_value(prefix + name, data[name], reason)
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise bad_value(
                prefix + unknown[0],
                data[unknown[0]],
                f"unknown field of {cls.__name__}{did_you_mean(unknown[0], fields)}; "
                f"allowed: {', '.join(sorted(fields))}",
            )
        values = {}
        for name, value in data.items():
            rule = fields[name].metadata.get("rule")
            nested_default = None
            if rule is not None and rule.kind == "config":
                nested_default = (
                    getattr(base, name) if base is not None else fields[name].default_factory()
                )
            values[name] = (
                rule.from_data(prefix + name, value, nested_default) if rule is not None else value
            )
        return cls(**values) if base is None else dataclasses.replace(base, **values)

    @classmethod
    def field_docs(cls, prefix: str = "") -> list[FieldDoc]:
        """Every declared field, nested configs' fields as `parent.field` after their parent:
        the path `--set methods.LABEL.<path>` takes, the default, the rule and the doc."""
        rows = []
        for f in dataclasses.fields(cls):
            rule = f.metadata.get("rule")
            if rule is None:
                continue
            default = f.default_factory() if rule.kind == "config" else f.default
            shown = "" if rule.kind == "config" else _as_data(default)
            rows.append(FieldDoc(prefix + f.name, shown, rule.describe(), f.metadata["doc"]))
            if rule.kind == "config":
                rows += type(default).field_docs(f"{prefix}{f.name}.")
        return rows

    def to_data(self) -> dict:
        """The inverse of from_data: plain JSON/TOML data (links as tables with their name,
        schedules as their repr), for run records, hashes and config fragments."""
        return {f.name: _as_data(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _as_data(value):
    if isinstance(value, Settings):
        return value.to_data()
    if dataclasses.is_dataclass(value) and hasattr(value, "prob"):  # a link
        return {"name": value.name, **dataclasses.asdict(value)}
    if isinstance(value, tuple | list):
        return [_as_data(v) for v in value]
    if callable(value):
        return repr(value)
    return value
