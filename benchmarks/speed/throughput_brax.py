"""Throughput section `brax_backends`: env steps/s of our brax adapter's rollouts per physics
backend; it decides zopg.envs.brax_env.DEFAULT_BACKEND."""

from __future__ import annotations

import json
import time

import jax
import numpy as np

import zopg.envs
import zopg.policies
from benchmarks.speed import timing
from zopg.rollout import rollout_batch

BACKEND_BATCH = 128
BACKEND_HORIZON = 100
BACKEND_HIDDEN = (16,)
# Each (env, backend) pair compiles for 14-42 s on the 2-core CPU, so --quick measures only the
# default backend on the cheaper env: it checks the code path, not the choice of default.
BACKEND_SIZES = {
    "full": {"envs": ("brax/inverted_pendulum", "brax/hopper"), "backends": None, "repeats": 3},
    "quick": {"envs": ("brax/inverted_pendulum",), "backends": "default", "repeats": 2},
}
NOTES = "Decides zopg.envs.brax_env.DEFAULT_BACKEND (the reasoning is in that module)."


def backend_row(env_id: str, backend: str, repeats: int) -> dict:
    """One (env, backend) rollout rate; a backend that fails is recorded with its error."""
    row = {"env": env_id, "backend": backend, "num_envs": BACKEND_BATCH}
    try:
        env, params = zopg.envs.make(env_id, backend=backend, horizon=BACKEND_HORIZON)
        policy = zopg.policies.make_policy("gaussian", env, params, hidden_sizes=BACKEND_HIDDEN)
        theta = policy.init(jax.random.key(0))

        def run(i):
            traj = rollout_batch(jax.random.key(100 + i), policy, theta, env, params, BACKEND_BATCH)
            return traj.reward

        # The first call compiles; brax compiles are long enough to be worth recording apart.
        start = time.perf_counter()
        rewards = jax.block_until_ready(run(-1))
        row["compile_and_first_s"] = time.perf_counter() - start
        times = timing.time_repeats(run, repeats, warmup=0)
        row.update(timing.rate_summary(times, BACKEND_BATCH * BACKEND_HORIZON))
        row["finite"] = bool(np.all(np.isfinite(np.asarray(rewards))))
    except Exception as err:  # a backend that fails here is recorded, not fatal
        row["error"] = f"{type(err).__name__}: {err}"[:500]
    return row


def brax_backends(quick: bool) -> dict:
    """Env steps/s of rollout_batch (Gaussian policy, fresh resets) per env and backend."""
    from zopg.envs.brax_env import BACKENDS, DEFAULT_BACKEND  # imports brax: only when measured

    size = BACKEND_SIZES["quick" if quick else "full"]
    backends = (DEFAULT_BACKEND,) if size["backends"] == "default" else BACKENDS
    rows = []
    for env_id in size["envs"]:
        for backend in backends:
            row = backend_row(env_id, backend, size["repeats"])
            # Minutes of compiling: show each row as it lands.
            print(json.dumps({k: v for k, v in row.items() if not k.endswith("_all")}), flush=True)
            rows.append(row)
    return {
        "description": (
            f"env steps/s of rollout_batch over {BACKEND_BATCH} envs x {BACKEND_HORIZON} steps, "
            "Gaussian MLP (16,) policy, explicit resets, median of repeats after compiling"
        ),
        "config": {
            "envs": list(size["envs"]),
            "backends": list(backends),
            "num_envs": BACKEND_BATCH,
            "horizon": BACKEND_HORIZON,
            "policy": f"gaussian hidden={list(BACKEND_HIDDEN)}",
            "repeats": size["repeats"],
        },
        "rows": rows,
        "notes": NOTES,
    }


def print_brax(result: dict) -> None:
    print(f"{'env':24} {'backend':12} {'env steps/s':>12} {'compile+first':>14}")
    for row in result["rows"]:
        rate = f"{row['steps_per_s']:12.3e}" if "steps_per_s" in row else f"{'error':>12}"
        first = row.get("compile_and_first_s")
        first = f"{first:13.1f}s" if first is not None else ""
        print(f"{row['env']:24} {row['backend']:12} {rate} {first:>14}")
    print(f"note: {result['notes']}")
