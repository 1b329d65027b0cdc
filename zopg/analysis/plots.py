"""Figures from a results folder: convergence curves with seed-bootstrap bands, final scores."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI or servers
import matplotlib.pyplot as plt
import numpy as np

from zopg import store
from zopg.analysis.stats import bootstrap_band

X_AXES = {
    "queries": "human queries",
    "judged_trajectories": "trajectories judged by the human",
    "trajectories": "trajectories",
    "iteration": "iterations",
}


def method_colours(methods) -> dict:
    """One distinct colour per method: tab10 for up to 10 methods, tab20 beyond."""
    cmap, size = (plt.cm.tab10, 10) if len(methods) <= 10 else (plt.cm.tab20, 20)
    return {m: cmap(i % size) for i, m in enumerate(methods)}


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


def _run_arrays(columns, mask):
    seeds = np.unique(columns["seed"][mask])
    per_seed = [mask & (columns["seed"] == s) for s in seeds]
    take = lambda name: np.stack([columns[name][m] for m in per_seed])  # noqa: E731
    return take


def plot_convergence(columns, summary: dict, x_axis: str, path: Path) -> None:
    labels = [sweep["label"] for sweep in summary.get("sweeps", [])]
    panels = _panels(columns, labels)
    methods = list(dict.fromkeys(columns["method"]))
    colours = method_colours(methods)
    results = summary["results"]
    bounds = {_result_key(r, labels): (r["uniform_value"], r["optimal_value"]) for r in results}
    monte_carlo = {_result_key(r, labels) for r in results if r.get("evaluation") == "monte-carlo"}
    ncols = min(2 if len(panels) <= 4 else 3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.2 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for method in methods:
            mask = _panel_mask(columns, labels, panel) & (columns["method"] == method)
            if not mask.any():
                continue
            take = _run_arrays(columns, mask)
            value = take("value")
            if not np.all(np.isfinite(value)):
                continue
            mean, low, high = bootstrap_band(value)
            reference = bool(columns["reference"][mask][0])
            x = take(x_axis).mean(axis=0)
            if reference and x_axis != "iteration" and (x_axis == "queries" or x.max() == 0):
                # Reward-access references spend no human queries: show where they end up.
                ax.axhline(
                    mean[-1],
                    color=colours[method],
                    ls="--",
                    lw=1,
                    label=f"{method} (reward access, final)",
                )
                continue
            ax.plot(x, mean, color=colours[method], label=method, lw=1.5)
            ax.fill_between(x, low, high, color=colours[method], alpha=0.2, lw=0)
        uniform, best = bounds.get(panel, (None, None))
        if best is not None:
            ax.axhline(best, color="k", ls=":", lw=1, label="optimum V*")
        if uniform is not None:
            ax.axhline(uniform, color="grey", ls=":", lw=1, label="uniform policy")
        ax.set_title(_title(panel, labels), fontsize=9)
        ax.set_xlabel(X_AXES[x_axis])
        ax.set_ylabel("mean utility (Monte Carlo)" if panel in monte_carlo else "exact value V(θ)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    # Methods may run on some panels only (a method's `envs`): gather entries from every panel.
    entries = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(
        list(entries.values()),
        list(entries),
        loc="lower center",
        ncol=min(4, len(entries)),
        frameon=False,
    )
    fig.suptitle(f"{summary['experiment']}: mean over {summary['seeds']} seeds, 95% bootstrap band")
    # Room below the panels for the legend: about a quarter inch per legend row.
    legend_rows = -(-len(entries) // 4)
    fig.tight_layout(rect=(0, (0.3 + 0.25 * legend_rows) / (4.2 * nrows), 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_final(summary: dict, path: Path) -> None:
    """Final normalised scores; experiments with Monte Carlo panels get final returns instead."""
    results = summary["results"]
    if any(r["score"]["mean"] is None and r["value"]["mean"] is not None for r in results):
        plot_final_values(summary, path)
        return
    labels = [sweep["label"] for sweep in summary.get("sweeps", [])]
    panels = list(dict.fromkeys(_result_key(r, labels) for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.6 * len(panels) + 2), 4.2))
    for i, method in enumerate(methods):
        xs, ys, errs = [], [], []
        for j, panel in enumerate(panels):
            match = [
                r for r in results if _result_key(r, labels) == panel and r["method"] == method
            ]
            if not match or match[0]["score"]["mean"] is None:
                continue
            s = match[0]["score"]
            xs.append(j + (i - (len(methods) - 1) / 2) * width)
            ys.append(s["mean"])
            errs.append([s["mean"] - s["ci95"][0], s["ci95"][1] - s["mean"]])
        label = method + (
            " (reward access)"
            if any(r["reference"] for r in results if r["method"] == method)
            else ""
        )
        ax.bar(
            xs,
            ys,
            width,
            yerr=np.array(errs).T if errs else None,
            capsize=2,
            color=method_colours(methods)[method],
            label=label,
        )
    ax.set_xticks(range(len(panels)))
    ax.set_xticklabels([_title(p, labels).replace(" · ", "\n", 1) for p in panels], fontsize=8)
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.axhline(0.0, color="grey", ls=":", lw=1)
    ax.set_ylabel("normalised score (0 uniform, 1 optimum)")
    ax.set_title(f"final score at {summary['budget_queries']:,} queries: mean, 95% bootstrap CI")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_final_values(summary: dict, path: Path) -> None:
    """One panel per env × link: each method's final value (mean, 95% CI) and, where measured,
    its initial policy's (hollow marker): returns are on each env's own scale."""
    results = summary["results"]
    labels = [sweep["label"] for sweep in summary.get("sweeps", [])]
    panels = list(dict.fromkeys(_result_key(r, labels) for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(max(4.8, 0.7 * len(methods) + 2) * len(panels), 4.4), squeeze=False
    )
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
            colour = method_colours(methods)[method]
            ax.bar(
                x,
                v["mean"],
                0.7,
                yerr=[[v["mean"] - v["ci95"][0]], [v["ci95"][1] - v["mean"]]],
                capsize=3,
                color=colour,
            )
            initial = r.get("initial_value")
            if initial and initial["mean"] is not None:
                ax.plot(x, initial["mean"], "o", mfc="white", mec="k", ms=5)
            names.append(method + (" *" if r["reference"] else ""))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(_title(panel, labels), fontsize=9)
        ax.set_ylabel("final mean return (Monte Carlo)")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(
        f"{summary['experiment']}: final value at {summary['budget_queries']:,} queries, mean and "
        f"95% bootstrap CI over {summary['seeds']} seeds; o initial policy; * reward access",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweeps(summary: dict, path: Path) -> None:
    """Final score (value, for Monte Carlo runs) against the first swept value, one line per
    method (and value of a second swept field), mean and 95% bootstrap band over seeds; with a
    threshold, a second row shows the queries each method needs to reach it."""
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
                x = [position(r["sweep"][first]) for r in rows]
                label = method if other is None else f"{method}, {second} {other}"
                style = dict(color=colours[method], ls=styles[k % len(styles)], marker="o", ms=3)
                mean = [r[stat]["mean"] for r in rows]
                axes[0, col].plot(x, mean, label=label, **style)
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
    handles, names = axes[0, 0].get_legend_handles_labels()
    for ax in axes[0, 1:]:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            if name not in names:
                handles.append(handle)
                names.append(name)
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), frameon=False)
    fig.suptitle(
        f"{summary['experiment']}: final value against {first}, mean and 95% bootstrap band "
        f"over {summary['seeds']} seeds" + ("\nqueries: median over seeds" if thresholds else ""),
        fontsize=10,
    )
    legend_rows = -(-len(names) // 4)
    fig.tight_layout(rect=(0, (0.3 + 0.25 * legend_rows) / (3.8 * nrows), 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def has_kl(columns) -> bool:
    """Whether metrics.csv holds the exact KL to the reference (exact evaluators, since it
    exists)."""
    kl = columns.get("kl_to_reference")
    return kl is not None and kl.dtype.kind == "f" and bool(np.isfinite(kl).any())


def plot_gold_against_kl(columns, summary: dict, path: Path) -> None:
    """Gold against distance (science.md §11): each method's normalised exact score against
    √KL(π‖π_ref) over trajectories at each logged iteration, from the initial policy (√KL 0) to
    the last iteration (marked): every seed faintly, the mean over seeds of both boldly.
    Over-optimisation is a curve that rises and falls as the policy moves away from the
    reference."""
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
    for ax, panel in zip(axes.flat, panels, strict=False):
        for method in methods:
            mask = _panel_mask(columns, labels, panel) & (columns["method"] == method)
            if not mask.any():
                continue
            take = _run_arrays(columns, mask)
            score, kl = take("score"), take("kl_to_reference")
            if not (np.all(np.isfinite(score)) and np.all(np.isfinite(kl))):
                continue
            d, gold = np.sqrt(np.maximum(kl, 0.0)), score
            start = starts.get((panel, method))
            if start is not None and None not in start and start[2] != start[1]:
                initial = (start[0] - start[1]) / (start[2] - start[1])
                d = np.concatenate([np.zeros((d.shape[0], 1)), d], axis=1)
                gold = np.concatenate([np.full((gold.shape[0], 1), initial), gold], axis=1)
            # Each seed faintly (a seed's peak and fall hide in the mean), the mean boldly.
            for seed in range(d.shape[0]):
                ax.plot(d[seed], gold[seed], color=colours[method], lw=0.5, alpha=0.25)
            d, gold = d.mean(axis=0), gold.mean(axis=0)
            ax.plot(d, gold, color=colours[method], lw=1.5, label=method)
            ax.plot(d[-1], gold[-1], "o", color=colours[method], ms=4)
        ax.axhline(1.0, color="k", ls=":", lw=1)
        ax.axhline(0.0, color="grey", ls=":", lw=1)
        ax.set_title(_title(panel, labels), fontsize=9)
        ax.set_xlabel("√KL(π ‖ π_ref) over trajectories")
        ax.set_ylabel("normalised exact score")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    entries = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=4, frameon=False)
    fig.suptitle(
        f"{summary['experiment']}: gold against distance from the reference, each logged "
        "iteration; faint: seeds, bold: mean over seeds (o: the last)",
        fontsize=10,
    )
    legend_rows = -(-len(entries) // 4)
    fig.tight_layout(rect=(0, (0.3 + 0.25 * legend_rows) / (4.2 * nrows), 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_results(out_dir) -> list[Path]:
    """Write every figure of a results folder into out_dir/figures; returns their paths."""
    out_dir = Path(out_dir)
    columns = store.read_tidy(out_dir / "metrics.csv")
    summary = store.read_json(out_dir / "summary.json")
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    paths = []
    for x_axis in X_AXES:
        path = figures / f"convergence_{x_axis}.png"
        plot_convergence(columns, summary, x_axis, path)
        paths.append(path)
    path = figures / "final_scores.png"
    plot_final(summary, path)
    paths.append(path)
    if summary.get("sweeps"):
        path = figures / "sweep.png"
        plot_sweeps(summary, path)
        paths.append(path)
    if has_kl(columns):
        path = figures / "gold_vs_sqrt_kl.png"
        plot_gold_against_kl(columns, summary, path)
        paths.append(path)
    return paths
