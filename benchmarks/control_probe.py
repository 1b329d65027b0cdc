"""Control probe: brax backend speeds, ZPG on gymnax CartPole-v1 and on brax inverted_pendulum.

Writes results/control_probe.json atomically; each section (--only) replaces its own entry and
keeps the others, so sections can be re-run one at a time. Run from the repository root:

    .venv/bin/python benchmarks/control_probe.py                 # every section
    .venv/bin/python benchmarks/control_probe.py --only cartpole
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

try:
    from benchmarks import _report
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import _report

from zopg.algorithms.zpg import ZPGConfig, make_trainer
from zopg.envs import make
from zopg.evaluation import evaluate
from zopg.policies import make_policy, num_params
from zopg.preferences import BradleyTerry, Oracle

OUT = _report.REPO_ROOT / "results" / "control_probe.json"
SECTIONS = ("backends", "cartpole", "brax")
TARGET_CARTPOLE = 450.0

# -- brax backends ---------------------------------------------------------------------------
BACKEND_ENVS = ("brax/inverted_pendulum", "brax/hopper")
BACKEND_BATCH = 128
BACKEND_HORIZON = 100


def measure_backends(repeats: int = 3) -> dict:
    """Env steps/s of our adapter's rollouts (Gaussian policy, fresh resets) per backend."""
    from zopg.envs.brax_env import BACKENDS
    from zopg.rollout import rollout_batch

    rows = []
    for env_id in BACKEND_ENVS:
        for backend in BACKENDS:
            row = {"env": env_id, "backend": backend, "num_envs": BACKEND_BATCH}
            try:
                env, params = make(env_id, backend=backend, horizon=BACKEND_HORIZON)
                policy = make_policy("gaussian", env, params, hidden_sizes=(16,))
                theta = policy.init(jax.random.key(0))

                def run(i, env=env, params=params, policy=policy, theta=theta):
                    key = jax.random.key(100 + i)
                    traj = rollout_batch(key, policy, theta, env, params, BACKEND_BATCH)
                    return traj.reward

                start = time.perf_counter()
                rewards = jax.block_until_ready(run(-1))
                row["compile_and_first_s"] = time.perf_counter() - start
                times = _report.time_repeats(run, repeats, warmup=0)
                row.update(_report.rate_summary(times, BACKEND_BATCH * BACKEND_HORIZON))
                row["finite"] = bool(np.all(np.isfinite(np.asarray(rewards))))
            except Exception as err:  # a backend that fails here is recorded, not fatal
                row["error"] = f"{type(err).__name__}: {err}"[:500]
            print(json.dumps({k: v for k, v in row.items() if not k.endswith("_all")}), flush=True)
            rows.append(row)
    return {
        "what": (
            f"env steps/s of rollout_batch over {BACKEND_BATCH} envs x {BACKEND_HORIZON} steps, "
            "Gaussian MLP (16,) policy, explicit resets, median of repeats after compiling"
        ),
        "rows": rows,
    }


# -- ZPG runs --------------------------------------------------------------------------------
# CartPole: our choice. BT(scale=20) is a teacher who confuses episodes ~20 steps apart
# (σ(1) = 0.73) but reliably orders 100 vs 500; returns differ by up to 500, so scale 1 would
# make every vote a hard sign. r_max = 60 = 3 scales ≈ scale·logit(1 - 1/(2M)) for M = 10: the
# largest difference M votes can resolve before p̂ saturates at 0 or 1.
CARTPOLE_RUNS = {
    "zpg": dict(
        hidden=(16,), scale=20.0, r_max=60.0, num_pairs=4, num_queries=5, num_iterations=300,
        mu=1.0, step_size=0.05, optimizer="adam", two_sided=True, seeds=10, chunk=25,
    ),
    "zpg_one_vote": dict(
        hidden=(16,), scale=20.0, r_max=60.0, num_pairs=1, num_queries=1, num_iterations=1000,
        mu=1.0, step_size=0.05, optimizer="adam", two_sided=True, seeds=10, chunk=100,
    ),
}  # fmt: skip
# inverted_pendulum: +1 per step until the pole tilts past 0.2 rad, so returns lie in 0..250 at
# the default horizon, like CartPole's 0..500: the same teacher scale and trimming apply.
_BRAX_ZPG = dict(
    hidden=(16,), scale=20.0, r_max=60.0, num_pairs=4, num_queries=5, num_iterations=300,
    mu=1.0, step_size=0.05, optimizer="adam", two_sided=True, seeds=5, chunk=50,
)  # fmt: skip
BRAX_RUNS = {
    "zpg": dict(_BRAX_ZPG, env="brax/inverted_pendulum", backend="positional"),
    # The same run on spring, the fastest backend: it shows why spring is not the default.
    "zpg_spring_backend": dict(_BRAX_ZPG, env="brax/inverted_pendulum", backend="spring"),
}
EVAL_EPISODES = 100
NOTES = {
    "cartpole": (
        "ZPG (algorithms.md §3) with two-sided sphere directions (θ ± μv, one direction per "
        "iteration, N pairs) fed to Adam as ascent. Teacher: Bradley–Terry on the masked return "
        "with scale 20 (σ(1) = 0.73 for episodes 20 steps apart), learner trims at r_max = 60 "
        "(≈ scale·logit(1 − 1/(2M)) for M = 10, the largest difference a few votes resolve). "
        "Returns differ by up to 500, so scale 1 would make every vote a hard sign. With M = 1 "
        "(zpg_one_vote) p̂ ∈ {0, 1}, so Δ̂ = ±r_max: a sign-based step. One-sided perturbations "
        "and plain SGD also learn but were slower at equal budget in our sweep. Returns: mean "
        "over fresh episodes of the stochastic policy, median over seeds."
    ),
    "brax": (
        "Same ZPG settings on brax/inverted_pendulum (+1 per step until |angle| > 0.2, horizon "
        "250), Gaussian MLP policy with clipped actions. zpg_spring_backend repeats the run on "
        "the spring backend, fastest but worse for this task (see zopg/envs/brax_env.py)."
    ),
    "backends": "Decides zopg.envs.brax_env.DEFAULT_BACKEND.",
}


def run_zpg(
    env_id: str,
    policy_name: str,
    spec: dict,
    overrides: dict | None = None,
    target: float | None = None,
) -> dict:
    """Train `spec["seeds"]` seeds in chunks; after each chunk, MC-evaluate every seed."""
    env, params = make(env_id, **(overrides or {}))
    policy = make_policy(policy_name, env, params, hidden_sizes=spec["hidden"])
    oracle = Oracle(link=BradleyTerry(scale=spec["scale"]))
    config = ZPGConfig(
        num_iterations=spec["num_iterations"],
        num_pairs=spec["num_pairs"],
        num_queries=spec["num_queries"],
        step_size=spec["step_size"],
        mu=spec["mu"],
        two_sided=spec["two_sided"],
        r_max=spec["r_max"],
        optimizer=spec["optimizer"],
    )
    trainer = make_trainer(config, env, policy, oracle)
    seeds, chunk = spec["seeds"], spec["chunk"]
    keys = jax.random.split(jax.random.key(0), seeds)
    carry = jax.jit(jax.vmap(trainer.init))(keys)
    run = jax.jit(
        lambda carry, start, length: jax.vmap(lambda c: trainer.run(c, start, length))(carry),
        static_argnums=2,
    )
    final = jax.jit(jax.vmap(trainer.final_params))

    @jax.jit
    def evaluate_all(key, theta):
        keys = jax.random.split(key, seeds)
        return jax.vmap(lambda k, th: evaluate(k, policy, th, env, params, EVAL_EPISODES))(
            keys, theta
        )

    eval_key = jax.random.key(1)
    curve, eval_s = [], 0.0

    def checkpoint(iteration, queries, env_steps):
        nonlocal eval_s
        start = time.perf_counter()
        mean, stderr = evaluate_all(jax.random.fold_in(eval_key, iteration), final(carry))
        mean, stderr = np.asarray(mean), np.asarray(stderr)
        eval_s += time.perf_counter() - start
        point = {
            "iteration": iteration,
            "queries": queries,
            "env_steps_per_seed": env_steps,
            "median_return": float(np.median(mean)),
            "mean_return": mean.tolist(),
            "stderr": stderr.tolist(),
        }
        curve.append(point)
        print(json.dumps({k: point[k] for k in ("iteration", "queries", "median_return")}))

    checkpoint(0, 0, 0)
    chunk_s = []
    for start in range(0, config.num_iterations, chunk):
        length = min(chunk, config.num_iterations - start)
        tic = time.perf_counter()
        carry, metrics = run(carry, start, length)
        jax.block_until_ready(carry)
        chunk_s.append(time.perf_counter() - tic)
        queries = int(metrics["budget/queries"][0, -1])
        checkpoint(start + length, queries, int(metrics["budget/env_steps"][0, -1]))

    first = None
    if target is not None:
        first = next((p for p in curve if p["median_return"] >= target), None)
    theta_count = num_params(policy.init(jax.random.key(0)))
    return {
        "env": env_id,
        "env_overrides": overrides or {},
        "policy": f"{policy_name} hidden={list(spec['hidden'])} (d = {theta_count})",
        "oracle": f"BradleyTerry(scale={spec['scale']}), teacher without imperfections",
        "config": {k: v for k, v in spec.items() if k not in ("hidden", "scale")},
        "eval_episodes_per_seed": EVAL_EPISODES,
        "queries_per_seed": curve[-1]["queries"],
        "initial_median_return": curve[0]["median_return"],
        "final_median_return": curve[-1]["median_return"],
        "final_returns_per_seed": curve[-1]["mean_return"],
        "target_median_return": target,
        "first_checkpoint_median_ge_target": first
        and {"iteration": first["iteration"], "queries": first["queries"]},
        "wall_s": _wall_summary(chunk_s, chunk, config.num_iterations, eval_s),
        "curve": curve,
    }


def _wall_summary(chunk_s: list[float], chunk: int, iterations: int, eval_s: float) -> dict:
    """Training wall time with all seeds vmapped; the first chunk also compiles."""
    steady = float(np.median(chunk_s[1:])) if len(chunk_s) > 1 else chunk_s[0]
    return {
        "train_all_seeds_vmapped": sum(chunk_s),
        "first_chunk_incl_compile": chunk_s[0],
        "compile_estimate": max(chunk_s[0] - steady, 0.0),
        "train_excl_compile_estimate": steady * iterations / chunk,
        "per_chunk": chunk_s,
        "evaluation_incl_compile": eval_s,
    }


def measure_cartpole() -> dict:
    out = {}
    for name, spec in CARTPOLE_RUNS.items():
        out[name] = run_zpg("gymnax/CartPole-v1", "mlp", spec, target=TARGET_CARTPOLE)
    return {"runs": out}


def measure_brax() -> dict:
    out = {}
    for name, spec in BRAX_RUNS.items():
        spec = dict(spec)
        env_id, backend = spec.pop("env"), spec.pop("backend")
        out[name] = run_zpg(env_id, "gaussian", spec, {"backend": backend})
    return {"runs": out}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=SECTIONS, action="append", help="sections to run")
    args = parser.parse_args(argv)
    sections = args.only or list(SECTIONS)
    measure = {"backends": measure_backends, "cartpole": measure_cartpole, "brax": measure_brax}
    for section in sections:
        start = time.perf_counter()
        load_before = os.getloadavg()
        result = measure[section]()
        result["section_wall_s"] = time.perf_counter() - start
        result["notes"] = NOTES[section]
        # The CPU is shared: other jobs' load inflates wall times, so it is recorded with them.
        result["load_average_1m_before_after"] = [load_before[0], os.getloadavg()[0]]
        result["command"] = f".venv/bin/python benchmarks/control_probe.py --only {section}"
        result["timestamp"] = _report.timestamp()
        result["environment"] = _report.environment()
        data = json.loads(OUT.read_text()) if OUT.exists() else {}
        data[section] = result
        _report.write_json_atomic(OUT, data)
        print(f"wrote {section} to {OUT}", flush=True)


if __name__ == "__main__":
    main()
