"""Fits of rate sweeps (science.md §8): one JSON-ready record per sweep and per family of
floors, from per-seed values [seeds, grid]; CIs resample whole seeds (zopg.rates.fits).

A sweep spec and its measurement come from zopg.rates.sweeps; this module only reads
their fields (name, grid, window, prediction, ...; values, theory, labels, reduce).
"""

from __future__ import annotations

import numpy as np

from zopg.rates.fits import curve_band, family_slope, fit_floor, fit_slope, loglog_slopes


def analyse(spec, measurement) -> dict:
    """Slope fit with CI, curve with bands, optional floor fit: one JSON-ready record."""
    values, reduce = measurement.values, measurement.reduce
    curve, low, high, rel_se = curve_band(values, reduce)
    record = {
        "name": spec.name,
        "quantity": spec.quantity,
        "x": measurement.x_label,
        "y": measurement.y_label,
        "reduce": reduce,
        "config_hash": spec.config_hash(),
        **{k: v for k, v in spec.to_dict().items() if k not in ("name", "quantity", "floor")},
        "slope": None,
        "curve": curve.tolist(),
        "curve_ci": [low.tolist(), high.tolist()],
        "curve_rel_se": rel_se.tolist(),
        "theory": measurement.theory,
    }
    if spec.window is not None:
        fit = fit_slope(spec.grid, values, spec.window, reduce)
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
        floor = fit_floor(spec.grid, values, spec.floor_window, reduce)
        record["floor_fit"] = {
            "scale": floor.scale,
            "exponent": floor.exponent,
            "exponent_ci": list(floor.exponent_ci),
            "floor": floor.floor,
            "floor_ci": list(floor.floor_ci),
        }
    record["per_seed"] = values.tolist()
    return record


def analyse_family(family, specs: dict, records: dict) -> dict:
    """Floors of a family against its setting: log-log slope with a joint seed-bootstrap CI."""
    fits, xs = [], []
    for name in family.members:
        spec = specs[name]
        per_seed = np.asarray(records[name]["per_seed"])
        fits.append(fit_floor(spec.grid, per_seed, spec.floor_window, records[name]["reduce"]))
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
