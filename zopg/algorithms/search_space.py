"""Search spaces: which config fields a tuner may set, over which ranges, and a seeded sampler.

Each algorithm declares its space next to its config (`Algorithm.search_space`), so the spaces
are reviewed like code and printed by `zopg list`. A dimension is continuous (a range on a log
or linear scale) or a list of choices. Continuous dimensions of fields the trainer uses only in
arithmetic are `traced`: a batch of trials differing in them runs as one vmapped call; the
others (sizes, optimizers) are structural and each combination compiles once.

How the built-in spaces are chosen: continuous ranges cover the defaults and the settings in
benchmarks/ with a decade or more to spare. Sizes that, at a fixed query budget, trade against
the number of iterations are searched, so that this trade-off is not chosen by hand for one
method only: ZPG's and ZBCPG's pairs N and votes per pair M, RM+PPO's pairs per round, online
DPO's pairs per iteration (the votes per pair of DPO and RM+PPO and ZSPO's votes per sign are
not searched yet). Such sizes cannot be traced: they shape the vote and rollout arrays, and
through the budget they set the scan length. So each structural combination compiles once per
tuning env (the continuous values of its trials are vmapped). Most methods have at most four
combinations; ZPG and ZBCPG have twelve (N 2 × M 3 × optimizer 2), RM+PPO eight (K 2 × pairs
per round 4). No earlier dimension was dropped to make room for M: in the first tuning of
paper_gridworld both of ZPG's mattered (best trial 0.81 with Adam against 0.69 with SGD, 0.81
with N 5 against 0.69 with N 50). Measured on the 2-core CPU at 1M queries, 3 seeds per tuning
layout: a ZPG group compiles in 2-4 s and one trial runs 1.4 s at M 10 to 9 s at M 1 (200,000
iterations); 16 ZPG trials fall into 9 groups and took 98 s on paper_gridworld's two layouts
(79 s with the 4 groups before M). An RM+PPO group compiles in about 12 s and one trial runs
4 s (1000 pairs a round) to 32 s (100 pairs, 1000 rounds); its 16 trials, 8 groups, took
368 s. With 16 trials most ZPG groups hold one or two, so vmapping saves little there and each
structure meets few step sizes and radii: more trials per method would help every method alike.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from zopg.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Dimension:
    """field: a config field, dotted for nested configs (`ppo.learning_rate`)."""

    field: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    traced: bool = False

    @property
    def continuous(self) -> bool:
        return not self.choices

    def describe(self) -> str:
        if self.choices:
            return f"{self.field} in {{{', '.join(map(str, self.choices))}}}"
        scale = "log" if self.log else "linear"
        how = "traced" if self.traced else "compiled"
        return f"{self.field} {scale} [{self.low:g}, {self.high:g}] ({how})"

    def from_unit(self, u: float) -> Any:
        """The value at quantile u in [0, 1)."""
        if self.choices:
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        if self.log:
            return float(
                math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
            )
        return float(self.low + u * (self.high - self.low))


def log_range(field: str, low: float, high: float, traced: bool = True) -> Dimension:
    return Dimension(field, low, high, log=True, traced=traced)


def linear_range(field: str, low: float, high: float, traced: bool = True) -> Dimension:
    return Dimension(field, low, high, log=False, traced=traced)


def one_of(field: str, *choices) -> Dimension:
    return Dimension(field, choices=tuple(choices))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]

    def __init__(self, *dimensions: Dimension):
        object.__setattr__(self, "dimensions", tuple(dimensions))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(d.field for d in self.dimensions)

    @property
    def traced_fields(self) -> tuple[str, ...]:
        return tuple(d.field for d in self.dimensions if d.traced)

    def describe(self) -> str:
        return "; ".join(d.describe() for d in self.dimensions)

    def sample(self, trials: int, seed: int) -> list[dict]:
        """`trials` points, reproducible from `seed`: a Latin hypercube (each dimension's range
        cut into `trials` equal strata, one point in each, strata shuffled per dimension), so
        even 8 trials cover every range evenly; choices take equal shares of the strata."""
        if trials < 1:
            raise ConfigError(f"trials = {trials}: must be an integer >= 1")
        rng = np.random.default_rng(seed)
        points = [{} for _ in range(trials)]
        for dim in self.dimensions:
            strata = rng.permutation(trials)
            jitter = rng.uniform(size=trials)
            for i in range(trials):
                points[i][dim.field] = dim.from_unit((strata[i] + jitter[i]) / trials)
        return points

    def check(self, config_type, where: str) -> None:
        """Every dimension names a field of the config and stays inside its declared range."""
        for dim in self.dimensions:
            rule = field_rule(config_type, dim.field, where)
            values = dim.choices or (dim.low, dim.high)
            if dim.continuous and not (dim.low < dim.high):
                raise ConfigError(f"{where}.{dim.field}: range [{dim.low}, {dim.high}] is empty")
            if dim.continuous and dim.log and dim.low <= 0:
                raise ConfigError(f"{where}.{dim.field}: a log range needs low > 0, got {dim.low}")
            for value in values:
                try:
                    rule.check(f"{where}.{dim.field}", value)
                except ConfigError as err:
                    raise ConfigError(f"search space: {err}") from None


def field_rule(config_type, dotted: str, where: str):
    """The settings Rule of a (nested) config field; a clear error for an unknown field."""
    owner, parts = config_type, dotted.split(".")
    for depth, part in enumerate(parts):
        rules = owner.rules()
        if part not in rules:
            known = ", ".join(sorted(rules))
            raise ConfigError(f"{where}: unknown field {dotted!r}; fields: {known}")
        rule = rules[part]
        if depth < len(parts) - 1:
            if rule.kind != "config":
                raise ConfigError(f"{where}: {'.'.join(parts[: depth + 1])} is not a nested config")
            owner = nested_type(owner, part)
    return rule


def nested_type(config_type, name: str):
    default = next(f for f in dataclasses.fields(config_type) if f.name == name)
    factory = default.default_factory
    return type(factory()) if factory is not dataclasses.MISSING else type(default.default)


def with_values(config, values: dict):
    """A copy of config with (possibly dotted, possibly traced) field values set."""
    nested: dict[str, dict] = {}
    flat = {}
    for name, value in values.items():
        head, _, rest = name.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[name] = value
    for head, inner in nested.items():
        flat[head] = with_values(getattr(config, head), inner)
    return dataclasses.replace(config, **flat)
