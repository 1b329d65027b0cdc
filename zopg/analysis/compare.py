"""`zopg compare`: paired comparisons of the methods of a results folder over their shared seeds,
from the final logged value of each seed in metrics.csv, Holm-adjusted over the whole folder (or,
with family="panel", within each panel); writes comparisons.json, from which the verdicts and
tables of the README and docs are generated.

Panels are (env, link, sweep point). In each, every method is compared with a baseline (the
best budget-matched method by mean unless one is named), and a method is called best only if
every other budget-matched method is significantly worse than it. Where an experiment sweeps a
method's own setting (Par-S2ZPO's K), that method is also compared across the setting's values
with its own best value (the seeds are shared there too). Reference methods (reward access) are
shown, not tested, unless asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zopg.analysis.paired import (
    CI_DESCRIPTIONS,
    CI_METHOD,
    compare_paired,
    holm,
    mean_intervals,
    minimum_detectable_difference,
    paired_differences,
    smallest_attainable_p,
    verdict,
)
from zopg.errors import ConfigError, checked_choice, unknown_name

COMPARISONS_FILE = "comparisons.json"
METRICS = ("score", "value")
# What one Holm adjustment covers: every comparison of the folder (the claims of a whole table),
# or each panel's own (the claim "best in this panel", one at a time); a sweep's comparisons of a
# method across its own setting are one more family in the latter. "auto" takes the folder
# where its seeds could pass Holm over it at all (2/2^n times its size below alpha), else the
# panels: a rule of the design (seeds, comparisons), never of the outcomes.
FAMILIES = ("folder", "panel", "auto")
ALPHA = 0.05
POWER = 0.8
NUM_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


# -- reading a results folder -------------------------------------------------------------------


def read_final_values(results_dir) -> tuple[dict, list[dict]]:
    """(experiment record, groups): one group per (method, env, link, sweep point) of
    metrics.csv, with `reference`, and `value` and `score` as [seeds] arrays of each seed's last
    logged iteration (NaN where a seed has no finite value there, or no row at all)."""
    from zopg import store

    results_dir = Path(results_dir)
    if not (results_dir / store.EXPERIMENT_FILE).exists():
        raise ConfigError(
            f"{results_dir}: not a results folder (no {store.EXPERIMENT_FILE}); run `zopg run`"
        )
    if not (results_dir / "metrics.csv").exists():
        raise ConfigError(
            f"{results_dir}: no metrics.csv; write it with `zopg report {results_dir}`"
        )
    record = store.read_experiment(results_dir)
    columns = store.read_tidy(results_dir / "metrics.csv")
    sweeps = record.get("sweeps", [])
    labels = [s["label"] for s in sweeps]
    needed = ("method", "reference", "env", "link", "seed", "iteration", "value", "score")
    missing = [c for c in (*needed, *labels) if c not in columns]
    if missing:
        raise ConfigError(
            f"{results_dir}/metrics.csv: no column {', '.join(missing)}; columns are "
            f"{', '.join(columns)} (rewrite it with `zopg report {results_dir}`)"
        )
    # Final values come from the logged iterations, never from an initial policy's row.
    columns = store.logged_rows(columns)
    num_seeds = int(record.get("seeds") or 0)
    seeds = columns["seed"].astype(int)
    if seeds.size:
        num_seeds = max(num_seeds, int(seeds.max()) + 1)
    groups: dict[tuple, dict] = {}
    for row in range(seeds.size):
        point = tuple(_sweep_value(sweep, columns[sweep["label"]][row]) for sweep in sweeps)
        key = (columns["method"][row], columns["env"][row], columns["link"][row], point)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                "method": key[0],
                "env": key[1],
                "link": key[2],
                "sweep": dict(zip(labels, point, strict=True)),
                "reference": bool(columns["reference"][row]),
                "last": np.full(num_seeds, -1.0),
                "value": np.full(num_seeds, np.nan),
                "score": np.full(num_seeds, np.nan),
            }
        seed, iteration = seeds[row], columns["iteration"][row]
        # Each seed's last logged iteration, whatever order the rows come in.
        if iteration > group["last"][seed]:
            group["last"][seed] = iteration
            group["value"][seed] = columns["value"][row]
            group["score"][seed] = columns["score"][row]
    if not groups:
        raise ConfigError(f"{results_dir}/metrics.csv: no rows")
    for group in groups.values():
        group["run_id"] = _run_id(record, group)
        del group["last"]
    return record, list(groups.values())


def _sweep_value(sweep: dict, cell):
    """A sweep column's cell as the experiment wrote the value (metrics.csv reads 1 as 1.0)."""
    for value in sweep.get("values", []):
        if str(value) == str(cell):
            return value
        try:
            if float(value) == float(cell):
                return value
        except (TypeError, ValueError):
            pass
    return cell


def _run_id(record: dict, group: dict) -> str | None:
    """The id of the run behind a group, from experiment.json: the runner reuses one run for
    every sweep point its swept field does not touch, and such points must not be compared."""
    slug = group["env"].replace("/", "-")
    for entry in record.get("runs", []):
        if (
            entry.get("link") == group["link"]
            and entry.get("sweep", {}) == group["sweep"]
            and entry.get("run_id", "").startswith(f"{group['method']}__{slug}__")
        ):
            return entry["run_id"]
    return None


# -- comparing ----------------------------------------------------------------------------------


def compare_folder(
    results_dir,
    baseline: str | None = None,
    metric: str | None = None,
    *,
    test_references: bool = False,
    family: str = "folder",
    num_resamples: int = NUM_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    alpha: float = ALPHA,
) -> dict:
    """Every paired comparison of a results folder, Holm-adjusted together (the folder is the
    family): the record comparisons.json holds (see write_comparisons).

    `baseline`: the method each panel's methods are compared with (default: the panel's best
    budget-matched method by mean). `metric`: "score" or "value" (default: the normalised score
    where the panel has one, else the value). `family`: "folder" (one Holm adjustment over
    every comparison), "panel" (one per panel, and one for the sweep comparisons) or "auto"
    (the folder if its seeds could resolve it, else the panels). Deterministic: the bootstrap
    and any Monte Carlo sign flips use `seed`.
    """
    if metric is not None:
        metric = checked_choice("--metric", metric, METRICS)
    family = checked_choice("--family", family, FAMILIES)
    record, groups = read_final_values(results_dir)
    known = sorted({g["method"] for g in groups})
    if len(known) < 2:
        raise ConfigError(
            f"{results_dir}: one method ({', '.join(known)}) in metrics.csv: nothing to compare"
        )
    if baseline is not None and baseline not in known:
        raise unknown_name("baseline method", baseline, known)
    settings = {"num_resamples": num_resamples, "seed": seed, "alpha": alpha, "power": POWER}

    panels = []
    for key, members in _by_panel(groups).items():
        panels.append(_panel(key, members, baseline, metric, test_references, settings))
    sweep_comparisons = _sweep_comparisons(record, groups, panels, test_references, settings)

    # The families: every tested comparison of the folder, or each panel's and the sweep's.
    tested = lambda comparisons: [c for c in comparisons if c["tested"]]  # noqa: E731
    if family == "auto":
        whole = tested([c for p in panels for c in p["comparisons"]] + sweep_comparisons)
        floor = min((smallest_attainable_p(c["n"]) for c in whole), default=1.0)
        family = "folder" if floor * len(whole) < alpha else "panel"
    if family == "folder":
        families = [tested([c for p in panels for c in p["comparisons"]] + sweep_comparisons)]
        panel_family = [0] * len(panels)
    else:
        families = [tested(p["comparisons"]) for p in panels] + [tested(sweep_comparisons)]
        panel_family = list(range(len(panels)))
    resolvable, notes = [], []
    for members in families:
        ok, note = _adjust(members, alpha)
        resolvable.append(ok)
        if note and note not in notes:
            notes.append(note)
    for comparison in [c for p in panels for c in p["comparisons"]] + sweep_comparisons:
        comparison.setdefault("p_holm", None)
        comparison["verdict"] = verdict(comparison["mean_difference"], comparison["p_holm"], alpha)
    for members, ok in zip(families, resolvable, strict=True):
        for comparison in members:
            if not ok or smallest_attainable_p(comparison["n"]) >= alpha:
                comparison["verdict"] = "not resolvable"
    for panel, index in zip(panels, panel_family, strict=True):
        panel["best"] = _best(panel, alpha, resolvable[index])
    sizes = [len(m) for m in families if m]
    floors = [smallest_attainable_p(c["n"]) for m in families for c in m]
    floor = min(floors, default=None)
    return {
        "experiment": record.get("name"),
        "seeds": record.get("seeds"),
        "statistics": {
            "paired": "d_i = method(seed i) - baseline(seed i), over the seed indices both have "
            "a finite final value for (seeds share PRNG keys across methods)",
            "final": "each seed's value at its last logged iteration in metrics.csv",
            "ci": f"95% {CI_DESCRIPTIONS[CI_METHOD]}",
            "ci_method": CI_METHOD,
            "ci_coverage": "measured: results/ci_coverage.json (python -m zopg.analysis.coverage)",
            "resamples": num_resamples,
            "bootstrap_seed": seed,
            "p_value": "two-sided paired sign-flip permutation test of mean difference 0; exact "
            "over all 2^n sign patterns for n <= 20, else Monte Carlo (seeded, +1 correction)",
            "adjustment": "Holm over every tested comparison of the folder"
            if family == "folder"
            else "Holm within each panel (and once over the sweep comparisons)",
            "family": family,
            "family_size": max(sizes, default=0),
            "alpha": alpha,
            "verdict": f"better / worse: Holm-adjusted p < {alpha}; else no detectable "
            "difference, or not resolvable where no outcome of the seeds could have reached "
            f"p < {alpha} (2/2^n times the family size, or 2/2^n alone, >= {alpha}); not tested: "
            "references",
            "best": "the top budget-matched method by mean, if every other budget-matched "
            "method is significantly worse than it; else not resolved, with the methods tied; "
            "decided only where the baseline is that top method",
            "clipped": "the studentised interval reached beyond the observed paired differences "
            "and was cut to their range: the seeds bound the mean difference no better than "
            "their extremes",
            "mdd": f"(t(1-α/2, n-1) + t({POWER}, n-1)) · sd(d) / √n at α = {alpha}, "
            f"power {POWER}, unadjusted; the panel's from the root-mean-square sd of its "
            "tested comparisons",
            "references": "tested" if test_references else "shown, not tested, not in the family",
            "smallest_attainable_p": floor,
        },
        "baseline_requested": baseline,
        "metric_requested": metric,
        "notes": notes,
        "panels": panels,
        "sweep_comparisons": sweep_comparisons,
    }


def _by_panel(groups: list[dict]) -> dict[tuple, list[dict]]:
    panels: dict[tuple, list[dict]] = {}
    for group in groups:
        key = (group["env"], group["link"], tuple(group["sweep"].items()))
        panels.setdefault(key, []).append(group)
    return panels


def _panel_metric(members: list[dict], metric: str | None, name: str) -> str:
    has_score = any(np.isfinite(g["score"]).any() for g in members)
    if metric == "score" and not has_score:
        raise ConfigError(
            f"--metric score: panel {name} has no normalised score (no exact optimum, e.g. Monte "
            "Carlo evaluation); use --metric value or leave --metric out"
        )
    return metric or ("score" if has_score else "value")


def _panel_name(env: str, link: str, sweep: dict) -> str:
    point = ", ".join(f"{k}={v}" for k, v in sweep.items())
    return f"{env} · {link}" + (f" · {point}" if point else "")


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _mean_ci(values: np.ndarray, settings: dict) -> list[float | None]:
    finite = values[np.isfinite(values)]
    if finite.size < 3:
        return [None, None]
    low, high = mean_intervals(
        finite, CI_METHOD, num_resamples=settings["num_resamples"], seed=settings["seed"]
    )
    return [float(low[0]), float(high[0])]


def _panel(key, members, baseline, metric, test_references, settings) -> dict:
    env, link, point = key
    sweep = dict(point)
    name = _panel_name(env, link, sweep)
    metric = _panel_metric(members, metric, name)
    notes = []
    methods = [
        {
            "method": g["method"],
            "reference": g["reference"],
            "seeds": int(np.isfinite(g[metric]).sum()),
            "mean": _mean(g[metric]),
            # The method's own mean with the interval whose coverage was measured (the same
            # kind as the paired differences'), for tables; None below 3 finite seeds.
            "ci": _mean_ci(g[metric], settings),
        }
        for g in members
    ]
    by_name = {g["method"]: g for g in members if np.isfinite(g[metric]).any()}
    for g in members:
        if g["method"] not in by_name:
            notes.append(f"{g['method']}: no seed has a finite final {metric}; left out")
    matched = [m for m in methods if not m["reference"] and m["method"] in by_name]
    top = max(matched, key=lambda m: m["mean"])["method"] if matched else None
    chosen = baseline if baseline in by_name else top
    if baseline is not None and baseline not in by_name:
        notes.append(
            f"baseline {baseline} has no runs in this panel: compared with the best "
            f"budget-matched method {top} instead"
        )
    rule = "requested" if chosen == baseline else "best budget-matched mean"
    if chosen is None:
        # Only references: nothing budget-matched to decide between.
        chosen = next(iter(by_name), None)
        rule = "first method (no budget-matched method in this panel)"
    comparisons = []
    for other in by_name:
        if other == chosen:
            continue
        # References are context, not competitors: tested only on request, or when one is the
        # named baseline (then the question is how far each method is from it).
        either_reference = by_name[other]["reference"] or by_name[chosen]["reference"]
        tested = (
            test_references
            or not either_reference
            or (chosen == baseline and by_name[chosen]["reference"])
        )
        comparisons.append(
            _comparison(by_name[other], by_name[chosen], metric, "panel", tested, settings)
        )
    tested = [c for c in comparisons if c["tested"] and c["sd_difference"] is not None]
    mdd = None
    if tested:
        rms_sd = float(np.sqrt(np.mean([c["sd_difference"] ** 2 for c in tested])))
        mdd = minimum_detectable_difference(
            rms_sd, min(c["n"] for c in tested), settings["alpha"], settings["power"]
        )
    return {
        "panel": name,
        "env": env,
        "link": link,
        "sweep": sweep,
        "metric": metric,
        "baseline": chosen,
        "baseline_rule": rule,
        "top": top,
        "methods": methods,
        "comparisons": comparisons,
        "mdd": mdd,
        "notes": notes,
    }


def _comparison(group, baseline_group, metric, kind, tested, settings) -> dict:
    d, kept, dropped = paired_differences(group[metric], baseline_group[metric])
    notes = []
    if dropped:
        notes.append(
            f"seeds {', '.join(map(str, dropped))} left out: no finite final {metric} for "
            f"{group['method']} or {baseline_group['method']} there"
        )
    record = {
        "method": group["method"],
        "baseline": baseline_group["method"],
        "kind": kind,
        "reference": group["reference"],
        "tested": bool(tested) and d.size > 0,
        "seeds_used": kept,
        "seeds_dropped": dropped,
    }
    if kind == "sweep":
        record.update(env=group["env"], link=group["link"], sweep=group["sweep"])
        record["baseline_sweep"] = baseline_group["sweep"]
    record["mean_method"] = _mean(group[metric])
    record["mean_baseline"] = _mean(baseline_group[metric])
    if d.size == 0:
        notes.append("no seed with a finite value for both: not compared")
        return {
            **record,
            "n": 0,
            "mean_difference": None,
            "sd_difference": None,
            "ci": [None, None],
            "p": None,
            "mdd": None,
            "notes": notes,
        }
    stats = compare_paired(
        d,
        num_resamples=settings["num_resamples"],
        seed=settings["seed"],
        alpha=settings["alpha"],
        power=settings["power"],
    )
    return {**record, **stats, "notes": notes + stats["notes"]}


def _best(panel: dict, alpha: float, resolvable: bool) -> dict:
    """The best budget-matched method of a panel, if every other one is significantly worse
    than the top one by mean; decided from the comparisons with the top, so only where the
    panel's baseline is that method (a named baseline that is not gives "not decided")."""
    top = panel["top"]
    matched = [
        m["method"] for m in panel["methods"] if not m["reference"] and m["mean"] is not None
    ]
    if top is None:
        return {"status": "none", "method": None, "tied": [], "reason": "no budget-matched method"}
    if len(matched) == 1:
        return {"status": "single", "method": top, "tied": [], "reason": "the only one"}
    if panel["baseline"] != top:
        return {
            "status": "not decided",
            "method": None,
            "tied": [],
            "reason": f"the baseline is not the top method by mean ({top}); compare without "
            "--baseline",
        }
    worse = {
        c["method"]
        for c in panel["comparisons"]
        if c["p_holm"] is not None and c["p_holm"] < alpha and c["mean_difference"] < 0
    }
    tied = [m for m in matched if m != top and m not in worse]
    if not tied:
        return {
            "status": "best",
            "method": top,
            "tied": [],
            "reason": "every other budget-matched method is significantly worse",
        }
    reason = (
        "no comparison in this family can be significant"
        if not resolvable
        else ("not every other budget-matched method is significantly worse")
    )
    return {"status": "not resolved", "method": None, "tied": [top, *tied], "reason": reason}


def _adjust(family: list[dict], alpha: float) -> tuple[bool, str | None]:
    """Holm-adjust one family in place (p_holm); whether any outcome of its seeds could pass
    Holm, and a note saying why not where none could."""
    if not family:
        return False, None
    for comparison, p_holm in zip(family, holm([c["p"] for c in family]), strict=True):
        comparison["p_holm"] = float(p_holm)
    # Holm's adjusted p is at least m times the smallest p, and at least the comparison's own;
    # the sign-flip p is at least 2/2^n. Where that already reaches alpha no outcome of the seeds
    # could have been significant, and "no detectable difference" would misread that.
    floor = min(smallest_attainable_p(c["n"]) for c in family)
    if floor * len(family) < alpha:
        return True, None
    largest_n = max(c["n"] for c in family)
    return False, (
        f"with {largest_n} paired seeds the smallest attainable sign-flip p is {floor:.3g}; "
        f"Holm over {len(family)} comparisons needs the strongest to reach "
        f"{alpha / len(family):.3g}, so this family can reject none (at most "
        f"{int(alpha / floor - 1e-9)} comparisons, or more seeds, could)"
    )


def _swept_method(field: str, methods) -> str | None:
    """The method whose own setting a sweep's field is ("methods.<label>.<setting>"), or None
    for a sweep of the env, the teacher or the budget. Labels may hold dots (dpo-b0.01): the
    longest label that prefixes the field wins."""
    owners = [m for m in methods if field.startswith(f"methods.{m}.")]
    return max(owners, key=len) if owners else None


def _sweep_comparisons(record, groups, panels, test_references, settings) -> list[dict]:
    """Where a sweep varies one method's own setting (Par-S2ZPO's K), that method at each value
    against its best value by mean, per env, link and point of any other sweep; points served
    by one and the same run are not compared. Sweeps of the env or the budget are not: across
    them a method meets a different task, not a different setting."""
    metric_of = {(p["env"], p["link"], tuple(p["sweep"].items())): p["metric"] for p in panels}
    names = {g["method"] for g in groups}
    comparisons = []
    for sweep in record.get("sweeps", []):
        method, label = _swept_method(sweep.get("field", ""), names), sweep["label"]
        lines: dict[tuple, list[dict]] = {}
        for g in groups:
            if g["method"] == method:
                rest = tuple((k, v) for k, v in g["sweep"].items() if k != label)
                lines.setdefault((g["env"], g["link"], rest), []).append(g)
        for (env, link, _), points in lines.items():
            metrics = {metric_of[(env, link, tuple(g["sweep"].items()))] for g in points}
            metric = "score" if metrics == {"score"} else "value"
            finite = [g for g in points if np.isfinite(g[metric]).any()]
            if len(finite) < 2:
                continue
            best = max(finite, key=lambda g: _mean(g[metric]))
            for g in finite:
                if g is best or (g["run_id"] is not None and g["run_id"] == best["run_id"]):
                    continue
                tested = test_references or not g["reference"]
                comparison = _comparison(g, best, metric, "sweep", tested, settings)
                comparisons.append({**comparison, "swept": label})
    return comparisons


# -- output -------------------------------------------------------------------------------------


def write_comparisons(path, result: dict) -> Path:
    """Atomically: a reader never sees half a file."""
    from zopg import store

    return store.write_json_atomic(path, result)


def _fmt(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _ci_text(c: dict) -> str:
    low, high = c["ci"]
    if c.get("unbounded"):
        return "unbounded"
    if low is None:
        return "n/a"
    text = f"[{low:+.3f}, {high:+.3f}]"
    if c.get("zero_width"):
        return text + " zero width"
    return text + " clipped" if c.get("clipped") else text


def _p_text(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _comparison_line(label: str, mean, c: dict) -> str:
    return (
        f"  {label:24} {_fmt(mean):>8} {_fmt(c['mean_difference'], '+.3f'):>8} "
        f"{_ci_text(c):30} {_p_text(c['p']):>9} {_p_text(c['p_holm']):>9} "
        f"{_fmt(c['mdd']):>6}  {c['verdict']}"
    )


def format_comparisons(result: dict) -> str:
    """The comparisons as text, numbers as in comparisons.json."""
    s = result["statistics"]
    lines = [
        f"{result['experiment']}: {result['seeds']} seeds; differences to the baseline paired "
        f"over shared seeds; CI: {s['ci_method']} bootstrap ({s['resamples']:,} resamples, seed "
        f"{s['bootstrap_seed']}); p: two-sided sign-flip test, Holm-adjusted over "
        f"{s['family_size']} comparisons; MDD at α = {s['alpha']}, power {POWER}",
    ]
    header = (
        f"  {'method':24} {'mean':>8} {'diff':>8} {'95% CI of diff':30} {'p':>9} "
        f"{'p (Holm)':>9} {'MDD':>6}  verdict"
    )
    for panel in result["panels"]:
        lines += [
            "",
            f"{panel['panel']} ({panel['metric']}); baseline {panel['baseline']} "
            f"({panel['baseline_rule']})",
            header,
        ]
        by_method = {c["method"]: c for c in panel["comparisons"] if c["kind"] == "panel"}
        for m in panel["methods"]:
            label = m["method"] + (" (reference)" if m["reference"] else "")
            if m["method"] == panel["baseline"]:
                lines.append(f"  {label:24} {_fmt(m['mean']):>8} {'baseline':>8}")
            elif m["method"] in by_method:
                lines.append(_comparison_line(label, m["mean"], by_method[m["method"]]))
        best = panel["best"]
        if best["status"] == "best":
            decision = f"{best['method']} ({best['reason']})"
        elif best["status"] == "not resolved":
            decision = f"not resolved ({best['reason']}); tied with the top: " + ", ".join(
                best["tied"]
            )
        else:
            decision = f"{best['status']} ({best['reason']})"
        lines.append(f"  panel MDD {_fmt(panel['mdd'])}; best: {decision}")
        for note in panel["notes"] + [
            f"{c['method']} vs {c['baseline']}: {n}"
            for c in panel["comparisons"]
            for n in c["notes"]
        ]:
            lines.append(f"  ! {note}")
    if result["sweep_comparisons"]:
        lines += ["", "across a method's own setting (against its best value)", header]
        line = None
        for c in result["sweep_comparisons"]:
            label = c["swept"]
            if (c["method"], c["env"], c["link"], c["baseline_sweep"]) != line:
                line = (c["method"], c["env"], c["link"], c["baseline_sweep"])
                rest = "".join(f" · {k}={v}" for k, v in c["sweep"].items() if k != label)
                lines.append(
                    f"  {c['method']} on {c['env']} · {c['link']}{rest}: against "
                    f"{label}={c['baseline_sweep'][label]} ({_fmt(c['mean_baseline'])})"
                )
            lines.append(_comparison_line(f"  {label}={c['sweep'][label]}", c["mean_method"], c))
            lines += [f"  ! {n}" for n in c["notes"]]
    every = [c for p in result["panels"] for c in p["comparisons"]] + result["sweep_comparisons"]
    if any(c.get("clipped") for c in every):
        lines += ["", f"clipped: {s['clipped']}"]
    lines += [f"! {n}" for n in result["notes"]]
    return "\n".join(lines)
