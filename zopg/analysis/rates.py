"""Convergence-rate sweeps (algorithms.md §8): the quantity registry, sweep files, and fits.

A sweep measures one quantity at every x of a grid (M, mu, N, d, T or block size K) for several
seeds, giving per-seed values [seeds, grid] (zopg.analysis.rate_sweeps). Fits reduce over seeds
and get their 95% CIs by resampling whole seeds, never grid points (zopg.analysis.fits). Sweeps
are declared in TOML (benchmarks/rates_*.toml) and run by benchmarks/rates.py.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from zopg.analysis.fits import (
    curve_band,
    family_slope,
    fit_floor,
    fit_slope,
    loglog_slopes,
    window_mask,
)
from zopg.analysis.rate_sweeps import (
    Measurement,
    bias_vs_mu,
    blocks_vs_k,
    check_grid,
    delta_mse_vs_m,
    error_vs_d,
    error_vs_n,
    grad_norm_vs_t,
    gridworld_delta_mse_vs_m,
)
from zopg.errors import ConfigError, bad_value, unknown_name


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
    "blocks_vs_k": Quantity(blocks_vs_k, "K (block size)", "(1/T) Σ_t ‖∇V(θ_t)‖²"),
    "final_value_vs_k": Quantity(
        functools.partial(blocks_vs_k, metric="final_value"), "K (block size)", "V(θ_T)"
    ),
}
# Keywords that cannot come from a file: test hooks (a broken estimator or difference source)
# and the metric, which each quantity fixes with its axis label.
_CODE_ONLY = ("estimator", "make_difference", "metric")


def setting_names(quantity: str) -> tuple[str, ...]:
    """The settings a quantity accepts from a sweep file."""
    params = inspect.signature(QUANTITIES[quantity].measure).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _CODE_ONLY)


# -- sweep specs ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RateSpec:
    """One declared sweep: what to measure, where, how to fit and what theory predicts.

    prediction is the slope algorithms.md §8 states; expected, when given, is the slope our own
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


def _fail(source: str, where: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {message}")


def _check_keys(source: str, where: str, table, allowed) -> None:
    if not isinstance(table, dict):
        raise _fail(source, where, f"must be a table, got {table!r}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        allowed_text = ", ".join(sorted(allowed))
        raise _fail(source, f"{where}.{unknown[0]}", f"unknown key; allowed: {allowed_text}")


def parse_spec(raw: dict, source: str = "<sweep>", quick: bool = False) -> RateSpec:
    """Validate one [[sweep]] table (with its [sweep.quick] overrides applied when quick)."""
    where = f"sweep {raw.get('name', '?')!r}" if isinstance(raw, dict) else "sweep"
    _check_keys(source, where, raw, SPEC_KEYS)
    raw = dict(raw)
    overrides = dict(raw.pop("quick", {}))
    _check_keys(source, f"{where}.quick", overrides, SPEC_KEYS - {"quick", "name"})
    if quick:
        settings = {**raw.get("settings", {}), **overrides.pop("settings", {})}
        raw = {**raw, **overrides, "settings": settings}
    for required in ("name", "quantity", "grid", "seeds"):
        if required not in raw:
            raise _fail(source, f"{where}.{required}", "is required")
    if raw["quantity"] not in QUANTITIES:
        error = unknown_name("quantity", raw["quantity"], QUANTITIES)
        raise _fail(source, f"{where}.quantity", str(error))
    _check_keys(
        source, f"{where}.settings", raw.get("settings", {}), setting_names(raw["quantity"])
    )
    seeds = raw["seeds"]
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        message = f"= {seeds!r}: must be an integer >= 2 (CIs resample seeds)"
        raise _fail(source, f"{where}.seeds", message)
    window, floor_window = raw.get("window"), raw.get("floor_window")
    try:
        grid = check_grid(raw["grid"], integer=raw["quantity"] != "bias_vs_mu")
        for name, value in (("window", window), ("floor_window", floor_window)):
            if value is None:
                continue
            if not (isinstance(value, list) and len(value) == 2 and value[0] < value[1]):
                raise bad_value(name, value, "must be [low, high] with low < high")
            window_mask(grid, value)
    except ConfigError as err:
        raise _fail(source, where, str(err)) from None
    if floor_window is not None and not raw.get("floor", False):
        raise _fail(source, f"{where}.floor_window", "needs floor = true")
    if window is None and (raw.get("prediction") is not None or raw.get("expected") is not None):
        raise _fail(source, f"{where}.window", "is required to test a predicted slope")
    reference = raw.get("reference")
    if reference is not None and reference not in grid:
        raise _fail(source, f"{where}.reference", f"= {reference!r}: must be a grid point")
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
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from None
    _check_keys(source, "file", raw, ("sweep", "family"))
    sweeps = raw.get("sweep")
    if not isinstance(sweeps, list) or not sweeps:
        raise _fail(source, "sweep", "must be a non-empty array of tables ([[sweep]])")
    specs = [parse_spec(s, source, quick) for s in sweeps]
    by_name = {s.name: s for s in specs}
    if len(by_name) != len(specs):
        raise _fail(source, "sweep", "names must be unique")
    families = []
    for item in raw.get("family", []):
        where = f"family {item.get('name', '?')!r}" if isinstance(item, dict) else "family"
        _check_keys(source, where, item, FAMILY_KEYS)
        family = FloorFamily(**{**item, "members": tuple(item.get("members", ()))})
        for member in family.members:
            spec = by_name.get(member)
            if spec is None or not spec.floor or family.setting not in spec.settings:
                raise _fail(
                    source,
                    f"{where}.members",
                    f"{member!r} must be a sweep of this file with floor = true and "
                    f"settings.{family.setting}",
                )
        members = [by_name[m] for m in family.members]
        if len({(m.seeds, m.base_seed) for m in members}) != 1:
            # The family's CI resamples the same seeds in every member.
            raise _fail(source, f"{where}.members", "must share seeds and base_seed")
        if len(family.members) < 3:
            raise _fail(source, f"{where}.members", "needs at least 3 sweeps to fit a slope")
        families.append(family)
    return specs, families


# -- running a sweep ------------------------------------------------------------------------------


def measure(spec: RateSpec, **code_only) -> Measurement:
    """Run the sweep's measurement; code_only may swap in a (broken) estimator for tests."""
    quantity = QUANTITIES[spec.quantity]
    key = jax.random.key(spec.base_seed)
    return quantity.measure(spec.grid, spec.seeds, key, **spec.settings, **code_only)


def analyse(spec: RateSpec, measurement: Measurement) -> dict:
    """Slope fit with CI, curve with bands, optional floor fit: one JSON-ready record."""
    quantity = QUANTITIES[spec.quantity]
    values = measurement.values
    curve, low, high, rel_se = curve_band(values, quantity.reduce)
    record = {
        "name": spec.name,
        "quantity": spec.quantity,
        "x": quantity.x_label,
        "y": quantity.y_label,
        "config_hash": spec.config_hash(),
        **{k: v for k, v in spec.to_dict().items() if k not in ("name", "quantity", "floor")},
        "slope": None,
        "curve": curve.tolist(),
        "curve_ci": [low.tolist(), high.tolist()],
        "curve_rel_se": rel_se.tolist(),
        "theory": measurement.theory,
    }
    if spec.window is not None:
        fit = fit_slope(spec.grid, values, spec.window, quantity.reduce)
        record.update(
            slope=fit.slope,
            slope_ci=list(fit.ci),
            intercept=fit.intercept,
            prediction_in_ci=None if spec.prediction is None else fit.covers(spec.prediction),
            expected_in_ci=None if spec.expected is None else fit.covers(spec.expected),
        )
    if spec.reference is not None:
        i = list(spec.grid).index(spec.reference)
        record["reference"] = {
            "x": spec.reference,
            "value": float(curve[i]),
            "rel_se": float(rel_se[i]),
        }
    if spec.floor:
        floor = fit_floor(spec.grid, values, spec.floor_window, quantity.reduce)
        record["floor_fit"] = {
            "scale": floor.scale,
            "exponent": floor.exponent,
            "exponent_ci": list(floor.exponent_ci),
            "floor": floor.floor,
            "floor_ci": list(floor.floor_ci),
        }
    record["per_seed"] = values.tolist()
    return record


def run_spec(spec: RateSpec, **code_only) -> dict:
    start = time.perf_counter()
    record = analyse(spec, measure(spec, **code_only))
    record["runtime_s"] = time.perf_counter() - start
    return record


def analyse_family(family: FloorFamily, specs: dict, records: dict) -> dict:
    """Floors of a family against its setting: log-log slope with a joint seed-bootstrap CI."""
    fits, xs = [], []
    for name in family.members:
        spec = specs[name]
        per_seed = np.asarray(records[name]["per_seed"])
        reduce = QUANTITIES[spec.quantity].reduce
        fits.append(fit_floor(spec.grid, per_seed, spec.floor_window, reduce))
        xs.append(spec.settings[family.setting])
    fit = family_slope(np.asarray(xs, float), fits)
    theory = None
    if family.theory is not None:
        exact = [records[name]["theory"][family.theory] for name in family.members]
        slope, _ = loglog_slopes(np.asarray(xs, float), np.asarray(exact))
        ratios = [f.floor / e for f, e in zip(fits, exact, strict=True)]
        theory = {"key": family.theory, "floors": exact, "slope": float(slope), "ratios": ratios}
    return {
        "name": family.name,
        "setting": family.setting,
        "members": list(family.members),
        "values": xs,
        "floors": [f.floor for f in fits],
        "floor_cis": [list(f.floor_ci) for f in fits],
        "prediction": family.prediction,
        "note": family.note,
        "slope": fit.slope,
        "slope_ci": list(fit.ci),
        "prediction_in_ci": None if family.prediction is None else fit.covers(family.prediction),
        "theory": theory,
    }
