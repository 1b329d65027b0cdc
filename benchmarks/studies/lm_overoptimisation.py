"""Best-of-n over-optimisation on the token family (issue 25): gold and proxy against √KL for
proxies of several capacities and data sizes, with Gao et al.'s best-of-n form fitted per proxy.

For each gold utility (gold-gru, bigram-goodhart) and seed: PAIRS reference pairs are drawn from
the SFT GRU and labelled by a Bradley-Terry teacher on the gold (one vote per pair, through
zopg's Oracle); every proxy kind is fitted on the first n of them for each n in PAIR_SIZES
(nested sets). One pool of POOL reference sequences is scored by the gold and every proxy; for
each n of best-of-n the pool is cut into groups of n and each group's proxy argmax is kept, so
every proxy and n sees the same candidates. Best-of-n's KL is log n − (n − 1)/n: an upper
bound that is exact when no sequence has noticeable probability (zopg.lm.best_of_n; the
reference's most likely sequence has probability below 1e-5 here). Gold is in reference sds.

    .venv/bin/python -m benchmarks.studies.lm_overoptimisation          # resumes by part
    .venv/bin/python -m benchmarks.studies.lm_overoptimisation --report  # figures and JSON only

Writes results/lm_overoptimisation/: parts/ (one JSON per gold and seed, so an interrupted run
picks up where it stopped), summary.json (fits with seed-bootstrap intervals, proxies' held-out
accuracy) and figures/ (gold and proxy against √KL, one panel per proxy kind).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from zopg import store
from zopg.analysis.overoptimisation import fit_overoptimisation, plot_overoptimisation
from zopg.envs import make
from zopg.lm.best_of_n import best_of_n_kl_bound
from zopg.lm.proxies import fit_proxy, make_proxy
from zopg.lm.reference import reference_policy
from zopg.preferences import Oracle, make_link, make_utility
from zopg.provenance import REPO_ROOT
from zopg.sequence_kl import sample_sequences

OUT = REPO_ROOT / "results" / "lm_overoptimisation"
ENV_ID = "tokens/hmm-v16-l16"
GOLDS = ("gold-gru", "bigram-goodhart")
SEEDS = 5
PAIRS = 16_000
PAIR_SIZES = (250, 1_000, 4_000, 16_000)
# (label, proxy kind, options); the ensemble's min and mean − sd objectives reuse its members.
PROXIES = (
    ("linear-unigram", "linear-unigram", {}),
    ("linear-bigram", "linear-bigram", {}),
    ("gru-16", "gru-16", {}),
    ("gru-64", "gru-64", {}),
    ("ensemble-mean", "ensemble", {"objective": "mean"}),
)
ENSEMBLE_VIEWS = (("ensemble-min", {"objective": "min"}),)
POOL = 2**17
BEST_OF = tuple(2**k for k in range(13))  # 1 ... 4096
SETTINGS = {
    "env": ENV_ID,
    "golds": GOLDS,
    "pairs": PAIRS,
    "pair_sizes": PAIR_SIZES,
    "proxies": [(label, kind, options) for label, kind, options in PROXIES],
    "ensemble_views": [(label, options) for label, options in ENSEMBLE_VIEWS],
    "pool": POOL,
    "best_of": BEST_OF,
    "teacher": "bradley-terry, rationality 1, one vote per pair",
    "fit": "fit_proxy defaults: Adam 3e-3, batch 256, held-out 20%, a look every epoch, patience 5",
}
SETTINGS_HASH = hashlib.sha256(json.dumps(SETTINGS, sort_keys=True).encode()).hexdigest()[:12]


def best_of_n_curves(gold, proxy) -> tuple[list[float], list[float]]:
    """Mean gold and mean proxy of best-of-n picks by the proxy, for each n in BEST_OF, over
    the pool cut into POOL / n groups (the first maximiser of each group)."""
    golds, proxies = [], []
    for n in BEST_OF:
        group_proxy = proxy.reshape(-1, n)
        pick = np.argmax(group_proxy, axis=1)
        rows = np.arange(group_proxy.shape[0])
        golds.append(float(gold.reshape(-1, n)[rows, pick].mean()))
        proxies.append(float(group_proxy[rows, pick].mean()))
    return golds, proxies


@dataclasses.dataclass(frozen=True)
class StudyData:
    """What every arm of one gold and seed shares: the reference, the gold, the labelled pairs
    (votes[i] = 1 when tokens_a[i] was preferred) and the keys of the proxies' fits."""

    env: object
    env_params: object
    policy: object
    ref: object
    gold: object
    tokens_a: jax.Array
    tokens_b: jax.Array
    votes: np.ndarray
    fit_key: jax.Array
    pool_key: jax.Array

    def pieces(self):
        """(env, env_params, policy, ref, gold)."""
        return self.env, self.env_params, self.policy, self.ref, self.gold

    def fit(self, kind: str, size: int, **options):
        """The proxy of this kind fitted on the first `size` pairs (deterministic: the same
        proxy in every arm)."""
        spec = make_proxy(kind, self.env_params.vocab, self.env_params.length, **options)
        return fit_proxy(
            spec,
            jax.random.fold_in(self.fit_key, size),
            self.tokens_a[:size],
            self.tokens_b[:size],
            self.votes[:size],
        )


def study_data(gold_name: str, seed: int) -> StudyData:
    """The pairs of one gold and seed: PAIRS reference pairs labelled by one Bradley-Terry vote."""
    env, env_params = make(ENV_ID)
    policy, ref = reference_policy("gru", env, env_params)
    gold = make_utility(gold_name).bind(env, env_params)
    oracle = Oracle(make_link("bradley-terry"), utility=gold)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), GOLDS.index(gold_name))
    pair_key, vote_key, fit_key, pool_key = jax.random.split(key, 4)
    pairs = sample_sequences(pair_key, env, env_params, policy, ref, 2 * PAIRS)
    tokens_a, tokens_b = pairs[:PAIRS], pairs[PAIRS:]
    votes = oracle.votes_from_utilities(vote_key, gold.score(tokens_a), gold.score(tokens_b), 1)
    votes = np.asarray(votes.votes[:, 0])
    return StudyData(
        env, env_params, policy, ref, gold, tokens_a, tokens_b, votes, fit_key, pool_key
    )


def run_part(gold_name: str, seed: int, log) -> dict:
    """One gold and seed: the proxies' fits and every best-of-n curve."""
    data = study_data(gold_name, seed)
    env, env_params, policy, ref, gold = data.pieces()
    pool = sample_sequences(data.pool_key, env, env_params, policy, ref, POOL)
    pool_gold = chunked(lambda _, x: gold.score(x), None, pool)
    curves = {}
    oracle_gold, _ = best_of_n_curves(pool_gold, pool_gold)
    curves["gold itself"] = {"gold": oracle_gold, "proxy": oracle_gold, "pairs": 0}
    for label, kind, options in PROXIES:
        for size in PAIR_SIZES:
            start = time.perf_counter()
            fitted = data.fit(kind, size, **options)
            views = [(label, fitted.spec)]
            if kind == "ensemble":
                views += [
                    (view, dataclasses.replace(fitted.spec, **view_options))
                    for view, view_options in ENSEMBLE_VIEWS
                ]
            for view_label, view_spec in views:
                scores = chunked(view_spec.score, fitted.params, pool)
                # The proxy's units are its own: shift it to 0 at the reference's mean.
                scores = scores - scores.mean()
                gold_curve, proxy_curve = best_of_n_curves(pool_gold, scores)
                curves[f"{view_label}/{size}"] = {
                    "gold": gold_curve,
                    "proxy": proxy_curve,
                    "pairs": size,
                    "held_out_accuracy": fitted.record.held_out_accuracy,
                    "fit_steps": fitted.record.best_step,
                }
            log(
                f"{gold_name} seed {seed}: {label} on {size} pairs, held-out accuracy "
                f"{fitted.record.held_out_accuracy:.3f}, {time.perf_counter() - start:.1f} s"
            )
    return {"settings_hash": SETTINGS_HASH, "gold": gold_name, "seed": seed, "curves": curves}


def chunked(score, params, tokens, chunk: int = 16_384) -> np.ndarray:
    """score(params, tokens) over tokens in chunks (a GRU's activations for the whole pool at
    once would take gigabytes)."""
    score = jax.jit(score)
    parts = [score(params, tokens[i : i + chunk]) for i in range(0, tokens.shape[0], chunk)]
    return np.asarray(jnp.concatenate(parts), np.float64)


def part_path(gold_name: str, seed: int):
    return OUT / "parts" / f"{gold_name}__seed{seed}.json"


def summarise() -> dict:
    """Fits of Gao et al.'s best-of-n form per gold and proxy, over the seeds' parts."""
    d = np.sqrt([best_of_n_kl_bound(n) for n in BEST_OF])
    summary = {"settings": SETTINGS, "settings_hash": SETTINGS_HASH, "seeds": SEEDS}
    summary["kl"] = "log n - (n-1)/n"
    summary["sqrt_kl"] = d.tolist()
    summary["best_of"] = list(BEST_OF)
    fits = {}
    for gold_name in GOLDS:
        parts = [store.read_json(part_path(gold_name, s)) for s in range(SEEDS)]
        if not all(p.get("settings_hash") == SETTINGS_HASH for p in parts):
            raise SystemExit(f"{gold_name}: parts of other settings; run the study again")
        fits[gold_name] = {}
        for name in parts[0]["curves"]:
            gold = np.array([p["curves"][name]["gold"] for p in parts])
            proxy = np.array([p["curves"][name]["proxy"] for p in parts])
            # Gold gains over the reference (n = 1 is a plain reference sample).
            gain = gold - gold[:, :1]
            fit = fit_overoptimisation(np.tile(d, (SEEDS, 1)), gain, "bon")
            entry = {
                "pairs": parts[0]["curves"][name]["pairs"],
                "gold_mean": gold.mean(0).tolist(),
                "proxy_mean": proxy.mean(0).tolist(),
                "alpha": fit.alpha,
                "beta": fit.beta,
                "alpha_ci": fit.alpha_ci,
                "beta_ci": fit.beta_ci,
                "d_star": fit.d_star,
                "d_star_ci": fit.d_star_ci,
                "gold_star": fit.gold_star,
                "gold_star_ci": fit.gold_star_ci,
                "peak_n_measured": BEST_OF[int(np.argmax(gain.mean(0)))],
                "gain_at_largest_n": float(gain[:, -1].mean()),
                "gain_at_peak": float(gain.mean(0).max()),
            }
            if "held_out_accuracy" in parts[0]["curves"][name]:
                acc = [p["curves"][name]["held_out_accuracy"] for p in parts]
                entry["held_out_accuracy"] = float(np.mean(acc))
            fits[gold_name][name] = entry
    summary["fits"] = fits
    return summary


def figures(summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.array(summary["sqrt_kl"])
    labels = [label for label, *_ in PROXIES] + [label for label, _ in ENSEMBLE_VIEWS]
    colours = plt.get_cmap("viridis")(np.linspace(0.1, 0.9, len(PAIR_SIZES)))
    for gold_name in GOLDS:
        parts = [store.read_json(part_path(gold_name, s)) for s in range(SEEDS)]
        columns = 3
        rows = -(-len(labels) // columns)
        fig, axes = plt.subplots(
            rows, columns, figsize=(4.2 * columns + 3.2, 3.4 * rows), sharex=True, sharey=True
        )
        axes = axes.ravel()
        for ax, label in zip(axes, labels, strict=False):
            for colour, size in zip(colours, PAIR_SIZES, strict=True):
                name = f"{label}/{size}"
                gold = np.array([p["curves"][name]["gold"] for p in parts])
                gain = gold - gold[:, :1]
                fit = fit_overoptimisation(np.tile(d, (SEEDS, 1)), gain, "bon")
                plot_overoptimisation(ax, np.tile(d, (SEEDS, 1)), gain, fit, color=colour)
            oracle = np.array([p["curves"]["gold itself"]["gold"] for p in parts])
            ax.plot(d, (oracle - oracle[:, :1]).mean(0), color="grey", ls=":")
            ax.set_title(label)
            ax.set_xlabel("√KL(best-of-n ‖ π_ref)" if ax in axes[-columns:] else "")
            ax.set_ylabel(f"{gold_name} gain (sds)" if ax in axes[::columns] else "")
        for ax in axes[len(labels) :]:
            ax.set_visible(False)
        # The data's range: a fitted peak far past it would squeeze every curve to the left.
        axes[0].set_xlim(0, d.max() * 1.05)
        handles = [
            plt.Line2D([], [], color=c, marker="o", label=f"proxy fitted on {size} pairs")
            for c, size in zip(colours, PAIR_SIZES, strict=True)
        ]
        handles += [
            plt.Line2D([], [], color="grey", ls=":", label="best-of-n by the gold itself"),
            plt.Line2D([], [], color="k", marker="*", ls="", ms=10, label="fitted peak d*"),
        ]
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.8, 0.5), fontsize=9)
        fig.suptitle(
            f"Best-of-n (n = 1 ... {BEST_OF[-1]}) picked by a proxy, judged by {gold_name}: "
            f"mean of {SEEDS} seeds, seeds faint, Gao et al.'s fit solid"
        )
        fig.tight_layout(rect=(0, 0, 0.8, 1))  # the legend's column on the right
        store.save_figure(fig, OUT / "figures" / f"bon_{gold_name}.png")
        plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="only the summary and figures")
    args = parser.parse_args(argv)
    log = lambda message: print(message, flush=True)  # noqa: E731
    start = time.perf_counter()
    if not args.report:
        for seed in range(SEEDS):
            for gold_name in GOLDS:
                path = part_path(gold_name, seed)
                if path.exists() and store.read_json(path).get("settings_hash") == SETTINGS_HASH:
                    continue
                store.write_json_atomic(path, run_part(gold_name, seed, log))
                log(f"{path.name} written ({time.perf_counter() - start:.0f} s so far)")
    summary = summarise()
    summary["provenance"] = {"jax": jax.__version__, "device": str(jax.devices()[0])}
    store.write_json_atomic(OUT / "summary.json", summary)
    figures(summary)
    for gold_name, fits in summary["fits"].items():
        for name, fit in fits.items():
            log(
                f"{gold_name:16s} {name:22s} peak at n = {fit['peak_n_measured']:4d}, gain "
                f"{fit['gain_at_peak']:+.2f} there and {fit['gain_at_largest_n']:+.2f} at "
                f"{BEST_OF[-1]}; "
                f"d* {fit['d_star']:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
