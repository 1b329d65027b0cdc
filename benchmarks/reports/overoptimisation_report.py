"""Over-optimisation report (science.md §9, §11): from results/regime_overoptimisation, per
method and budget, the normalised exact score at the start, its peak over the iterations, at the
end, and Karwowski et al.'s normalised drop height (peak − final) / (peak − initial) per seed,
with the final √KL to the reference; the proxy (rm-ppo-once's exact value under r_φ) beside it;
Gao et al.'s RL form fitted to gold against √KL; and the computation behind the layout (how
rarely the reference policy visits each cell). Writes overoptimisation.json and
figures/gold_vs_sqrt_kl.png.

Per-seed scores and KL come from metrics.csv (committed); the initial score from summary.json
(every seed starts at the uniform policy, score 0). The proxy is an algorithm metric that
metrics.csv does not hold: it is read from runs/ (not committed) when they are there, and kept
from the previous overoptimisation.json otherwise.

    .venv/bin/python -m benchmarks.reports.overoptimisation_report [RESULTS_DIR]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from zopg import store
from zopg.analysis.paired import CI_DESCRIPTIONS, CI_METHOD, mean_intervals
from zopg.analysis.plots import plot_gold_against_kl
from zopg.analysis.report import normaliser
from zopg.provenance import REPO_ROOT

DEFAULT_DIR = REPO_ROOT / "results" / "regime_overoptimisation"
# From a seed's peak of the exact score to the last iteration: "the proxy rises while the exact
# value falls" when the proxy score gains more than PROXY_RISE and the exact score loses more
# than GOLD_FALL (both normalised: 0 at the uniform policy, 1 at the optimum, of r_phi for the
# proxy).
PROXY_RISE, GOLD_FALL = 0.01, 0.1
# A seed's drop height needs a rise to be measured against: below MIN_RISE of normalised score
# above its start, (peak - final) / (peak - initial) is a ratio of noise and is left out.
MIN_RISE = 0.05
# Iterations of the moving average behind the smoothed drop height: PPO keeps moving around a
# plateau (with a KL penalty, the policy stays stochastic), and the maximum of a fluctuating
# flat curve lies above its end by selection alone.
SMOOTH = 25
# Gao et al.'s RL form does not hold near d = 0: fit on the points with d >= this share of the
# largest d of the mean curve.
FIT_FROM = 0.2


def seed_curves(columns, method: str, budget) -> dict:
    """[seeds, P] arrays of iteration, score and KL for one (method, budget) of metrics.csv."""
    mask = (columns["method"] == method) & (columns["budget"] == budget)
    seeds = np.unique(columns["seed"][mask])
    rows = [mask & (columns["seed"] == s) for s in seeds]
    take = lambda name: np.stack([columns[name][r] for r in rows])  # noqa: E731
    return {name: take(name) for name in ("iteration", "score", "kl_to_reference", "queries")}


def drop_heights(initial, scores):
    """Per seed: (peak, final, normalised drop height); the peak is over the initial score and
    every logged score; the height is NaN for a seed that never rose MIN_RISE above its start."""
    peak = np.maximum(initial, scores.max(axis=1))
    final = scores[:, -1]
    rise = peak - initial
    with np.errstate(invalid="ignore", divide="ignore"):
        height = np.where(rise >= MIN_RISE, (peak - final) / rise, np.nan)
    return peak, final, height


def moving_average(scores, window: int):
    """[seeds, P - window + 1]: the mean of each run of `window` logged points."""
    window = min(window, scores.shape[1])
    cumulative = np.cumsum(np.pad(scores, ((0, 0), (1, 0))), axis=1)
    return (cumulative[:, window:] - cumulative[:, :-window]) / window


def stat(values) -> dict:
    """Mean with the suite's measured-coverage CI of the mean over seeds (paired.CI_METHOD)."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    out = {"mean": None, "ci95": [None, None], "seeds": int(finite.size)}
    if finite.size == 0:
        return out
    out["mean"] = float(finite.mean())
    if finite.size >= 2:
        low, high = mean_intervals(finite[None, :])
        out["ci95"] = [float(low[0]), float(high[0])]
    return out


def gao_rl_fit(d, gold) -> dict | None:
    """Least squares of gold(d) = d (α − β log d) on the points with d >= FIT_FROM · max d
    (gold: the score's gain over the start). None when too few points or no spread in log d."""
    d, gold = np.asarray(d, float), np.asarray(gold, float)
    keep = np.isfinite(d) & np.isfinite(gold) & (d >= FIT_FROM * np.nanmax(d)) & (d > 0)
    if keep.sum() < 5 or np.ptp(np.log(d[keep])) < 0.1:
        return None
    design = np.stack([d[keep], -d[keep] * np.log(d[keep])], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, gold[keep], rcond=None)
    fitted = design @ np.array([alpha, beta])
    residual = np.sum((gold[keep] - fitted) ** 2)
    total = np.sum((gold[keep] - gold[keep].mean()) ** 2)
    out = {
        "alpha": float(alpha),
        "beta": float(beta),
        "r2": float(1.0 - residual / total) if total > 0 else None,
        "points": int(keep.sum()),
        "d_range": [float(d[keep].min()), float(d[keep].max())],
    }
    # The peak of d(α − β log d) is at d* = exp(α/β − 1) when β > 0 (a maximum).
    out["d_peak"] = float(math.exp(alpha / beta - 1.0)) if beta > 0 else None
    return out


def proxy_section(out_dir: Path, record: dict, previous: dict | None) -> dict | None:
    """Per rm-ppo-once run, from each seed's peak of the exact score to the last iteration: the
    change of the proxy score and of the exact score, and the seeds where the proxy rose while
    the exact score fell; also a figure of both against the iteration, every seed."""
    runs_dir = out_dir / "runs"
    if not runs_dir.exists():
        return None if previous is None else previous.get("proxy")
    out = {
        "what": "rm-ppo-once: change from each seed's peak of the exact normalised score to the "
        "last iteration, of rm/proxy_score (the exact value under r_phi, normalised: 0 uniform "
        "policy, 1 optimum under r_phi) and of the exact score; rising_while_falling counts "
        f"seeds whose proxy gained > {PROXY_RISE} while the exact score lost > {GOLD_FALL}",
        "runs": [],
    }
    curves = []
    for entry in record["runs"]:
        rid = entry["run_id"]
        if not rid.startswith("rm-ppo-once") or not store.finished_run_hash(runs_dir, rid):
            continue
        run = store.load_run(runs_dir, rid)
        metrics = run["metrics"]
        if "rm/proxy_score" not in metrics:
            continue
        score = normaliser(run)(metrics["eval/value"])
        proxy = np.asarray(metrics["rm/proxy_score"], float)
        peak_at = np.argmax(score, axis=1)
        at_peak = np.arange(score.shape[0]), peak_at
        d_proxy = proxy[:, -1] - proxy[at_peak]
        d_score = score[:, -1] - score[at_peak]
        curves.append(
            (run["method"], entry["sweep"].get("budget"), run["iterations"], score, proxy)
        )
        out["runs"].append(
            {
                "method": run["method"],
                "budget": entry["sweep"].get("budget"),
                "proxy_change_peak_to_final": stat(d_proxy),
                "score_change_peak_to_final": stat(d_score),
                "rising_while_falling": int(
                    np.sum((d_proxy > PROXY_RISE) & (d_score < -GOLD_FALL))
                ),
                "proxy_final": stat(proxy[:, -1]),
                "proxy_at_gold_peak": stat(proxy[at_peak]),
                "seeds": int(score.shape[0]),
            }
        )
    plot_proxy_and_gold(curves, out_dir / "figures" / "proxy_and_gold.png")
    return out


def plot_proxy_and_gold(curves, path: Path) -> None:
    """One panel per rm-ppo-once run: every seed's exact score (solid) and proxy score (dashed,
    same colour) against the iteration, on a log axis (most happens in the first hundred)."""
    import matplotlib.pyplot as plt

    if not curves:
        return
    methods = list(dict.fromkeys(c[0] for c in curves))
    budgets = list(dict.fromkeys(c[1] for c in curves))
    fig, axes = plt.subplots(
        len(methods), len(budgets), figsize=(4.6 * len(budgets), 3.2 * len(methods)), squeeze=False
    )
    for method, budget, iterations, score, proxy in curves:
        ax = axes[methods.index(method), budgets.index(budget)]
        for seed in range(score.shape[0]):
            colour = plt.cm.tab10(seed % 10)
            ax.plot(iterations + 1, score[seed], color=colour, lw=0.9)
            ax.plot(iterations + 1, proxy[seed], color=colour, lw=0.9, ls="--", alpha=0.7)
        ax.set_xscale("log")
        ax.set_ylim(-0.25, 1.05)
        ax.axhline(0.0, color="grey", ls=":", lw=1)
        ax.set_title(f"{method} · budget {budget} ({budget // 10} pairs)", fontsize=9)
        ax.set_xlabel("PPO iteration")
        ax.set_ylabel("normalised score")
        ax.grid(alpha=0.3)
    fig.suptitle(
        "exact score (solid) and proxy score under r_phi (dashed), one colour per seed", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    store.save_figure(fig, path, dpi=100)
    plt.close(fig)


def design_section(record: dict) -> dict:
    """How the uniform reference covers the layout: expected visits per cell in an episode, the
    chance an episode ends at a goal, and that at least one of the 2n episodes behind n pairs
    does (computed exactly on the tabular model; the reason for the layout)."""
    import jax.numpy as jnp

    from zopg.envs import make
    from zopg.occupancy import state_occupancies

    spec = record["envs"][0]
    env, params = make(spec["id"], **spec.get("overrides", {}))
    model = env.tabular_model(params)
    num_states = env.num_states(params)
    uniform = jnp.full((num_states, env.num_actions), 1.0 / env.num_actions)
    occupancies = np.asarray(state_occupancies(model, uniform), float)
    final = occupancies[-1] @ np.asarray(jnp.einsum("sa,sat->st", uniform, model.transition), float)
    layout = "".join(params.layout)
    goal = float(sum(final[i] for i, c in enumerate(layout) if c == "G"))
    width = len(params.layout[0])
    visits = occupancies.sum(axis=0).reshape(-1, width)
    budgets = next((s["values"] for s in record.get("sweeps", []) if s["label"] == "budget"), [])
    return {
        "env": spec.get("label") or spec["id"],
        "layout": list(params.layout),
        "horizon": int(model.horizon),
        "reference": "the uniform policy (every seed's initial policy)",
        "expected_visits_per_episode": np.round(visits, 4).tolist(),
        "p_episode_ends_at_goal": goal,
        "p_some_of_2n_episodes_end_at_goal": {
            str(b // 10): 1.0 - (1.0 - goal) ** (2 * (b // 10)) for b in budgets
        },
    }


def report(out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    record = store.read_experiment(out_dir)
    summary = store.read_json(out_dir / "summary.json")
    # The initial score comes from summary.json below, so the initial rows (newer files) go.
    columns = store.logged_rows(store.read_tidy(out_dir / "metrics.csv"))
    previous_path = out_dir / "overoptimisation.json"
    previous = store.read_json(previous_path) if previous_path.exists() else None
    arms = []
    for result in summary["results"]:
        method, budget = result["method"], result["sweep"].get("budget")
        curves = seed_curves(columns, method, budget)
        init = result["initial_value"]
        if init["ci95"][0] != init["ci95"][1]:
            raise ValueError(f"{method} at {budget}: seeds start from different policies")
        low, high = result["uniform_value"], result["optimal_value"]
        initial = (init["mean"] - low) / (high - low)
        scores, kl = curves["score"], curves["kl_to_reference"]
        peak, final, height = drop_heights(initial, scores)
        _, _, smoothed_height = drop_heights(initial, moving_average(scores, SMOOTH))
        half = scores.shape[1] // 2
        peak_index = np.argmax(np.concatenate([np.full((len(peak), 1), initial), scores], 1), 1)
        sqrt_kl = np.sqrt(np.maximum(kl, 0.0))
        at_peak = np.arange(len(peak)), np.maximum(peak_index - 1, 0)
        sqrt_kl_at_peak = np.where(peak_index > 0, sqrt_kl[at_peak], 0.0)
        peak_iteration = np.where(peak_index > 0, curves["iteration"][at_peak], -1)
        mean_d, mean_gold = sqrt_kl.mean(axis=0), scores.mean(axis=0) - initial
        arms.append(
            {
                "method": method,
                "algorithm": result["algorithm"],
                "budget": budget,
                "iterations": result["iterations"],
                "seeds": int(scores.shape[0]),
                "initial_score": initial,
                "peak_score": stat(peak),
                "final_score": stat(final),
                "drop": stat(peak - final),
                "drop_height": stat(height),
                "drop_height_smoothed": stat(smoothed_height),
                "score_sd_last_half": stat(scores[:, half:].std(axis=1)),
                "seeds_without_rise": int(np.sum(~np.isfinite(height))),
                # How many seeds fell far from their peak, and below where they started.
                "seeds_falling_over_0.1": int(np.sum(peak - final > 0.1)),
                "seeds_falling_over_0.3": int(np.sum(peak - final > 0.3)),
                "seeds_ending_below_start": int(np.sum(final < initial)),
                # -1: the initial policy was the best the run saw.
                "peak_iteration_median": float(np.median(peak_iteration)),
                "sqrt_kl_at_peak": stat(sqrt_kl_at_peak),
                "sqrt_kl_final": stat(sqrt_kl[:, -1]),
                "gao_rl_fit": gao_rl_fit(mean_d, mean_gold)
                if result["algorithm"] == "rm-ppo-once"
                else None,
            }
        )
    out = {
        "experiment": summary["experiment"],
        "score": summary["score"],
        "drop_height": "Karwowski et al. (2024): (peak - final) / (peak - initial) per seed, "
        "peak = max over the initial policy and every logged iteration of the normalised exact "
        f"score; left out of the mean for a seed whose peak is less than {MIN_RISE} above its "
        "start (seeds_without_rise)",
        "ci": f"95% {CI_DESCRIPTIONS[CI_METHOD]} (zopg.analysis.paired; coverage measured)",
        "drop_height_smoothed": f"the same on the {SMOOTH}-point moving average of each seed's "
        "scores (peak and final of the average); score_sd_last_half: each seed's standard "
        "deviation of the score over the last half of the logged points, the scale of the "
        "fluctuation a peak rises above by selection",
        "kl": "exact KL over trajectories to the seed's initial policy, "
        "E_pi sum_t KL(pi(.|s_t) || pi_ref(.|s_t)) (zopg.occupancy)",
        "gao_rl_fit": "gold(d) = d (alpha - beta log d), d = sqrt(KL), gold = mean score gain "
        f"over the start, least squares on the mean curve's points with d >= {FIT_FROM} max d; "
        "d_peak = exp(alpha / beta - 1) (beta > 0). From a uniform reference the KL is at most "
        "H log |A| (sqrt 5.77 on the cliff: a deterministic policy), which the runs without a "
        "penalty reach within about 100 iterations; their falls happen there, so the form's "
        "peak is not identified by them",
        "design": design_section(record),
        "arms": arms,
    }
    proxy = proxy_section(out_dir, record, previous)
    if proxy is not None:
        out["proxy"] = proxy
    store.write_json_atomic(previous_path, out)
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    plot_gold_against_kl(columns, summary, figures / "gold_vs_sqrt_kl.png")
    return out


def format_report(out: dict) -> str:
    def cell(s, spec=".3f"):
        if s["mean"] is None:
            return "n/a"
        low, high = s["ci95"]
        ci = "" if low is None else f" [{low:{spec}}, {high:{spec}}]"
        return f"{s['mean']:{spec}}{ci}"

    lines = [
        f"{'method':22} {'budget':>7} {'init':>6} {'peak':>20} {'final':>20} "
        f"{'drop height':>22} {'final sqrt KL':>20}"
    ]
    for a in out["arms"]:
        lines.append(
            f"{a['method']:22} {a['budget']:>7} {a['initial_score']:6.3f} "
            f"{cell(a['peak_score']):>20} {cell(a['final_score']):>20} "
            f"{cell(a['drop_height']):>22} {cell(a['sqrt_kl_final']):>20}"
        )
    return "\n".join(lines)


def run_report(report_fn, format_fn, default_dir: Path, argv=None) -> int:
    """A report's command line, shared by the reports: `python -m ... [RESULTS_DIR]` writes the
    report's JSON (report_fn) and prints its summary (format_fn)."""
    argv = sys.argv[1:] if argv is None else argv
    print(format_fn(report_fn(Path(argv[0]) if argv else default_dir)))
    return 0


def main(argv=None) -> int:
    return run_report(report, format_report, DEFAULT_DIR, argv)


if __name__ == "__main__":
    raise SystemExit(main())
