"""Analysis of results: summary statistics over seeds with bootstrap confidence intervals."""

from zopg.analysis.overoptimisation import fit_overoptimisation, overoptimisation_curve
from zopg.analysis.stats import bootstrap_ci, first_crossing, iqm

__all__ = [
    "bootstrap_ci",
    "first_crossing",
    "fit_overoptimisation",
    "iqm",
    "overoptimisation_curve",
]
