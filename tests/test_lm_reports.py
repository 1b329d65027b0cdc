"""The token family's reports (benchmarks/reports/lm_methods_report.py, lm_dimension_report.py)
on curves whose peak, drop, crossings and slope are known by construction; and lm_dimension's
settings against the tuned fragment they are copied from."""

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed; it is read from the checkout
    sys.path.insert(0, str(ROOT))

report = pytest.importorskip("benchmarks.reports.lm_methods_report")
dimension = pytest.importorskip("benchmarks.reports.lm_dimension_report")


def test_the_peak_is_the_mean_curves_and_the_drop_is_paired_at_it():
    """Three seeds rise to +2 at the second logged point and fall back; one seed's own maximum
    lies elsewhere, which must not move the shared peak. Gains are over each seed's start."""
    start = np.array([[0.5], [-0.5], [0.0]])
    gain = np.array([[0.0, 1.0, 2.0, 0.5], [0.0, 1.0, 2.0, 1.0], [0.0, 2.5, 2.0, 0.0]])
    curves = {
        "queries": np.tile([0.0, 10.0, 20.0, 30.0], (3, 1)),
        "value": start + gain,
        "kl_to_reference": np.tile([0.0, 1.0, 4.0, 9.0], (3, 1)),
    }
    a = report.arm(curves)
    # Mean gains 0, 1.5, 2, 0.5: the peak is the third point, not seed 2's own maximum.
    assert a["peak_point"] == 2 and a["queries_at_peak"] == 20.0
    assert a["gain_at_peak"]["mean"] == pytest.approx(2.0)
    assert a["drop"]["mean"] == pytest.approx(np.mean([1.5, 1.0, 2.0]))
    assert a["sqrt_kl_at_peak"]["mean"] == pytest.approx(2.0)
    assert a["sqrt_kl_final"]["mean"] == pytest.approx(3.0)
    assert a["seeds_ending_below_start"] == 0
    assert a["initial_gold"]["mean"] == pytest.approx(0.0)
    low, high = a["drop"]["ci95"]
    assert low < 1.5 < high


def test_queries_to_a_target_are_the_first_logged_crossing():
    queries = np.array([0.0, 10.0, 20.0, 30.0])
    mean = np.array([0.0, 0.4, 0.9, 0.6])
    assert report.first_reach(queries, mean, 0.4) == 10.0
    assert report.first_reach(queries, mean, 0.5) == 20.0
    assert report.first_reach(queries, mean, 1.0) is None


def test_crossings_and_the_slope_against_d():
    """Seeds cross at queries proportional to d (slope 1 on log-log); a seed that never
    crosses is inf, and a median over mostly-inf seeds is not reached."""
    queries = np.tile(np.arange(0.0, 1100.0, 100.0), (3, 1))
    ds, per_seed = [10, 100, 1000], []
    for d in ds:
        gain = (queries >= d).astype(float)
        gain[2] = 0.0  # the third seed never crosses
        cross = dimension.crossings(queries, gain, 0.5)
        per_seed.append(cross)
        np.testing.assert_array_equal(cross, [max(d, 100), max(d, 100), np.inf])
    # Logged every 100 queries: d = 10 crosses at the first point past it, 100.
    medians = [np.median(c) for c in per_seed]
    assert medians == [100.0, 100.0, 1000.0]
    assert dimension.slope([10, 100, 1000, 10000], [10.0, 100.0, 1000.0, 10000.0]) == (
        pytest.approx(1.0)
    )
    assert dimension.slope([10, 100, 1000], [10.0, np.inf, 1000.0]) is None  # two points
    assert dimension.median_or_none(np.array([1.0, np.inf, np.inf])) is None
    assert dimension.median_or_none(np.array([1.0, 3.0, np.inf])) == 3.0


def test_lm_dimension_runs_the_settings_lm_methods_tuned():
    """lm_dimension copies ZPG's and ZSPO's tuned settings (an experiment may include only a
    fragment whose every method it has); a retune that moves them fails here."""
    tuned = tomllib.loads((ROOT / "benchmarks" / "tuned" / "lm_methods.toml").read_text())
    used = tomllib.loads((ROOT / "benchmarks" / "lm_dimension.toml").read_text())
    methods = tomllib.loads((ROOT / "benchmarks" / "lm_methods.toml").read_text())["methods"]
    for method in ("zpg", "zspo"):
        expected = {**methods[method], **tuned["methods"][method]}
        assert used["methods"][method] == expected, method
