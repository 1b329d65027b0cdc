"""Control probe: brax backend speeds, ZPG on gymnax CartPole-v1 and on brax inverted_pendulum.

Writes results/control_probe.json atomically; each section (--only) replaces its own entry and
keeps the others, so sections can be re-run one at a time. Run from the repository root:

    .venv/bin/python benchmarks/control_probe.py                 # every section
    .venv/bin/python benchmarks/control_probe.py --only cartpole
"""

from __future__ import annotations

import argparse
import json
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
BRAX_RUNS = {
    "zpg": dict(
        env="brax/inverted_pendulum", hidden=(16,), scale=20.0, r_max=60.0, num_pairs=4,
        num_queries=5, num_iterations=200, mu=1.0, step_size=0.05, optimizer="adam",
        two_sided=True, seeds=5, chunk=25,
    ),
}  # fmt: skip
EVAL_EPISODES = 100


def run_zpg(env_id: str, policy_name: str, spec: dict, overrides: dict | None = None) -> dict:
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
    curve, train_s, eval_s = [], 0.0, 0.0

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
    first_chunk_s = None
    for start in range(0, config.num_iterations, chunk):
        length = min(chunk, config.num_iterations - start)
        tic = time.perf_counter()
        carry, metrics = run(carry, start, length)
        jax.block_until_ready(carry)
        elapsed = time.perf_counter() - tic
        first_chunk_s = elapsed if first_chunk_s is None else first_chunk_s
        train_s += elapsed
        queries = int(metrics["budget/queries"][0, -1])
        checkpoint(start + length, queries, int(metrics["budget/env_steps"][0, -1]))

    first = next((p for p in curve if p["median_return"] >= TARGET_CARTPOLE), None)
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
        "first_checkpoint_median_ge_450": first
        and {"iteration": first["iteration"], "queries": first["queries"]},
        "wall_s": {
            "train_all_seeds_vmapped": train_s,
            "first_chunk_incl_compile": first_chunk_s,
            "evaluation": eval_s,
        },
        "curve": curve,
    }


def measure_cartpole() -> dict:
    return {
        name: run_zpg("gymnax/CartPole-v1", "mlp", spec) for name, spec in CARTPOLE_RUNS.items()
    }


def measure_brax() -> dict:
    out = {}
    for name, spec in BRAX_RUNS.items():
        spec = dict(spec)
        env_id = spec.pop("env")
        out[name] = run_zpg(env_id, "gaussian", spec)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=SECTIONS, action="append", help="sections to run")
    args = parser.parse_args(argv)
    sections = args.only or list(SECTIONS)
    measure = {"backends": measure_backends, "cartpole": measure_cartpole, "brax": measure_brax}
    for section in sections:
        start = time.perf_counter()
        result = measure[section]()
        result["section_wall_s"] = time.perf_counter() - start
        result["command"] = f".venv/bin/python benchmarks/control_probe.py --only {section}"
        result["timestamp"] = _report.timestamp()
        result["environment"] = _report.environment()
        data = json.loads(OUT.read_text()) if OUT.exists() else {}
        data[section] = result
        _report.write_json_atomic(OUT, data)
        print(f"wrote {section} to {OUT}", flush=True)


if __name__ == "__main__":
    main()
