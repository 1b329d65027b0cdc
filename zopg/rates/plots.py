"""Log-log figures of rate sweeps: seed-bootstrap bands, fitted slopes and predicted-slope lines."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI or servers
import matplotlib.pyplot as plt
import numpy as np

from zopg.store import save_figure


def _fmt(value) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _reference_line(ax, record: dict, slope: float, style: str, label: str) -> None:
    """A line of the given slope through the fitted curve at the window's geometric centre, so
    the eye compares slopes, not offsets."""
    low, high = record["window"]
    centre = math.sqrt(low * high)
    y_centre = math.exp(record["intercept"]) * centre ** record["slope"]
    xs = np.geomspace(low, high, 20)
    ax.plot(xs, y_centre * (xs / centre) ** slope, style, color="0.35", lw=1.2, label=label)


def draw_sweep(ax, record: dict, color="C0", label: str | None = None) -> None:
    """Points with 95% seed-bootstrap bars, the fitted line on its window, prediction lines and
    the floor fit (when there is one)."""
    x = np.asarray(record["grid"], dtype=float)
    y = np.asarray(record["curve"], dtype=float)
    low, high = (np.asarray(v, dtype=float) for v in record["curve_ci"])
    errors = np.clip(np.stack([y - low, high - y]), 0.0, None)
    ax.errorbar(x, y, yerr=errors, fmt="o", ms=4, color=color, capsize=2, label=label)
    if record.get("slope") is not None:
        lo, hi = record["window"]
        xs = np.geomspace(lo, hi, 20)
        fit_label = f"fit {_fmt(record['slope'])} [{record['slope_ci'][0]:+.2f}, "
        fit_label += f"{record['slope_ci'][1]:+.2f}]"
        ax.plot(
            xs,
            math.exp(record["intercept"]) * xs ** record["slope"],
            "-",
            color=color,
            lw=1.5,
            label=fit_label,
        )
        ax.axvspan(lo, hi, color=color, alpha=0.06)
        if record.get("prediction") is not None:
            _reference_line(
                ax,
                record,
                record["prediction"],
                "--",
                f"§8 prediction {_fmt(record['prediction'])}",
            )
        if record.get("expected") is not None and record["expected"] != record.get("prediction"):
            _reference_line(
                ax, record, record["expected"], ":", f"expected here {_fmt(record['expected'])}"
            )
    closed = (record.get("theory") or {}).get("closed_form")
    if closed is not None:
        # Sign sweeps: the exact agreement of science.md §5 beside the measured one.
        ax.plot(x, closed, "--", color="k", lw=1.0, label="closed form (§5)")
    theory = record.get("theory") or {}
    if record.get("quantity") == "grad_norm_vs_t":
        # The telescoped parts of the average: the first-order part (V_T − V_0)/(α_T·T) alone sets
        # the T-slope of a converged run (−½ or −1, by the schedule), whatever the estimator.
        parts = (("first_order_part", "--", "F_T, first order"), ("second_order_part", ":", "Q_T"))
        for key, style, label in parts:
            if key in theory:
                ax.plot(x, theory[key], style, color=color, alpha=0.6, lw=1.0, label=label)
    if record.get("quantity") == "second_order_noise_vs_n":
        # What the plotted difference is made of: Q_T with noisy differences and with exact ones.
        ax.plot(x, theory["second_order_part"], "s", mfc="none", color="0.45", ms=4, label="Q_T")
        ax.axhline(
            theory["exact_difference_part"], color="0.45", ls=":", lw=1.0, label="Q_T, exact Δ"
        )
    zpg = theory.get("zpg_same_queries")
    if zpg is not None:
        # Block sweeps: ZPG (all d coordinates) at the same queries, for comparison.
        ax.axhline(zpg, color=color, ls=":", lw=1.0, alpha=0.8, label="ZPG, same queries")
    floor = record.get("floor_fit")
    if floor is not None:
        low, high = record.get("floor_window") or (x.min(), x.max())
        xs = np.geomspace(low, high, 100)
        curve = floor["scale"] * xs ** floor["exponent"] + floor["floor"]
        ax.plot(xs, curve, "-", color=color, lw=1.0, alpha=0.8)
        ax.axhline(floor["floor"], color=color, ls="-.", lw=0.8, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")


def _finish(fig, path: Path) -> Path:
    fig.tight_layout()
    path = save_figure(fig, path)
    plt.close(fig)
    return path


def plot_sweep(record: dict, path) -> Path:
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    draw_sweep(ax, record)
    ax.set_xlabel(record["x"])
    ax.set_ylabel(record["y"])
    ax.set_title(record["name"], fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return _finish(fig, path)


def plot_group(records: list[dict], path, title: str, labels: list[str] | None = None) -> Path:
    """Several sweeps of one quantity on one axes (e.g. links, or the M of a floor family)."""
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    for i, record in enumerate(records):
        label = labels[i] if labels else record["name"]
        draw_sweep(ax, record, color=f"C{i % 10}", label=label)
    ax.set_xlabel(records[0]["x"])
    ax.set_ylabel(records[0]["y"])
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    return _finish(fig, path)


def plot_overview(records: list[dict], path) -> Path:
    """One panel per sweep with a slope: measured slope and CI against the prediction."""
    records = [r for r in records if r.get("slope") is not None]
    ncols = 3
    nrows = -(-len(records) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.4 * nrows), squeeze=False)
    for ax, record in zip(axes.flat, records, strict=False):
        draw_sweep(ax, record)
        ax.set_xlabel(record["x"], fontsize=8)
        ax.set_ylabel(record["y"], fontsize=8)
        ax.set_title(record["name"], fontsize=9)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(records) :]:
        ax.set_visible(False)
    return _finish(fig, path)
