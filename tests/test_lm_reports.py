"""The token family's curve report (benchmarks/reports/lm_methods_report.py) on curves whose
peak, drop and crossing are known by construction."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed; it is read from the checkout
    sys.path.insert(0, str(ROOT))

report = pytest.importorskip("benchmarks.reports.lm_methods_report")


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
