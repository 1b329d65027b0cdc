"""The results tables and verdict lines of the README and the docs pages, generated from
results/<name>/comparisons.json (`zopg compare`), so that no number or ordering of methods in
them is copied by hand.

A page marks each generated block (a block may appear on several pages):

    <!-- generated: NAME -->
    ... (this script's output for NAME) ...
    <!-- end generated -->

    .venv/bin/python -m benchmarks.reports.readme_tables           # rewrite every block
    .venv/bin/python -m benchmarks.reports.readme_tables --check   # exit 1 if a block is stale

`make compare` first refreshes every comparisons.json from its metrics.csv, then runs this.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tomllib
from pathlib import Path

import numpy as np

from zopg import store
from zopg.analysis import paired, stats, tables
from zopg.analysis.compare import read_final_values
from zopg.analysis.names import DISPLAY_NAMES
from zopg.provenance import REPO_ROOT
from zopg.store import read_json, write_bytes_atomic

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
RESULTS = REPO_ROOT / "results"
BLOCK = re.compile(r"(<!-- generated: ([\w-]+) -->\n)(.*?)(<!-- end generated -->)", re.DOTALL)

# Display names from the one mapping the figures use too (a label without one shows itself);
# the tables mark the methods with reward access, which are not budget-matched, by a dagger.
REWARD_ACCESS = ("exact-pg", "ppo", "es", "ppo-gaussian")
NAMES = {
    label: name + (" †" if label in REWARD_ACCESS else "") for label, name in DISPLAY_NAMES.items()
}
LINKS = {"bradley-terry": "BT", "weibull": "Weibull", "linear": "linear", "hard": "hard"}


def panel_name(panel: dict) -> str:
    env = panel["env"].removeprefix("gridworld/").removeprefix("gymnax/").removeprefix("brax/")
    parts = [env, LINKS.get(panel["link"], panel["link"])]
    parts += [f"{k} {v}" for k, v in panel["sweep"].items()]
    return " · ".join(parts)


def comparison_block(name: str, rows: str = "methods", methods=None, where=None) -> str:
    """A results folder's table (final mean [interval] per method and panel, marked by the
    paired tests) and one verdict line per panel."""
    record = read_json(RESULTS / name / "comparisons.json")
    panels = tables.select_panels(record, where)
    table = tables.markdown_table(
        record, methods=methods, panels=panels, labels=NAMES, panel_label=panel_name, rows=rows
    )
    stats = record["statistics"]
    metric = {p["metric"] for p in panels}
    what = "normalised score" if metric == {"score"} else "value (Monte Carlo return)"
    family = (
        f"Holm over the folder's {stats['family_size']} comparisons"
        if stats.get("family", "folder") == "folder"
        else f"Holm within each panel (up to {stats['family_size']} comparisons; the folder's "
        f"{record['seeds']} seeds cannot resolve Holm over all its comparisons)"
    )
    lines = [
        table,
        "",
        f"Final {what}, mean [95% interval] over {record['seeds']} seeds "
        f"({stats['ci_method']}); marks from paired sign-flip tests (bold: best; italic: tied at "
        f"the top; ▾: significantly worse), {family}; "
        "† reward access, not budget-matched, not tested.",
        "",
    ]
    lines += [f"- {tables.verdict_line(p, NAMES, panel_name)}" for p in panels]
    lines += [f"- note: {n}" for n in record.get("notes", [])]
    return "\n".join(lines) + "\n"


def _ci(stat: dict, digits: int = 3) -> str:
    return tables.number(stat["mean"], digits) + tables.interval(stat["ci95"], digits)


def tuning_block(experiments=("paper_gridworld", "control", "sign_unknown_link")) -> str:
    """Per tuned experiment and method: the best trial's score on the tuning envs, the median
    trial's, the settings chosen, from benchmarks/tuned/*.toml and results/tune/*/trials.json."""
    lines = [
        "| experiment | method | trials | best trial [95% CI] | median trial | chosen | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in experiments:
        tuned = tomllib.loads((REPO_ROOT / "benchmarks" / "tuned" / f"{name}.toml").read_text())
        trials = read_json(RESULTS / "tune" / name / "trials.json")
        seconds = trials.get("seconds", {})
        for method, prov in tuned["provenance"].items():
            scores = [t["score"] for t in trials["trials"] if t["method"] == method]
            chosen = ", ".join(
                f"{k} {tables.number(v, 3) if isinstance(v, float) else v}"
                for k, v in _flat(tuned["methods"][method]).items()
            )
            low, high = prov["ci95"]
            lines.append(
                f"| {name} | {NAMES.get(method, method)} | {prov['trials']} | "
                f"{tables.number(prov['score'])} [{tables.number(low)}, {tables.number(high)}] | "
                f"{tables.number(statistics.median(scores))} | {chosen} | "
                f"{seconds.get(method, 0) / 60:.1f} min |"
            )
    return "\n".join(lines) + "\n"


def _flat(table: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def crossing_block(name: str, sweep_env: bool = True) -> str:
    """Median queries to the experiment's threshold (seeds reaching it of all), per method
    (rows) and env (columns), from summary.json."""
    summary = read_json(RESULTS / name / "summary.json")
    envs, methods, cells = [], [], {}
    for r in summary["results"]:
        if r["reference"]:
            continue
        env = r["env"].removeprefix("gridworld/")
        envs += [env] if env not in envs else []
        methods += [r["method"]] if r["method"] not in methods else []
        t = r["to_threshold"]
        median = "never" if t["median"] is None else f"{t['median']:,.0f}"
        cells[r["method"], env] = f"{median} ({t['seeds_reaching']}/{r['seeds']})"
        threshold = t["threshold"]
    lines = ["| method | " + " | ".join(envs) + " |", "|---|" + "---|" * len(envs)]
    for m in methods:
        lines.append(
            f"| {NAMES.get(m, m)} | " + " | ".join(cells.get((m, e), "–") for e in envs) + " |"
        )
    lines += [
        "",
        f"Median human queries to {threshold:.0%} of the gap (seeds reaching it / seeds); "
        'a median is "never" when fewer than half the seeds reach it within the budget.',
    ]
    return "\n".join(lines) + "\n"


def overoptimisation_block() -> str:
    """Peak, final, drop height and falls per method and reference-pair budget, from
    results/regime_overoptimisation/overoptimisation.json."""
    record = read_json(RESULTS / "regime_overoptimisation" / "overoptimisation.json")
    lines = [
        "| method | queries | peak score | final score | drop height | seeds falling > 0.3 "
        "| √KL at peak / final |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in record["arms"]:
        lines.append(
            f"| {NAMES.get(arm['method'], arm['method'])} | {arm['budget']:,} | "
            f"{_ci(arm['peak_score'])} | {_ci(arm['final_score'])} | "
            f"{_ci(arm['drop_height'])} | {arm['seeds_falling_over_0.3']}/{arm['seeds']} | "
            f"{tables.number(arm['sqrt_kl_at_peak']['mean'], 2)} / "
            f"{tables.number(arm['sqrt_kl_final']['mean'], 2)} |"
        )
    lines += [
        "",
        "Queries: 10 votes a pair (500 queries = 50 reference pairs for the fitted-once arms). "
        "Normalised exact score of the teacher's utility; drop height (Karwowski et al. 2024): "
        "(peak − final) / (peak − start) per seed; KL: exact trajectory KL to the uniform "
        "reference; intervals as in `zopg compare`.",
    ]
    return "\n".join(lines) + "\n"


def rates_block() -> str:
    """Every measured log-log slope with its CI and the prediction, from rates/rates.json."""
    record = read_json(RESULTS / "rates" / "rates.json")
    lines = [
        "| sweep | x | slope [95% CI] | prediction | in CI |",
        "|---|---|---|---|---|",
    ]
    # Rows without a slope (floors, agreement curves) are comparisons, not fits: in rates.json.
    for row in (r for r in record["summary"] if r["slope"] is not None):
        prediction = row.get("prediction")
        inside = row.get("prediction_in_ci")
        lines.append(
            f"| {row['name']} | {row['x']} | {tables.number(row['slope'])}"
            f"{tables.interval(row['slope_ci'] or [None, None])} | "
            f"{'—' if prediction is None else tables.number(prediction, 2)} | "
            f"{'—' if inside is None else ('yes' if inside else 'no')} |"
        )
    return "\n".join(lines) + "\n"


# Block name -> its text. Each is a function so a missing results folder fails only its block.
def claims_block(folder: str, claims) -> str:
    """Planned pairwise comparisons a paragraph of the README rests on, beyond each panel's
    comparison with its top method. Per claim (env, link, method a, method b, sweep point or
    None; "method@link" takes that method under another link): the paired difference a - b
    over shared seeds, its interval and sign-flip p, Holm-adjusted over the block's claims."""
    _, groups = read_final_values(RESULTS / folder)
    rows = []
    for env, link, a, b, point in claims:

        def find(method, env=env, link=link, point=point):
            method, _, other = method.partition("@")
            link = other or link
            for g in groups:
                if (
                    g["method"] == method
                    and g["env"].removeprefix("gridworld/") == env
                    and g["link"] == link
                    and (point is None or g["sweep"] == point)
                ):
                    return g
            raise SystemExit(f"{folder}: no run of {method} on {env} / {link} / {point}")

        ga, gb = find(a), find(b)
        metric = "score" if np.isfinite(ga["score"]).any() else "value"
        d, _, _ = paired.paired_differences(ga[metric], gb[metric])
        rows.append((env, link, a, b, point, paired.compare_paired(d)))
    adjusted = paired.holm([r[-1]["p"] for r in rows])
    lines = []
    for (env, link, a, b, point, c), p_holm in zip(rows, adjusted, strict=True):
        where = " · ".join(
            [env, LINKS.get(link, link), *(f"{k} {v}" for k, v in (point or {}).items())]
        )
        show = lambda m: " under ".join(  # noqa: E731
            [NAMES.get(m.partition("@")[0], m.partition("@")[0])]
            + [LINKS.get(x, x) for x in [m.partition("@")[2]] if x]
        )
        lines.append(
            f"- {where}: {show(a)} − {show(b)} = "
            f"{tables.number(c['mean_difference'])}{tables.interval(c['ci'])} over {c['n']} "
            f"paired seeds, sign-flip p {tables._p(c['p'])}, Holm over these {len(rows)} "
            f"{tables._p(float(p_holm))}"
        )
    return "\n".join(lines) + "\n"


def spend_block(folder: str, env: str, link: str) -> str:
    """What each method spent over the whole run on one panel: human queries, the trajectories
    the human judged (a batch query shows 2D), the trajectories rolled out, environment steps and
    iterations, from summary.json."""
    summary = read_json(RESULTS / folder / "summary.json")
    lines = [
        "| method | iterations | human queries | judged trajectories | trajectories rolled out "
        "| env steps |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["results"]:
        if r["env"].removeprefix("gridworld/") != env or r["link"] != link or r["reference"]:
            continue
        lines.append(
            f"| {NAMES.get(r['method'], r['method'])} | {r['iterations']:,} | "
            f"{r['queries']:,.0f} | {r['judged_trajectories']:,.0f} | {r['trajectories']:,.0f} "
            f"| {r['env_steps']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def sweep_block(folder: str) -> str:
    """A method compared across its own swept setting (each value against the best value by
    mean, over shared seeds), from comparisons.json's sweep comparisons."""
    record = read_json(RESULTS / folder / "comparisons.json")
    lines = [
        "| method | value | against | difference [95% CI] | Holm p | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for c in record["sweep_comparisons"]:
        at = ", ".join(f"{k} {v}" for k, v in c["sweep"].items())
        best = ", ".join(f"{k} {v}" for k, v in c["baseline_sweep"].items())
        lines.append(
            f"| {NAMES.get(c['method'], c['method'])} | {at} | {best} | "
            f"{tables.number(c['mean_difference'])}{tables.interval(c['ci'])} | "
            f"{tables._p(c['p_holm'])} | {c['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def coverage_block(name: str = "ci_coverage.json") -> str:
    """Measured coverage of each interval per simulated shape, from results/<name>."""
    record = read_json(RESULTS / name)
    shapes = record["shapes"]
    methods = list(next(iter(shapes.values()))["methods"])
    largest_se = max(shape["methods"][record["chosen"]]["se"] for shape in shapes.values())
    lines = [
        "| shape | spans | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for name, shape in shapes.items():
        cells = []
        for m in methods:
            value = tables.number(shape["methods"][m]["coverage"])
            cells.append(f"**{value}**" if m == record["chosen"] else value)
        lines.append(
            f"| {name} | {tables.number(1 - shape['outside_range'])} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        f"{record['simulations']:,} data sets of {record['num_seeds']} seeds per shape, "
        f"{record['num_resamples']:,} resamples, ±{2 * largest_se:.3f} "
        f"(2 s.e.) at most; bold: the interval `zopg compare` uses ({record['chosen']}); spans: "
        "the share of data sets whose differences lie on both sides of the truth. Shapes: "
        + "; ".join(f"{name}: {shape['description']}" for name, shape in shapes.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def crossings_block(folder: str, thresholds: dict) -> str:
    """Median human queries at which each seed's value first reaches a threshold per env
    (thresholds: env id -> value), read at the logged iterations, with a 95% bootstrap CI of the
    median over seeds (whole seeds resampled), from metrics.csv."""
    # Crossings are read at the logged iterations, whether or not the file has initial rows.
    columns = store.logged_rows(store.read_tidy(RESULTS / folder / "metrics.csv"))
    lines = [
        "| env | method | threshold | queries to it, median [95% CI] | seeds reaching it |",
        "|---|---|---|---|---|",
    ]
    keys = []
    for method, env in zip(columns["method"], columns["env"], strict=True):
        if (method, env) not in keys and env in thresholds:
            keys.append((method, env))
    for method, env in keys:
        rows = (columns["method"] == method) & (columns["env"] == env)
        if columns["reference"][rows].astype(bool).any():
            continue
        seeds = columns["seed"][rows].astype(int)
        order = np.lexsort((columns["iteration"][rows], seeds))
        num = seeds.max() + 1
        value = columns["value"][rows][order].astype(float).reshape(num, -1)
        queries = columns["queries"][rows][order].astype(float).reshape(num, -1)
        crossing = stats.first_crossing(value, queries, thresholds[env])
        low, high = stats.bootstrap_ci(crossing, np.median)
        show = lambda x: "never" if not np.isfinite(x) else f"{x:,.0f}"  # noqa: E731
        lines.append(
            f"| {env.split('/')[-1]} | {NAMES.get(method, method)} | {thresholds[env]:g} | "
            f"{show(np.median(crossing))} [{show(low)}, {show(high)}] | "
            f"{int(np.isfinite(crossing).sum())}/{num} |"
        )
    return "\n".join(lines) + "\n"


def sample_efficiency_block() -> str:
    """Median queries to 50% and 90% of the gap with bootstrap CIs and the final gap closed,
    from results/sample_efficiency.json."""
    record = read_json(RESULTS / "sample_efficiency.json")
    lines = [
        "| method | env | final gap closed, median [95% CI] | queries to 50% | queries to 90% |",
        "|---|---|---|---|---|",
    ]
    show = lambda x: "never" if x is None else f"{x:,.0f}"  # noqa: E731

    def crossing(c, seeds):
        low, high = c["ci95"]
        return (
            f"{show(c['median'])} [{show(low)}, {show(high)}] ({c['seeds_reaching']}/{seeds} seeds)"
        )

    for key, r in record["results"].items():
        method, _, env = key.partition("/")
        low, high = r["final_gap_closed_ci95"]
        lines.append(
            f"| {NAMES.get(method, method)} | {env.removeprefix('gridworld/')} | "
            f"{tables.number(r['final_gap_closed_median'])} [{tables.number(low)}, "
            f"{tables.number(high)}] | {crossing(r['queries_to_50pct'], r['seeds'])} | "
            f"{crossing(r['queries_to_90pct'], r['seeds'])} |"
        )
    return "\n".join(lines) + "\n"


def _env(*names):
    return lambda panel: panel["env"].removeprefix("gridworld/") in names


SIGN_PANELS = [
    (env, link)
    for env in ("cliff-4x6", "risky-safe")
    for link in ("bradley-terry", "linear", "hard", "weibull")
]


def lm_overoptimisation_block() -> str:
    """Best-of-n by each proxy and data size, per gold: the gold gain (reference sds) at the
    largest n, the n where the mean gain peaked and the gain there, and the proxies' held-out
    accuracy, from results/lm_overoptimisation/summary.json."""
    summary = read_json(RESULTS / "lm_overoptimisation" / "summary.json")
    largest = summary["best_of"][-1]
    lines = []
    for gold, fits in summary["fits"].items():
        itself = fits["gold itself"]["gain_at_largest_n"]
        lines += [
            f"**{gold}** (best-of-n by the gold itself: {itself:+.2f} at n = {largest})",
            "",
            f"| proxy | pairs | held-out accuracy | gain at n = {largest} | peak at n | "
            "gain at peak |",
            "|---|---|---|---|---|---|",
        ]
        for name, fit in fits.items():
            if name == "gold itself":
                continue
            label, pairs = name.rsplit("/", 1)
            lines.append(
                f"| {label} | {int(pairs):,} | {fit['held_out_accuracy']:.3f} | "
                f"{fit['gain_at_largest_n']:+.2f} | {fit['peak_n_measured']} | "
                f"{fit['gain_at_peak']:+.2f} |"
            )
        lines.append("")
    lines.append(
        f"Mean over {summary['seeds']} seeds of the gold value of the picks minus that of plain "
        f"reference samples, in the gold's reference sds; best-of-n's KL is log n − (n − 1)/n "
        f"(√KL {summary['sqrt_kl'][-1]:.2f} at n = {largest}). The ensemble's views share one "
        "fit, so one accuracy."
    )
    return "\n".join(lines) + "\n"


def lm_policies_block() -> str:
    """REINFORCE on a proxy and offline DPO/IPO per gold, arm and coefficient: the measured peak
    of the seeds' mean gold gain and its √KL, the gain and √KL at the end, and the drop from
    the peak to the end with its t interval over seeds, from results/lm_overoptimisation/
    policies.json."""
    summary = read_json(RESULTS / "lm_overoptimisation" / "policies.json")
    lines = [
        "| gold | arm | pairs | coefficient | peak gain | √KL at peak | end gain | √KL at end | "
        "drop (95% CI) | seeds below π_ref at end |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in summary["arms"].items():
        _, gold, arm, pairs = name.split("__")
        arm = {"sigmoid": "DPO", "ipo": "IPO"}.get(arm, f"RL on {arm}")
        for value, fit in entry.items():
            if not isinstance(fit, dict):
                continue
            field, number = value.split("=")
            coefficient = f"β_KL {number}" if field == "coefficient" else f"β {number}"
            low, high = fit["drop_ci"]
            lines.append(
                f"| {gold} | {arm} | {int(pairs):,} | {coefficient} | "
                f"{fit['gain_at_peak']:+.2f} | {fit['sqrt_kl_at_peak']:.2f} | "
                f"{fit['gain_at_end']:+.2f} | {fit['sqrt_kl_at_end']:.2f} | "
                f"{fit['drop']:+.2f} ({low:+.2f}, {high:+.2f}) | "
                f"{fit['seeds_below_reference_at_end']} of {len(fit['end_gain_per_seed'])} |"
            )
    settings = summary["settings"]
    lines += [
        "",
        f"Mean over {settings['seeds']} seeds of the gold value of the policy's own samples minus "
        "the reference's, in the gold's reference sds, at the logged step where that mean is "
        "highest (peak) and at the last step (end); √KL is the per-prefix estimate's square root "
        "on the same samples. The drop is each seed's gain at the peak's step minus its gain at "
        "the end, with a t interval over seeds: an interval above 0 is a measured peak-and-fall; "
        "collapse is a per-seed event, so the last column counts the seeds whose gold ended "
        "below the reference's. "
        f"REINFORCE runs {settings['rl']['steps']} steps of {settings['rl']['batch']} sequences, "
        f"DPO and IPO {settings['dpo']['steps']} steps of {settings['dpo']['batch']} pairs, all "
        f"at Adam {settings['rl']['learning_rate']:g}.",
    ]
    return "\n".join(lines) + "\n"


def lm_methods_curves_block() -> str:
    """Per gold and method of results/lm_methods: the peak of the seeds' mean gold gain, where
    it was (queries, √KL), the final gain and √KL, the drop from the peak to the end with its
    interval, and the queries to reach RM+PPO's peak, from lm_methods.json."""
    record = read_json(RESULTS / "lm_methods" / "lm_methods.json")
    lines = [
        "| gold | method | peak gain | at queries | √KL at peak | final gain | √KL at end | "
        "drop | seeds below start | queries to RM+PPO's peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for gold, arms in record["golds"].items():
        for method, a in arms.items():
            reach = a.get("queries_to_rm_ppo_peak")
            lines.append(
                f"| {gold} | {NAMES.get(method, method)} | {_ci(a['gain_at_peak'], 2)} | "
                f"{a['queries_at_peak']:,.0f} | {a['sqrt_kl_at_peak']['mean']:.2f} | "
                f"{_ci(a['gain_final'], 2)} | {a['sqrt_kl_final']['mean']:.2f} | "
                f"{_ci(a['drop'], 2)} | {a['seeds_ending_below_start']} of {a['seeds']} | "
                f"{'not reached' if reach is None else f'{reach:,.0f}'} |"
            )
    lines += [
        "",
        f"Gold gain over the SFT reference in the gold's reference sds, mean [95% interval] over "
        f"{record['seeds']} seeds, at the logged point where the mean is highest (peak) and at "
        f"{record['budget_queries']:,} queries (final); the drop is each seed's gain at the peak "
        "minus its final gain. √KL: square root of the per-prefix KL estimate to the reference. "
        "Queries to RM+PPO's peak: the first logged point where the method's mean gain reaches "
        "RM+PPO's peak mean gain.",
    ]
    return "\n".join(lines) + "\n"


def lm_dimension_block() -> str:
    """Per method and parameterisation of results/lm_dimension: d, the final gold gain, √KL,
    the median queries to each threshold; then the slope of log queries against log d."""
    record = read_json(RESULTS / "lm_dimension" / "lm_dimension.json")
    thresholds = record["thresholds"]
    head = " | ".join(f"queries to +{t:g}" for t in thresholds)
    lines = [
        f"| method | parameterisation | d | final gain | √KL at end | {head} |",
        "|---|---|---|---|---|" + "---|" * len(thresholds),
    ]
    for method, entry in record["methods"].items():
        for row in entry["rows"]:
            reach = []
            for t in thresholds:
                crossing = row[f"queries_to_{t}"]
                seeds = sum(c is not None for c in crossing["per_seed"])
                median = crossing["median"]
                text = "not reached" if median is None else f"{median:,.0f}"
                reach.append(f"{text} ({seeds} of {len(crossing['per_seed'])})")
            lines.append(
                f"| {NAMES.get(method, method)} | {row['parameterisation']} | {row['d']:,} | "
                f"{_ci(row['final_gain'], 2)} | {row['sqrt_kl_final']['mean']:.2f} | "
                + " | ".join(reach)
                + " |"
            )
    lines.append("")
    for method, entry in record["methods"].items():
        fits = []
        for t in thresholds:
            fit = entry["slopes"][str(t)]
            if fit["slope"] is None:
                fits.append(f"+{t:g}: not enough parameterisations reach it")
            else:
                low, high = fit["ci95"]
                ci = "" if low is None else f" [{low:.2f}, {high:.2f}]"
                fits.append(f"+{t:g}: {fit['slope']:.2f}{ci} ({fit['points']} points)")
        lines.append(
            f"- {NAMES.get(method, method)}, slope of log queries on log d: " + "; ".join(fits)
        )
    lines += [
        "",
        f"Gold gain over the SFT reference in reference sds, mean [95% interval] over "
        f"{record['seeds']} seeds, after {record['budget_queries']:,} queries. Queries to a "
        "threshold: the median over seeds of the first logged point at or above it (in "
        "brackets, how many seeds got there). The slope's interval resamples the seeds.",
    ]
    return "\n".join(lines) + "\n"


BLOCKS = {
    "legend": lambda: tables.LEGEND + "\n",
    "paper_gridworld": lambda: comparison_block("paper_gridworld"),
    "tuning": tuning_block,
    "control": lambda: comparison_block("control"),
    "control_crossings": lambda: crossings_block(
        "control", {"gymnax/CartPole-v1": 450.0, "brax/inverted_pendulum": 245.0}
    ),
    "regime_link_stakes": lambda: comparison_block("regime_link_stakes", rows="panels"),
    "claims_link_stakes": lambda: claims_block(
        "regime_link_stakes",
        [
            ("corridor", "hard", f"{m}@hard", f"{m}@bradley-terry", None)
            for m in ("rm-ppo", "dpo-online", "zspo", "zpg-m1")
        ],
    ),
    "regime_richer_policy": lambda: comparison_block("regime_richer_policy", rows="panels"),
    "claims_richer_policy": lambda: claims_block(
        "regime_richer_policy",
        [
            ("dead-end-bit", "bradley-terry", "zpg", "rm-ppo", None),
            ("dead-end-bit", "bradley-terry", "rm-ppo-obs", "rm-ppo", None),
        ],
    ),
    "regime_hidden_context": lambda: comparison_block("regime_hidden_context", rows="panels"),
    "claims_hidden_context": lambda: claims_block(
        "regime_hidden_context",
        [
            ("corridor", "bradley-terry", f"{m}@bradley-terry", f"{m}@linear", None)
            for m in ("rm-ppo", "dpo-online", "zspo", "zpg")
        ],
    ),
    "regime_dimension_padded": lambda: crossing_block("regime_dimension_padded"),
    "regime_overoptimisation": overoptimisation_block,
    "regime_distribution_shift": lambda: comparison_block(
        "regime_distribution_shift", rows="panels"
    ),
    "regime_link_shape": lambda: comparison_block("regime_link_shape", rows="panels"),
    "regime_non_markov": lambda: comparison_block("regime_non_markov", rows="panels"),
    "regime_stochasticity": lambda: comparison_block("regime_stochasticity", rows="panels"),
    "regime_smoothness": lambda: comparison_block("regime_smoothness", rows="panels"),
    "regime_tuned": lambda: comparison_block("regime_tuned", rows="panels"),
    "sign_unknown_link": lambda: comparison_block("sign_unknown_link", rows="panels"),
    "spend_sign_unknown_link": lambda: spend_block(
        "sign_unknown_link", "cliff-4x6", "bradley-terry"
    ),
    "claims_sign_unknown_link": lambda: claims_block(
        "sign_unknown_link",
        [(env, link, "zspo-d4", "zpg-bt-m1", None) for env, link in SIGN_PANELS]
        + [(env, link, "zpg-known", "zpg-bt", None) for env, link in SIGN_PANELS if link != "hard"],
    ),
    "sweep_par_s2zpo": lambda: sweep_block("par_s2zpo"),
    "sign_d_by_n": lambda: comparison_block("sign_d_by_n", rows="panels"),
    "par_s2zpo": lambda: comparison_block("par_s2zpo", rows="panels"),
    "sign_cartpole": lambda: comparison_block("sign_cartpole", rows="panels"),
    "rates": rates_block,
    "sample_efficiency": sample_efficiency_block,
    "lm_overoptimisation": lm_overoptimisation_block,
    "lm_policies": lm_policies_block,
    "lm_methods": lambda: comparison_block("lm_methods", rows="panels"),
    "lm_methods_curves": lm_methods_curves_block,
    "tuning_lm": lambda: tuning_block(("lm_methods",)),
    "lm_dimension": lm_dimension_block,
    "ci_coverage": coverage_block,
    "ci_coverage_20_seeds": lambda: coverage_block("ci_coverage_20_seeds.json"),
}


def _blocks(text: str) -> dict:
    return {m.group(2): m.group(3) for m in BLOCK.finditer(text)}


def render(text: str) -> str:
    def replace(match):
        name = match.group(2)
        if name not in BLOCKS:
            raise SystemExit(f"block {name!r}: no such block; known: {', '.join(BLOCKS)}")
        return match.group(1) + BLOCKS[name]() + match.group(4)

    return BLOCK.sub(replace, text)


def pages() -> list[Path]:
    """The README and every docs page that holds a generated block."""
    return [p for p in (README, *sorted(DOCS.glob("*.md"))) if BLOCK.search(p.read_text())]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reports.readme_tables", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is stale")
    parser.add_argument(
        "--page",
        action="append",
        type=Path,
        help="a page to render (repeatable; default: the README and docs/*.md)",
    )
    args = parser.parse_args(argv)
    stale_pages = []
    for page in args.page or pages():
        text = page.read_text()
        new = render(text)
        if new == text:
            continue
        if args.check:
            stale = [n for n, old in _blocks(text).items() if _blocks(new).get(n) != old]
            print(f"{page.name}: generated blocks {', '.join(stale)} are stale")
            stale_pages.append(page)
        else:
            write_bytes_atomic(page, new.encode())
            print(f"{page.name}: generated blocks rewritten")
    if stale_pages:
        print("run python -m benchmarks.reports.readme_tables (make compare)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
