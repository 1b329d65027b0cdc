"""Figures of a results folder: convergence curves with seed-bootstrap bands, final bars by seed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI or servers
import matplotlib.pyplot as plt
import numpy as np

from zopg import store
from zopg.analysis.names import display_name
from zopg.analysis.report import normaliser
from zopg.analysis.stats import MIN_SEEDS_FOR_CI, bootstrap_band

X_AXES = {
    "queries": "human queries",
    "judged_trajectories": "trajectories judged by the human",
    "trajectories": "trajectories",
    "iteration": "iterations",
}
SCORE_LABEL = "normalised score (0 uniform, 1 optimum)"
FEW_SEEDS = f"n < {MIN_SEEDS_FOR_CI}: interval not shown"
# gid of the scatter of each seed's final value over a bar (tests count its points).
SEED_POINTS = "seeds"


def method_colours(methods) -> dict:
    """One distinct colour per method: tab10 for up to 10 methods, tab20 beyond."""
    cmap, size = (plt.cm.tab10, 10) if len(methods) <= 10 else (plt.cm.tab20, 20)
    return {m: cmap(i % size) for i, m in enumerate(methods)}


def method_names(methods) -> dict:
    """Each method's display name; methods that would share one (ppo and ppo-gaussian are both
    PPO) are told apart by their labels, since a legend shows one entry a name."""
    names = {m: display_name(m) for m in methods}
    shared = {n for n in names.values() if list(names.values()).count(n) > 1}
    return {m: f"{n} ({m})" if n in shared else n for m, n in names.items()}


def _panels(columns, labels):
    """(env, link, *swept values) of every panel, in order of first appearance."""
    keys = zip(columns["env"], columns["link"], *(columns[label] for label in labels), strict=True)
    return list(dict.fromkeys(keys))


def _panel_mask(columns, labels, panel):
    mask = (columns["env"] == panel[0]) & (columns["link"] == panel[1])
    for label, value in zip(labels, panel[2:], strict=True):
        mask &= columns[label] == value
    return mask


def _result_key(result: dict, labels) -> tuple:
    return (result["env"], result["link"], *(result["sweep"].get(label) for label in labels))


def _title(panel, labels) -> str:
    swept = ", ".join(
        f"{label} {value:g}" if isinstance(value, float) else f"{label} {value}"
        for label, value in zip(labels, panel[2:], strict=True)
    )
    return f"{panel[0]} · {panel[1]}" + (f" · {swept}" if swept else "")


def _seed_curves(columns, mask):
    """name -> [seeds, P] array of the masked rows, each seed's rows in iteration order (the
    initial-policy row, where the file has one, first)."""
    seeds = np.unique(columns["seed"][mask])
    rows = []
    for seed in seeds:
        found = np.flatnonzero(mask & (columns["seed"] == seed))
        rows.append(found[np.argsort(columns["iteration"][found], kind="stable")])
    return lambda name: np.stack([np.asarray(columns[name][r], dtype=float) for r in rows])


def _interval_note(shown: bool, hidden: bool, what: str) -> str:
    """How a figure's title describes its intervals: bootstrap where there are enough seeds."""
    if hidden and not shown:
        return FEW_SEEDS
    if hidden:
        return f"95% bootstrap {what} where n ≥ {MIN_SEEDS_FOR_CI}; {FEW_SEEDS}"
    return f"95% bootstrap {what}"


def _wrap(text: str, width: float, size: float) -> str:
    """text in lines that fit `width` inches at font size `size` (about 0.55 em a character)."""
    chars = max(20, int(width * 72 / (0.55 * size)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def _suptitle(fig, text: str, size: float = 12) -> float:
    """The figure's title, wrapped to its width; returns the inches it needs above the panels."""
    text = _wrap(text, fig.get_figwidth(), size)
    fig.suptitle(text, fontsize=size)
    return 0.15 + 1.3 * size / 72 * (text.count("\n") + 1)


def _legend_below(fig, axes, above: float = 0.0, ncol: int = 4, rank=None) -> None:
    """One legend for every panel, under them, so it never covers data; panels may hold
    different methods (a method's `envs`), so entries are gathered from all of them, in the
    order of `rank` (label -> number; unranked labels last). `above`: inches kept free above the
    panels (for the figure's title)."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    rank = rank or {}
    order = sorted(entries, key=lambda label: rank.get(label, len(rank)))
    entries = {label: entries[label] for label in order}
    # As many columns as the longest label lets fit across the figure (about 0.6 em a
    # character, 3.5 em of handle and gap), so no entry runs off its edge.
    size = plt.rcParams["legend.fontsize"]
    size = matplotlib.font_manager.FontProperties(size=size).get_size_in_points()
    longest = max((len(label) for label in entries), default=1)
    fits = int(fig.get_figwidth() * 72 / (size * (0.6 * longest + 3.5)))
    ncol = max(1, min(ncol, fits))
    if entries:
        fig.legend(
            list(entries.values()),
            list(entries),
            loc="lower center",
            ncol=min(ncol, len(entries)),
            frameon=False,
        )
    # The figure grows by the legend's height (about a quarter inch a row) and the title's, so
    # the panels keep their height however many entries there are.
    below = 0.2 + 0.24 * -(-len(entries) // ncol)
    height = fig.get_figheight() + below + above
    fig.set_figheight(height)
    fig.tight_layout(rect=(0, below / height, 1, 1 - above / height))


def _scored_panels(columns, labels, panels) -> set:
    """The panels whose tables report the normalised score: those with a finite score (an exact
    model); the others (Monte Carlo evaluation) report the value."""
    score = columns.get("score")
    if score is None or score.dtype.kind != "f":
        return set()
    return {p for p in panels if np.isfinite(score[_panel_mask(columns, labels, p)]).any()}


def _initial_point(result: dict | None, column: str):
    """[mean, low, high] of the initial policy's value (or score) from summary.json, for files
    written before metrics.csv had initial rows; None where the summary has none."""
    initial = (result or {}).get("initial_value") or {}
    if initial.get("mean") is None:
        return None
    low, high = initial.get("ci95") or (None, None)
    point = np.array(
        [initial["mean"], np.nan if low is None else low, np.nan if high is None else high]
    )
    return normaliser(result)(point) if column == "score" else point


def plot_convergence(columns, summary: dict, x_axis: str, path: Path, statistic: str = "score"):
    """Each method's mean over seeds against x_axis, with its 95% seed-bootstrap band, from its
    initial policy (nothing spent) on; one panel per env, link and swept values. statistic
    "score": the normalised score where the panel has one (what its table reports), else the
    value; "value": the value everywhere. A method that spends its whole budget before training
    (offline DPO) has no curve over what it spends: one point with its interval at what it spent.
    A reward-access reference is a dashed line where it ends. Returns the (closed) figure."""
    labels = [sweep["label"] for sweep in summary.get("sweeps", [])]
    panels = _panels(columns, labels)
    methods = list(dict.fromkeys(columns["method"]))
    colours, names = method_colours(methods), method_names(methods)
    results = {(_result_key(r, labels), r["method"]): r for r in summary["results"]}
    bounds = {
        _result_key(r, labels): (r["uniform_value"], r["optimal_value"]) for r in summary["results"]
    }
    monte_carlo = {
        _result_key(r, labels) for r in summary["results"] if r.get("evaluation") == "monte-carlo"
    }
    scored = _scored_panels(columns, labels, panels) if statistic == "score" else set()
    ncols = min(2 if len(panels) <= 4 else 3, len(panels))
    nrows = -(-len(panels) // ncols)
    # One panel alone gets room for a legend of two columns under it.
    width = max(6.4 * ncols, 8.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 4.2 * nrows), squeeze=False)
    shown = hidden = False
    rank = {}  # legend entries in the order of the methods, whichever panel drew them first
    for ax, panel in zip(axes.flat, panels, strict=False):
        column = "score" if panel in scored else "value"
        for method in methods:
            mask = _panel_mask(columns, labels, panel) & (columns["method"] == method)
            if not mask.any():
                continue
            take = _seed_curves(columns, mask)
            y = take(column)
            if not np.all(np.isfinite(y)):
                continue
            interval = y.shape[0] >= MIN_SEEDS_FOR_CI
            shown, hidden = shown or interval, hidden or not interval
            mean, low, high = bootstrap_band(y)
            x = take(x_axis).mean(axis=0)
            if x_axis == "iteration":
                x = x + 1  # iterations done: the initial policy (iteration -1) at 0
            has_initial = take("iteration")[0, 0] == store.INITIAL_ITERATION
            logged = x[1:] if has_initial else x
            name, colour = names[method], colours[method]
            reference = bool(columns["reference"][mask][0])
            if reference and x_axis != "iteration" and (x_axis == "queries" or logged.max() == 0):
                # Reward-access references spend no human queries: show where they end up.
                label = f"{name} (reward access, final)"
                rank.setdefault(label, methods.index(method))
                ax.axhline(mean[-1], color=colour, ls="--", lw=1, label=label)
                continue
            if x_axis != "iteration" and logged.min() == logged.max() > 0:
                # The whole budget spent at once (offline DPO: before training; or a single
                # iteration): a curve over what was spent would be a vertical line.
                label = f"{name} (budget up front, final)"
                rank.setdefault(label, methods.index(method))
                ax.errorbar(
                    logged[-1],
                    mean[-1],
                    yerr=[[mean[-1] - low[-1]], [high[-1] - mean[-1]]] if interval else None,
                    fmt="o",
                    ms=5,
                    capsize=3,
                    color=colour,
                    label=label,
                )
                continue
            if not has_initial:
                start = _initial_point(results.get((panel, method)), column)
                if start is not None:
                    x = np.concatenate([[0.0], x])
                    mean, low, high = (
                        np.concatenate([[s], a])
                        for s, a in zip(start, (mean, low, high), strict=True)
                    )
            rank.setdefault(name, methods.index(method))
            ax.plot(x, mean, color=colour, label=name, lw=1.5)
            if interval:
                ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0)
        if column == "score":
            ax.axhline(1.0, color="k", ls=":", lw=1, label="optimum (score 1)")
            ax.axhline(0.0, color="grey", ls=":", lw=1, label="uniform policy (score 0)")
            ax.set_ylabel(SCORE_LABEL)
        else:
            uniform, best = bounds.get(panel, (None, None))
            if best is not None:
                ax.axhline(best, color="k", ls=":", lw=1, label="optimum V*")
            if uniform is not None:
                ax.axhline(uniform, color="grey", ls=":", lw=1, label="uniform policy")
            ax.set_ylabel(
                "mean utility (Monte Carlo)" if panel in monte_carlo else "exact value V(θ)"
            )
        ax.set_title(_title(panel, labels), fontsize=9)
        ax.set_xlabel(X_AXES[x_axis])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    what = "value"
    if scored:
        what = "normalised score" + ("" if len(scored) == len(panels) else " (else value)")
    above = _suptitle(
        fig,
        f"{summary['experiment']}: {what}, mean over {summary['seeds']} seeds; "
        + _interval_note(shown, hidden, "band"),
    )
    _legend_below(fig, axes.flat, above=above, rank=rank)
    store.save_figure(fig, path)
    plt.close(fig)
    return fig


def final_per_seed(columns, labels) -> dict:
    """(panel, method) -> {"value", "score"}: [seeds] arrays of each seed's last logged
    iteration (never its initial-policy row)."""
    logged = store.logged_rows(columns)
    out = {}
    for panel in _panels(logged, labels):
        for method in dict.fromkeys(logged["method"]):
            mask = _panel_mask(logged, labels, panel) & (logged["method"] == method)
            if mask.any():
                take = _seed_curves(logged, mask)
                out[(panel, method)] = {c: take(c)[:, -1] for c in ("value", "score")}
    return out


def _seed_points(ax, x: float, values, width: float) -> None:
    """Each seed's final value as a small dot over its bar, spread across the bar's width."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    spread = np.linspace(-0.3, 0.3, values.size) * width if values.size > 1 else np.zeros(1)
    ax.scatter(x + spread, values, s=5, color="k", alpha=0.6, lw=0, zorder=3, gid=SEED_POINTS)


def _budget(summary: dict) -> str:
    return (
        f"{summary['budget_queries']:,} {summary.get('budget_unit', 'queries').replace('_', ' ')}"
    )


def final_figure_name(summary: dict) -> str:
    """final_scores.png, or final_values.png where some panel has no normalised score (Monte
    Carlo evaluation), whose bars are then each env's own returns."""
    results = summary["results"]
    values = any(r["score"]["mean"] is None and r["value"]["mean"] is not None for r in results)
    return "final_values.png" if values else "final_scores.png"


def plot_final(summary: dict, path: Path, columns=None):
    """Final normalised scores by panel: mean over seeds (bar), 95% bootstrap CI (with enough
    seeds) and, given metrics.csv's columns, each seed's final score (dots); experiments with
    Monte Carlo panels get final values instead (plot_final_values). Returns the figure."""
    if final_figure_name(summary) == "final_values.png":
        return plot_final_values(summary, path, columns)
    results = summary["results"]
    labels = [sweep["label"] for sweep in summary.get("sweeps", [])]
    panels = list(dict.fromkeys(_result_key(r, labels) for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    seeds = {} if columns is None else final_per_seed(columns, labels)
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.6 * len(panels) + 2), 4.2))
    shown = hidden = False
    for i, method in enumerate(methods):
        xs, ys, whiskers = [], [], []
        for j, panel in enumerate(panels):
            match = [
                r for r in results if _result_key(r, labels) == panel and r["method"] == method
            ]
            if not match or match[0]["score"]["mean"] is None:
                continue
            s = match[0]["score"]
            x = j + (i - (len(methods) - 1) / 2) * width
            xs.append(x)
            ys.append(s["mean"])
            interval = match[0]["seeds"] >= MIN_SEEDS_FOR_CI
            shown, hidden = shown or interval, hidden or not interval
            if interval:
                whiskers.append((x, s["mean"], s["mean"] - s["ci95"][0], s["ci95"][1] - s["mean"]))
            if (panel, method) in seeds:
                _seed_points(ax, x, seeds[(panel, method)]["score"], width)
        reference = any(r["reference"] for r in results if r["method"] == method)
        ax.bar(
            xs,
            ys,
            width,
            color=method_colours(methods)[method],
            label=method_names(methods)[method] + (" (reward access)" if reference else ""),
        )
        if whiskers:
            x, mean, below, above = np.array(whiskers).T
            ax.errorbar(x, mean, yerr=[below, above], fmt="none", ecolor="k", capsize=2, lw=1)
    if seeds:
        ax.scatter([], [], s=5, color="k", alpha=0.6, lw=0, label="one seed")
    ax.set_xticks(range(len(panels)))
    ax.set_xticklabels([_title(p, labels).replace(" · ", "\n", 1) for p in panels], fontsize=8)
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.axhline(0.0, color="grey", ls=":", lw=1)
    ax.set_ylabel(SCORE_LABEL)
    title = (
        f"final score at {_budget(summary)}: mean over {summary['seeds']} seeds, "
        + _interval_note(shown, hidden, "CI")
        + ("; dots: seeds" if seeds else "")
    )
    ax.set_title(_wrap(title, fig.get_figwidth(), 10), fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    _legend_below(fig, [ax])
    store.save_figure(fig, path)
    plt.close(fig)
    return fig


def plot_final_values(summary: dict, path: Path, columns=None):
    """One panel per env × link: each method's final value (mean, 95% CI with enough seeds,
    each seed's as a dot given metrics.csv's columns) and, where measured, its initial policy's
    (hollow marker): returns are on each env's own scale. Returns the figure."""
    results = summary["results"]
    labels = [sweep["label"] for sweep in summary.get("sweeps", [])]
    panels = list(dict.fromkeys(_result_key(r, labels) for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    seeds = {} if columns is None else final_per_seed(columns, labels)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(max(4.8, 0.7 * len(methods) + 2) * len(panels), 4.4), squeeze=False
    )
    shown = hidden = False
    for ax, panel in zip(axes.flat, panels, strict=True):
        names = []
        for method in methods:
            match = [
                r for r in results if _result_key(r, labels) == panel and r["method"] == method
            ]
            if not match or match[0]["value"]["mean"] is None:
                continue
            r, x = match[0], len(names)
            v = r["value"]
            interval = r["seeds"] >= MIN_SEEDS_FOR_CI
            shown, hidden = shown or interval, hidden or not interval
            ax.bar(
                x,
                v["mean"],
                0.7,
                yerr=[[v["mean"] - v["ci95"][0]], [v["ci95"][1] - v["mean"]]] if interval else None,
                capsize=3,
                color=method_colours(methods)[method],
            )
            if (panel, method) in seeds:
                _seed_points(ax, x, seeds[(panel, method)]["value"], 0.7)
            initial = r.get("initial_value")
            if initial and initial["mean"] is not None:
                ax.plot(x, initial["mean"], "o", mfc="white", mec="k", ms=5)
            names.append(method_names(methods)[method] + (" *" if r["reference"] else ""))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(_title(panel, labels), fontsize=9)
        ax.set_ylabel("final mean return (Monte Carlo)")
        ax.grid(alpha=0.3, axis="y")
    _suptitle(
        fig,
        f"{summary['experiment']}: final value at {_budget(summary)}, mean over "
        f"{summary['seeds']} seeds, {_interval_note(shown, hidden, 'CI')}"
        + ("; dots: seeds" if seeds else "")
        + "; o initial policy; * reward access",
        size=9,
    )
    fig.tight_layout()
    store.save_figure(fig, path)
    plt.close(fig)
    return fig


def plot_sweeps(summary: dict, path: Path):
    """Final score (value, for Monte Carlo runs) against the first swept value, one line per
    method (and value of a second swept field), mean and 95% bootstrap band over seeds (with
    enough seeds); with a threshold, a second row shows the queries each method needs to reach
    it. Returns the figure."""
    sweeps = summary["sweeps"]
    first, second = sweeps[0]["label"], (sweeps[1]["label"] if len(sweeps) > 1 else None)
    results = summary["results"]
    panels = list(dict.fromkeys((r["env"], r["link"]) for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    colours = method_colours(methods)
    xs = list(sweeps[0]["values"])
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
    position = (lambda x: x) if numeric else (lambda x: xs.index(x))
    thresholds = any("to_threshold" in r for r in results)
    nrows = 2 if thresholds else 1
    fig, axes = plt.subplots(
        nrows, len(panels), figsize=(max(8.0, 5.6 * len(panels)), 3.8 * nrows), squeeze=False
    )
    styles = ["-", "--", ":", "-."]
    shown = hidden = False
    drawn = set()  # which statistics the panels show, for the title
    for col, (env, link) in enumerate(panels):
        for method in methods:
            seconds = [None] if second is None else list(sweeps[1]["values"])
            for k, other in enumerate(seconds):
                rows = [
                    r
                    for r in results
                    if (r["env"], r["link"], r["method"]) == (env, link, method)
                    and (other is None or r["sweep"].get(second) == other)
                ]
                rows.sort(key=lambda r: xs.index(r["sweep"][first]))
                if not rows:
                    continue
                stat = "score" if rows[0]["score"]["mean"] is not None else "value"
                drawn.add(stat)
                x = [position(r["sweep"][first]) for r in rows]
                name = method_names(methods)[method]
                label = name if other is None else f"{name}, {second} {other}"
                style = dict(color=colours[method], ls=styles[k % len(styles)], marker="o", ms=3)
                mean = [r[stat]["mean"] for r in rows]
                axes[0, col].plot(x, mean, label=label, **style)
                interval = min(r["seeds"] for r in rows) >= MIN_SEEDS_FOR_CI
                shown, hidden = shown or interval, hidden or not interval
                if interval:
                    low = [r[stat]["ci95"][0] for r in rows]
                    high = [r[stat]["ci95"][1] for r in rows]
                    axes[0, col].fill_between(x, low, high, color=colours[method], alpha=0.15, lw=0)
                axes[0, col].set_ylabel(
                    "final normalised score" if stat == "score" else "final value"
                )
                if thresholds and not rows[0]["reference"]:
                    # References spend no human queries: nothing to draw.
                    crossing = [r["to_threshold"] for r in rows]
                    median = [np.nan if c["median"] is None else c["median"] for c in crossing]
                    axes[1, col].plot(x, median, **style)
                    axes[1, col].set_ylabel(
                        f"queries to {crossing[0]['of']} >= {crossing[0]['threshold']:g}"
                    )
        for row in range(nrows):
            ax = axes[row, col]
            ax.set_xlabel(first)
            if not numeric:
                ax.set_xticks(range(len(xs)), [str(x) for x in xs])
            ax.grid(alpha=0.3)
        axes[0, col].set_title(f"{env} · {link}", fontsize=9)
    above = _suptitle(
        fig,
        f"{summary['experiment']}: final "
        + {"score": "normalised score", "value": "value"}.get("".join(drawn), "score or value")
        + f" against {first}, mean over {summary['seeds']} "
        f"seeds, {_interval_note(shown, hidden, 'band')}"
        + ("\nqueries: median over seeds" if thresholds else ""),
        size=10,
    )
    _legend_below(fig, axes[0], above=above)
    store.save_figure(fig, path)
    plt.close(fig)
    return fig


def has_kl(columns) -> bool:
    """Whether metrics.csv holds the exact KL to the reference (exact evaluators, since it
    exists)."""
    kl = columns.get("kl_to_reference")
    return kl is not None and kl.dtype.kind == "f" and bool(np.isfinite(kl).any())


def plot_gold_against_kl(columns, summary: dict, path: Path):
    """Gold against distance (science.md §11): each method's normalised exact score against
    √KL(π‖π_ref) over trajectories at each logged iteration, from the initial policy (√KL 0) to
    the last iteration (marked): every seed faintly, the mean over seeds of both boldly.
    Over-optimisation is a curve that rises and falls as the policy moves away from the
    reference. Returns the figure."""
    labels = [sweep["label"] for sweep in summary.get("sweeps", [])]
    panels = _panels(columns, labels)
    methods = list(dict.fromkeys(columns["method"]))
    colours = method_colours(methods)
    starts = {
        (_result_key(r, labels), r["method"]): (
            r["initial_value"]["mean"],
            r["uniform_value"],
            r["optimal_value"],
        )
        for r in summary["results"]
    }
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), squeeze=False)
    scored = set(_scored_panels(columns, labels, panels))
    for ax, panel in zip(axes.flat, panels, strict=False):
        # Without an exact model (the token family) there is no normalised score: the gold is
        # the evaluator's Monte Carlo value, in its own units.
        statistic = "score" if panel in scored else "value"
        for method in methods:
            mask = _panel_mask(columns, labels, panel) & (columns["method"] == method)
            if not mask.any():
                continue
            take = _seed_curves(columns, mask)
            score, kl = take(statistic), take("kl_to_reference")
            if not (np.all(np.isfinite(score)) and np.all(np.isfinite(kl))):
                continue
            d, gold = np.sqrt(np.maximum(kl, 0.0)), score
            start = starts.get((panel, method))
            has_initial = take("iteration")[0, 0] == store.INITIAL_ITERATION
            # Files without initial rows: every seed starts at the summary's initial value.
            if statistic == "value" and not has_initial and start is not None:
                initial = start[0]
                d = np.concatenate([np.zeros((d.shape[0], 1)), d], axis=1)
                gold = np.concatenate([np.full((gold.shape[0], 1), initial), gold], axis=1)
            elif (
                not has_initial and start is not None and None not in start and start[2] != start[1]
            ):
                initial = (start[0] - start[1]) / (start[2] - start[1])
                d = np.concatenate([np.zeros((d.shape[0], 1)), d], axis=1)
                gold = np.concatenate([np.full((gold.shape[0], 1), initial), gold], axis=1)
            # Each seed faintly (a seed's peak and fall hide in the mean), the mean boldly.
            for seed in range(d.shape[0]):
                ax.plot(d[seed], gold[seed], color=colours[method], lw=0.5, alpha=0.25)
            d, gold = d.mean(axis=0), gold.mean(axis=0)
            ax.plot(d, gold, color=colours[method], lw=1.5, label=method_names(methods)[method])
            ax.plot(d[-1], gold[-1], "o", color=colours[method], ms=4)
        if statistic == "score":
            ax.axhline(1.0, color="k", ls=":", lw=1)
        ax.axhline(0.0, color="grey", ls=":", lw=1)
        ax.set_title(_title(panel, labels), fontsize=9)
        ax.set_xlabel("√KL(π ‖ π_ref) over trajectories")
        ax.set_ylabel("normalised exact score" if statistic == "score" else "value (Monte Carlo)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    above = _suptitle(
        fig,
        f"{summary['experiment']}: gold against distance from the reference, each logged "
        "iteration; faint: seeds, bold: mean over seeds (o: the last)",
        size=10,
    )
    _legend_below(fig, axes.flat, above=above)
    store.save_figure(fig, path)
    plt.close(fig)
    return fig


def plot_results(out_dir) -> list[Path]:
    """Write every figure of a results folder into out_dir/figures; returns their paths."""
    out_dir = Path(out_dir)
    columns = store.read_tidy(out_dir / "metrics.csv")
    summary = store.read_json(out_dir / "summary.json")
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    labels = [sweep["label"] for sweep in summary.get("sweeps", [])]
    scored = bool(_scored_panels(columns, labels, _panels(columns, labels)))
    paths = []
    for x_axis in X_AXES:
        path = figures / f"convergence_{x_axis}.png"
        plot_convergence(columns, summary, x_axis, path)
        paths.append(path)
        if scored:
            # The score figure's curves in the evaluator's own units.
            path = figures / f"convergence_{x_axis}_value.png"
            plot_convergence(columns, summary, x_axis, path, statistic="value")
            paths.append(path)
    name = final_figure_name(summary)
    path = figures / name
    plot_final(summary, path, columns)
    paths.append(path)
    # Until final_values.png existed, Monte Carlo experiments' value bars were final_scores.png;
    # the figure of the other name is a stale one of this folder.
    other = {"final_scores.png": "final_values.png", "final_values.png": "final_scores.png"}[name]
    (figures / other).unlink(missing_ok=True)
    if summary.get("sweeps"):
        path = figures / "sweep.png"
        plot_sweeps(summary, path)
        paths.append(path)
    if has_kl(columns):
        path = figures / "gold_vs_sqrt_kl.png"
        plot_gold_against_kl(columns, summary, path)
        paths.append(path)
    return paths
