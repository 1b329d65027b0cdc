"""RL and DPO over-optimisation on the token family (issue 25): gold and proxy against √KL for
KL-penalised REINFORCE on fitted proxies and for offline DPO and IPO on the same pairs.

The second half of `make lm` (the first, best-of-n, is lm_overoptimisation). For each gold and
seed the pairs, votes and proxies are those of lm_overoptimisation (StudyData: the same keys, so
the same proxies). Every arm starts at the SFT reference (GRU, all parameters) and logs, every
few steps, the gold, the proxy and the per-prefix KL on EVAL_SEQUENCES fresh sequences of each
run; a part is one (gold, proxy or loss, pairs) with all seeds and coefficients run side by side.

RL: REINFORCE with a leave-one-out baseline on the proxy, a per-token KL penalty β_KL in
KL_COEFFICIENTS. DPO and IPO: at each β in DPO_BETAS on the first n pairs. The step size is one
for every arm (3e-4 Adam, clipped at norm 1): chosen by the KL it reaches, never by the gold
(at 1e-3 unpenalised REINFORCE passes 25 nats in 50 steps and the curve is three points; at
1e-4 it needs 300 steps to reach 11 nats).

    .venv/bin/python -m benchmarks.studies.lm_overoptimisation_policies          # resumes
    .venv/bin/python -m benchmarks.studies.lm_overoptimisation_policies --report

Writes results/lm_overoptimisation/policy_parts/, policies.json (per arm and coefficient: the
measured peak of the seeds' mean gold gain, its √KL, the gain at the end, the drop from the
peak to the end with a t interval over seeds, and Gao et al.'s RL form fitted) and figures
rl_<gold>.png and dpo_<gold>.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.studies.lm_overoptimisation import GOLDS, OUT, SEEDS, study_data
from zopg import store
from zopg.algorithms.token_finetune import (
    PairSettings,
    ReinforceSettings,
    pair_runs,
    reinforce_runs,
    stack_runs,
)
from zopg.analysis.overoptimisation import fit_overoptimisation, plot_overoptimisation
from zopg.analysis.paired import t_quantile
from zopg.sequence_kl import per_prefix_kl, sample_sequences

RL_PROXIES = (("linear-unigram", {}), ("gru-64", {}))
RL_SIZES = (1_000, 16_000)
KL_COEFFICIENTS = (0.0, 0.01, 0.05)
RL = ReinforceSettings(steps=240, batch=128, learning_rate=3e-4, eval_every=20)
DPO_LOSSES = ("sigmoid", "ipo")
DPO_SIZES = (1_000, 16_000)
DPO_BETAS = (0.1, 0.5)
DPO = PairSettings(steps=1000, batch=32, learning_rate=3e-4, eval_every=50)
EVAL_SEQUENCES = 512
SETTINGS = {
    "rl_proxies": RL_PROXIES,
    "rl_sizes": RL_SIZES,
    "kl_coefficients": KL_COEFFICIENTS,
    "rl": RL.__dict__,
    "dpo_losses": DPO_LOSSES,
    "dpo_sizes": DPO_SIZES,
    "dpo_betas": DPO_BETAS,
    "dpo": {k: v for k, v in DPO.__dict__.items() if k != "loss"},
    "eval_sequences": EVAL_SEQUENCES,
    "seeds": SEEDS,
}
SETTINGS_HASH = hashlib.sha256(json.dumps(SETTINGS, sort_keys=True).encode()).hexdigest()[:12]
PARTS = OUT / "policy_parts"


@lru_cache(maxsize=SEEDS)
def _data(gold_name: str, seed: int):
    return study_data(gold_name, seed)


def _monitor(data, proxy_score=None):
    """Gold, proxy (where there is one) and per-prefix KL of a policy on fresh sequences."""
    env, env_params, policy, ref, gold = data.pieces()

    def measure(params, key, proxy_params=None):
        tokens = sample_sequences(key, env, env_params, policy, params, EVAL_SEQUENCES)
        out = {
            "gold": jnp.mean(gold.score(tokens)),
            "kl": jnp.mean(per_prefix_kl(env, env_params, policy, params, ref, tokens)),
        }
        if proxy_score is not None:
            out["proxy"] = jnp.mean(proxy_score(proxy_params, tokens))
        return out

    return measure


def run_rl(gold_name: str, label: str, options: dict, size: int, log) -> dict:
    """Every seed and KL coefficient of REINFORCE on one proxy kind fitted on `size` pairs."""
    datas = [_data(gold_name, seed) for seed in range(SEEDS)]
    fits = [data.fit(label, size, **options) for data in datas]
    spec = fits[0].spec
    runs = [(seed, c) for seed in range(SEEDS) for c in KL_COEFFICIENTS]
    proxy_params = stack_runs([fits[seed].params for seed, _ in runs])
    # One key per seed, shared by its coefficients: their curves differ by β_KL alone.
    keys = jnp.stack([jax.random.PRNGKey(1000 + seed) for seed, _ in runs])
    first = datas[0]
    _, history = reinforce_runs(
        keys,
        [c for _, c in runs],
        spec.score,
        proxy_params,
        first.env,
        first.env_params,
        first.policy,
        first.ref,
        _monitor(first, spec.score),
        RL,
        log,
    )
    return {
        "settings_hash": SETTINGS_HASH,
        "runs": [{"seed": s, "coefficient": c} for s, c in runs],
        "held_out_accuracy": [fit.record.held_out_accuracy for fit in fits],
        "history": history,
    }


def run_dpo(gold_name: str, loss: str, size: int, log) -> dict:
    """Every seed and β of offline DPO or IPO on the first `size` pairs."""
    datas = [_data(gold_name, seed) for seed in range(SEEDS)]
    runs = [(seed, b) for seed in range(SEEDS) for b in DPO_BETAS]
    keys = jnp.stack([jax.random.PRNGKey(2000 + seed) for seed, _ in runs])
    first = datas[0]
    _, history = pair_runs(
        keys,
        [b for _, b in runs],
        jnp.stack([datas[s].tokens_a[:size] for s, _ in runs]),
        jnp.stack([datas[s].tokens_b[:size] for s, _ in runs]),
        jnp.stack([jnp.asarray(datas[s].votes[:size]) for s, _ in runs]),
        first.env_params,
        first.policy,
        first.ref,
        _monitor(first),
        PairSettings(loss, DPO.steps, DPO.batch, DPO.learning_rate, DPO.eval_every),
        log,
    )
    return {
        "settings_hash": SETTINGS_HASH,
        "runs": [{"seed": s, "beta": b} for s, b in runs],
        "history": history,
    }


def arms() -> list[tuple[str, str, object]]:
    """(part name, kind, how to run it) of every part, RL first."""
    out = []
    for gold_name in GOLDS:
        for label, options in RL_PROXIES:
            for size in RL_SIZES:
                out.append(
                    (
                        f"rl__{gold_name}__{label}__{size}",
                        "rl",
                        lambda log, g=gold_name, la=label, o=options, n=size: run_rl(
                            g, la, o, n, log
                        ),
                    )
                )
        for loss in DPO_LOSSES:
            for size in DPO_SIZES:
                out.append(
                    (
                        f"dpo__{gold_name}__{loss}__{size}",
                        "dpo",
                        lambda log, g=gold_name, lo=loss, n=size: run_dpo(g, lo, n, log),
                    )
                )
    return out


def _curves(part: dict, field: str, value) -> dict[str, np.ndarray]:
    """[seeds, evaluations] arrays of one coefficient's runs: √KL, gold gain, proxy gain."""
    columns = [i for i, run in enumerate(part["runs"]) if run[field] == value]
    history = part["history"]
    out = {"step": np.array(history["step"])}
    for name in ("gold", "proxy", "kl"):
        if name in history:
            out[name] = np.array(history[name])[:, columns].T
    out["d"] = np.sqrt(np.maximum(out.pop("kl"), 0.0))
    out["gold"] = out["gold"] - out["gold"][:, :1]
    if "proxy" in out:
        out["proxy"] = out["proxy"] - out["proxy"][:, :1]
    return out


def _moved(curve: dict) -> np.ndarray:
    """The seeds whose policy left the reference (at least two distinct positive √KL). A proxy
    fitted on few pairs can stop at its constant initial score (held-out accuracy 0.5): its
    REINFORCE advantage is 0 and the policy never moves, a true outcome with no curve to fit."""
    return np.array([np.unique(row[row > 0]).size >= 2 for row in curve["d"]])


def _fit(curve: dict):
    """Gao et al.'s RL form over the seeds that moved (None when none did)."""
    moved = _moved(curve)
    if not moved.any():
        return None
    return fit_overoptimisation(curve["d"][moved], curve["gold"][moved], "rl")


def summarise_curve(curve: dict) -> dict:
    """The measured peak of the mean gold gain, the drop from it to the end with a t interval
    over seeds (paired: each seed's own gain at the peak's step and at the end), and the fit."""
    gold, d = curve["gold"], curve["d"]
    mean = gold.mean(0)
    peak = int(np.argmax(mean))
    drop = gold[:, peak] - gold[:, -1]
    seeds = gold.shape[0]
    half = t_quantile(0.975, seeds - 1) * drop.std(ddof=1) / np.sqrt(seeds)
    fit = _fit(curve)
    entry = {
        "peak_step": int(curve["step"][peak]),
        "gain_at_peak": float(mean[peak]),
        "sqrt_kl_at_peak": float(d[:, peak].mean()),
        "gain_at_end": float(mean[-1]),
        "sqrt_kl_at_end": float(d[:, -1].mean()),
        "drop": float(drop.mean()),
        "drop_ci": [float(drop.mean() - half), float(drop.mean() + half)],
        # Collapse is a per-seed event (a run finds the penalised repeats or does not yet), so
        # the seeds' own numbers go beside the mean.
        "end_gain_per_seed": gold[:, -1].tolist(),
        "peak_gain_per_seed": gold.max(axis=1).tolist(),
        "seeds_below_reference_at_end": int((gold[:, -1] < 0).sum()),
        "seeds_fitted": 0 if fit is None else fit.num_seeds,
        "alpha": None if fit is None else fit.alpha,
        "beta": None if fit is None else fit.beta,
        "d_star": None if fit is None else fit.d_star,
        "d_star_ci": None if fit is None else fit.d_star_ci,
    }
    if "proxy" in curve:
        entry["proxy_gain_at_end"] = float(curve["proxy"][:, -1].mean())
    return entry


def summarise() -> dict:
    summary = {"settings": SETTINGS, "settings_hash": SETTINGS_HASH, "arms": {}}
    for name, kind, _ in arms():
        part = store.read_json(PARTS / f"{name}.json")
        if part.get("settings_hash") != SETTINGS_HASH:
            raise SystemExit(f"{name}: a part of other settings; run the study again")
        field, values = ("coefficient", KL_COEFFICIENTS) if kind == "rl" else ("beta", DPO_BETAS)
        entry = {
            f"{field}={value}": summarise_curve(_curves(part, field, value)) for value in values
        }
        if kind == "rl":
            entry["held_out_accuracy"] = float(np.mean(part["held_out_accuracy"]))
        summary["arms"][name] = entry
    return summary


def figures() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for kind, field, values, what in (
        ("rl", "coefficient", KL_COEFFICIENTS, "β_KL"),
        ("dpo", "beta", DPO_BETAS, "β"),
    ):
        colours = plt.get_cmap("plasma")(np.linspace(0.1, 0.8, len(values)))
        for gold_name in GOLDS:
            names = [n for n, k, _ in arms() if k == kind and n.split("__")[1] == gold_name]
            fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey=True)
            for ax, name in zip(axes.ravel(), names, strict=True):
                part = store.read_json(PARTS / f"{name}.json")
                for colour, value in zip(colours, values, strict=True):
                    curve = _curves(part, field, value)
                    moved = _moved(curve)
                    if not moved.any():
                        continue
                    proxy = curve.get("proxy")
                    plot_overoptimisation(
                        ax,
                        curve["d"][moved],
                        curve["gold"][moved],
                        _fit(curve),
                        proxy=None if proxy is None else proxy[moved],
                        label=f"{what} {value}",
                        color=colour,
                    )
                _, arm, size = name.split("__")[1:]
                ax.set_title(f"{arm}, {size} pairs")
                ax.axhline(0, color="grey", lw=0.5)
                ax.set_xlabel("√KL(π ‖ π_ref)")
                ax.set_ylabel(f"{gold_name} gain (sds)")
                ax.legend(fontsize=8)
            method = "REINFORCE on a proxy" if kind == "rl" else "offline DPO (sigmoid) / IPO"
            fig.suptitle(
                f"{method}, judged by {gold_name}: mean of {SEEDS} seeds (points), seeds "
                "faint, Gao et al.'s RL form fitted" + (", proxy dashed" if kind == "rl" else "")
            )
            fig.tight_layout()
            store.save_figure(fig, OUT / "figures" / f"{kind}_{gold_name}.png")
            plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="only the summary and figures")
    args = parser.parse_args(argv)
    log = lambda message: print(message, flush=True)  # noqa: E731
    start = time.perf_counter()
    if not args.report:
        for name, _, run in arms():
            path = PARTS / f"{name}.json"
            if path.exists() and store.read_json(path).get("settings_hash") == SETTINGS_HASH:
                continue
            log(f"{name} ...")
            store.write_json_atomic(path, run(log))
            log(f"{name} written ({time.perf_counter() - start:.0f} s so far)")
    summary = summarise()
    summary["provenance"] = {"jax": jax.__version__, "device": str(jax.devices()[0])}
    store.write_json_atomic(OUT / "policies.json", summary)
    figures()
    for name, entry in summary["arms"].items():
        for value, fit in entry.items():
            if not isinstance(fit, dict):
                continue
            log(
                f"{name:36s} {value:18s} peak {fit['gain_at_peak']:+.2f} at √KL "
                f"{fit['sqrt_kl_at_peak']:.2f}, end {fit['gain_at_end']:+.2f} at √KL "
                f"{fit['sqrt_kl_at_end']:.2f}, drop {fit['drop']:+.2f} "
                f"[{fit['drop_ci'][0]:+.2f}, {fit['drop_ci'][1]:+.2f}]; "
                f"{fit['seeds_below_reference_at_end']} seeds end below π_ref; "
                f"{fit['seeds_fitted']} seeds fitted"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
