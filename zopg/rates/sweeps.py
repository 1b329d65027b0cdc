"""Convergence-rate sweeps (science.md §8): the quantity registry, sweep files and measuring.

A sweep measures one quantity at every x of a grid (M, mu, N, d, T or block size K) for several
seeds, giving per-seed values [seeds, grid] (zopg.rates.measurements; the quantities
that train run through the runner). zopg.rates.analysis fits them. Sweeps are declared in TOML
(benchmarks/rates/*.toml) and run by `python -m zopg.rates` (`make rates`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path

import jax

from zopg.errors import ConfigError, bad_value, unknown_name
from zopg.experiments.tomlfile import check_keys, fail, read_toml
from zopg.rates.measurements import (
    Measurement,
    Point,
    bias_vs_mu,
    blocks_vs_k,
    check_grid,
    delta_mse_vs_m,
    error_vs_d,
    error_vs_n,
    grad_norm_vs_t,
    gridworld_delta_mse_vs_m,
    second_order_noise_vs_n,
    sign_agreement_vs_d,
    sign_agreement_vs_n,
    sign_grad_norm_vs_t,
)


@dataclasses.dataclass(frozen=True)
class Quantity:
    """A measurable rate: the sweep function, axis labels and how seeds are reduced."""

    measure: Callable
    x_label: str
    y_label: str
    reduce: str = "mean"


QUANTITIES: dict[str, Quantity] = {
    "delta_mse_vs_m": Quantity(delta_mse_vs_m, "M (votes per pair)", "E(Δ̂ − Δ)²"),
    "gridworld_delta_mse_vs_m": Quantity(
        gridworld_delta_mse_vs_m, "M (votes per pair)", "E(Δ̂ − ΔV)²"
    ),
    "bias_vs_mu": Quantity(bias_vs_mu, "μ", "‖E ĝ − ∇V‖", reduce="sqrt-mean"),
    "error_vs_n": Quantity(error_vs_n, "N (pairs per estimate)", "E‖ĝ − ∇V_μ‖²"),
    "error_vs_d": Quantity(error_vs_d, "d (parameters)", "E‖ĝ − ∇V_μ‖²"),
    "grad_norm_vs_t": Quantity(grad_norm_vs_t, "T (iterations)", "(1/T) Σ_t ‖∇V(θ_t)‖²"),
    "second_order_noise_vs_n": Quantity(
        second_order_noise_vs_n, "N (pairs per estimate)", "Q_T − Q_T(exact differences)"
    ),
    "blocks_vs_k": Quantity(blocks_vs_k, "K (block size)", "(1/T) Σ_t ‖∇V(θ_t)‖²"),
    "sign_agreement_vs_d": Quantity(
        sign_agreement_vs_d, "D (trajectories per side)", "P(ŝ = sign ΔV)"
    ),
    "sign_agreement_vs_n": Quantity(sign_agreement_vs_n, "N (queries per sign)", "P(ŝ = sign ΔV)"),
    "sign_grad_norm_vs_t": Quantity(
        sign_grad_norm_vs_t, "T (iterations)", "(1/T) Σ_t ‖∇V(θ_t)‖², ZSPO"
    ),
    "final_value_vs_k": Quantity(
        functools.partial(blocks_vs_k, metric="final_value"), "K (block size)", "V(θ_T)"
    ),
}
# Keywords that cannot come from a file: test hooks (a broken estimator or difference source)
# and the metric, which each quantity fixes with its axis label.
_CODE_ONLY = ("estimator", "make_difference", "metric")


POINT_FIELDS = tuple(f.name for f in dataclasses.fields(Point))


def setting_names(quantity: str) -> tuple[str, ...]:
    """The settings a quantity accepts from a sweep file: its keyword arguments, with a
    `point` argument standing for the Point's fields (env, link, logit_scale, policy_seed)."""
    params = inspect.signature(QUANTITIES[quantity].measure).parameters.values()
    names = []
    for p in params:
        if p.kind is p.KEYWORD_ONLY and p.name not in _CODE_ONLY:
            names.extend(POINT_FIELDS if p.name == "point" else (p.name,))
    return tuple(names)


def _arguments(quantity: str, settings: dict) -> dict:
    """A sweep's flat settings as the measurement's keyword arguments (a Point gathered)."""
    if "point" not in inspect.signature(QUANTITIES[quantity].measure).parameters:
        return dict(settings)
    rest = {k: v for k, v in settings.items() if k not in POINT_FIELDS}
    return {"point": Point(**{k: v for k, v in settings.items() if k in POINT_FIELDS}), **rest}


# -- sweep specs ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RateSpec:
    """One declared sweep: what to measure, where, how to fit and what theory predicts.

    prediction is the slope science.md §8 states; expected, when given, is the slope our own
    analysis predicts for this exact setting (note says why), and CI regression checks that one.
    window may be omitted for sweeps that only fit a floor; reference is the x whose magnitude CI
    regression compares with the committed value. floor = true also fits c·x^b + floor, on
    floor_window (default: the whole grid; leave out the pre-asymptotic end, e.g. M where
    trimming dominates, which the three-parameter model cannot describe).
    """

    name: str
    quantity: str
    grid: tuple
    seeds: int
    window: tuple[float, float] | None = None
    prediction: float | None = None
    expected: float | None = None
    note: str = ""
    reference: float | None = None
    floor: bool = False
    floor_window: tuple[float, float] | None = None
    base_seed: int = 0
    group: str | None = None  # sweeps drawn on one figure (default: one per quantity)
    settings: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["grid"] = list(self.grid)
        for field in ("window", "floor_window"):
            data[field] = None if data[field] is None else list(data[field])
        return data

    def config_hash(self) -> str:
        """Hash of everything that determines the numbers (not name, note or figure group)."""
        fields = {k: v for k, v in self.to_dict().items() if k not in ("note", "name", "group")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def slope_target(self) -> float | None:
        return self.expected if self.expected is not None else self.prediction


@dataclasses.dataclass(frozen=True)
class FloorFamily:
    """Sweeps that differ in one setting (e.g. M); their fitted floors should follow a power."""

    name: str
    setting: str
    members: tuple[str, ...]
    prediction: float | None = None
    theory: str | None = None  # a key of each member's theory dict: the exact floor to compare
    note: str = ""


SPEC_KEYS = {f.name for f in dataclasses.fields(RateSpec)} | {"quick"}
FAMILY_KEYS = {f.name for f in dataclasses.fields(FloorFamily)}


def parse_spec(raw: dict, source: str = "<sweep>", quick: bool = False) -> RateSpec:
    """Validate one [[sweep]] table (with its [sweep.quick] overrides applied when quick)."""
    where = f"sweep {raw.get('name', '?')!r}" if isinstance(raw, dict) else "sweep"
    check_keys(source, where, raw, SPEC_KEYS)
    raw = dict(raw)
    overrides = dict(raw.pop("quick", {}))
    check_keys(source, f"{where}.quick", overrides, SPEC_KEYS - {"quick", "name"})
    if quick:
        settings = {**raw.get("settings", {}), **overrides.pop("settings", {})}
        raw = {**raw, **overrides, "settings": settings}
    for required in ("name", "quantity", "grid", "seeds"):
        if required not in raw:
            raise fail(source, f"{where}.{required}", "is required")
    if raw["quantity"] not in QUANTITIES:
        error = unknown_name("quantity", raw["quantity"], QUANTITIES)
        raise fail(source, f"{where}.quantity", str(error))
    check_keys(source, f"{where}.settings", raw.get("settings", {}), setting_names(raw["quantity"]))
    seeds = raw["seeds"]
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        message = f"= {seeds!r}: must be an integer >= 2 (CIs resample seeds)"
        raise fail(source, f"{where}.seeds", message)
    window, floor_window = raw.get("window"), raw.get("floor_window")
    try:
        grid = check_grid(raw["grid"], integer=raw["quantity"] != "bias_vs_mu")
        for name, value in (("window", window), ("floor_window", floor_window)):
            if value is None:
                continue
            if not (isinstance(value, list) and len(value) == 2 and value[0] < value[1]):
                raise bad_value(name, value, "must be [low, high] with low < high")
            inside = [x for x in grid if value[0] <= x <= value[1]]
            if len(inside) < 3:  # a slope or floor fit needs three points
                raise bad_value(name, value, f"must contain at least 3 grid points of {grid}")
    except ConfigError as err:
        raise fail(source, where, str(err)) from None
    if floor_window is not None and not raw.get("floor", False):
        raise fail(source, f"{where}.floor_window", "needs floor = true")
    if window is None and (raw.get("prediction") is not None or raw.get("expected") is not None):
        raise fail(source, f"{where}.window", "is required to test a predicted slope")
    reference = raw.get("reference")
    if reference is not None and reference not in grid:
        raise fail(source, f"{where}.reference", f"= {reference!r}: must be a grid point")
    fields = {k: v for k, v in raw.items() if k in SPEC_KEYS - {"quick"}}
    fields.update(
        grid=tuple(grid),
        window=None if window is None else tuple(window),
        floor_window=None if floor_window is None else tuple(floor_window),
        settings=dict(raw.get("settings", {})),
    )
    return RateSpec(**fields)


def load_specs(path, quick: bool = False) -> tuple[list[RateSpec], list[FloorFamily]]:
    """The [[sweep]] and [[family]] tables of a rates TOML file, validated."""
    path = Path(path)
    source = str(path)
    raw = read_toml(path)
    check_keys(source, "file", raw, ("sweep", "family"))
    sweeps = raw.get("sweep")
    if not isinstance(sweeps, list) or not sweeps:
        raise fail(source, "sweep", "must be a non-empty array of tables ([[sweep]])")
    specs = [parse_spec(s, source, quick) for s in sweeps]
    by_name = {s.name: s for s in specs}
    if len(by_name) != len(specs):
        raise fail(source, "sweep", "names must be unique")
    families = []
    for item in raw.get("family", []):
        where = f"family {item.get('name', '?')!r}" if isinstance(item, dict) else "family"
        check_keys(source, where, item, FAMILY_KEYS)
        family = FloorFamily(**{**item, "members": tuple(item.get("members", ()))})
        for member in family.members:
            spec = by_name.get(member)
            if spec is None or not spec.floor or family.setting not in spec.settings:
                raise fail(
                    source,
                    f"{where}.members",
                    f"{member!r} must be a sweep of this file with floor = true and "
                    f"settings.{family.setting}",
                )
        members = [by_name[m] for m in family.members]
        if len({(m.seeds, m.base_seed) for m in members}) != 1:
            # The family's CI resamples the same seeds in every member.
            raise fail(source, f"{where}.members", "must share seeds and base_seed")
        if len(family.members) < 3:
            raise fail(source, f"{where}.members", "needs at least 3 sweeps to fit a slope")
        families.append(family)
    return specs, families


# -- measuring a sweep ----------------------------------------------------------------------------


def measure(spec: RateSpec, **code_only) -> Measurement:
    """Run the sweep's measurement; code_only may swap in a (broken) estimator for tests."""
    quantity = QUANTITIES[spec.quantity]
    key = jax.random.key(spec.base_seed)
    arguments = _arguments(spec.quantity, spec.settings)
    found = quantity.measure(spec.grid, spec.seeds, key, **arguments, **code_only)
    return dataclasses.replace(
        found, x_label=quantity.x_label, y_label=quantity.y_label, reduce=quantity.reduce
    )
