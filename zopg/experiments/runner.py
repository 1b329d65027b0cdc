"""Run an experiment: seeds vmapped and sharded over devices, chunked, checkpointed, resumable."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from zopg.evaluation import evaluate
from zopg.exact import optimal_value, policy_value
from zopg.experiments import store
from zopg.experiments.progress import Progress
from zopg.experiments.schema import Experiment, LinkSpec, build_run

SEED_BASE = 0  # seed i of every run uses jax.random.key(SEED_BASE + i)... split, see seed_keys
EVAL_SEED = 1  # Monte Carlo evaluation keys: independent of every training key


def seed_keys(num_seeds: int):
    """One key per seed; shared by all runs so methods see the same seeds."""
    return jax.random.split(jax.random.key(SEED_BASE), num_seeds)


def seed_sharding(num_seeds: int):
    """Shard the seed axis over every visible device when it divides evenly, else one device."""
    devices = jax.devices()
    if len(devices) > 1 and num_seeds % len(devices) == 0:
        # Auto axes: XLA propagates the layout; the algorithms need not know about sharding.
        mesh = jax.make_mesh((len(devices),), ("seeds",), axis_types=(jax.sharding.AxisType.Auto,))
        return NamedSharding(mesh, PartitionSpec("seeds"))
    return None


def logged_iterations(num_iterations: int, points: int) -> np.ndarray:
    """Evenly spread iteration indices to keep (always the first and the last)."""
    return np.unique(
        np.linspace(0, num_iterations - 1, min(points, num_iterations)).round()
    ).astype(np.int64)


def chunk_length(num_iterations: int, target: int) -> int:
    """The largest divisor of T not above `target`, so every chunk has one compiled shape; if
    that divisor is tiny (T prime, say) use `target` and accept one extra compile for the tail."""
    target = max(1, min(target, num_iterations))
    for length in range(target, 0, -1):
        if num_iterations % length == 0:
            return length if length * 4 >= target else target
    return target


def schedule(num_iterations: int, evaluation, exact: bool) -> tuple[int, np.ndarray]:
    """(chunk length, logged iterations). With an exact value every iteration's metrics are
    available, so `points` of them are kept. Without one, the policy is evaluated by Monte Carlo
    after each chunk, so chunks are shortened to give about `points` evaluations, and the logged
    iterations are the chunk ends."""
    if exact:
        chunk = chunk_length(num_iterations, evaluation.chunk_iterations)
        return chunk, logged_iterations(num_iterations, evaluation.points)
    target = min(evaluation.chunk_iterations, max(1, num_iterations // evaluation.points))
    chunk = chunk_length(num_iterations, target)
    ends = np.minimum(np.arange(chunk, num_iterations + chunk, chunk), num_iterations) - 1
    return chunk, ends.astype(np.int64)


def make_evaluator(trainer, policy, env, env_params, num_seeds: int, episodes: int):
    """(carry, iteration) -> {"eval/return", "eval/return_se"}: [seeds] Monte Carlo returns of
    each seed's current policy over `episodes` fresh episodes (keys from EVAL_SEED, the seed and
    the iteration, so a resumed run evaluates exactly as an uninterrupted one)."""
    seed_eval_keys = jax.random.split(jax.random.key(EVAL_SEED), num_seeds)

    @jax.jit
    def evaluator(carry, iteration):
        params = jax.vmap(trainer.final_params)(carry)
        keys = jax.vmap(lambda k: jax.random.fold_in(k, iteration))(seed_eval_keys)
        mean, stderr = jax.vmap(lambda k, p: evaluate(k, policy, p, env, env_params, episodes))(
            keys, params
        )
        return {"eval/return": mean, "eval/return_se": stderr}

    return evaluator


REWARD_ACCESS = LinkSpec(name="reward-access", params={})


def run_id(method: str, env_slug: str, link: str) -> str:
    return f"{method}__{env_slug}__{link}"


def run_hash(experiment: Experiment, env_spec, link_spec, method, config) -> str:
    """Everything that determines a run's numbers; a finished run with this hash is reused.

    Fields added later enter only when set, so runs finished before they existed keep their
    hash."""
    fields = (
        {k: (repr(v) if callable(v) else v) for k, v in dataclasses.asdict(config).items()}
        if dataclasses.is_dataclass(config)
        else repr(config)
    )
    identity = {
        "seeds": experiment.seeds,
        "policy": experiment.policy,
        "policy_params": experiment.policy_params,
        "teacher": experiment.teacher,
        "points": experiment.evaluation.points,
        "env": _set_fields(env_spec),
        "link": dataclasses.asdict(link_spec),
        "method": _set_fields(method),
        "config": fields,
        "seed_base": SEED_BASE,
    }
    if not hasattr(build_env(env_spec), "tabular_model"):
        identity["episodes"] = experiment.evaluation.episodes
        identity["eval_seed"] = EVAL_SEED
    text = json.dumps(identity, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _set_fields(spec) -> dict:
    return {k: v for k, v in dataclasses.asdict(spec).items() if v is not None}


def build_env(env_spec):
    from zopg.envs import make

    return make(env_spec.id, **env_spec.overrides)[0]


def reference_values(env, env_params, policy):
    """(V of the uniform policy, V*) for tabular environments, else (nan, nan)."""
    if not hasattr(env, "tabular_model"):
        return float("nan"), float("nan")
    model = env.tabular_model(env_params)
    num_states = model.transition.shape[0]
    uniform = jnp.full((num_states, env.num_actions), 1.0 / env.num_actions)
    return float(policy_value(model, uniform)), float(optimal_value(model))


def execute_run(
    trainer,
    num_seeds: int,
    chunk: int,
    keep: np.ndarray,
    ckpt: Path,
    label: str,
    quiet: bool,
    run_key: str,
    evaluator=None,
) -> dict:
    """Run all iterations in chunks, keeping metrics at `keep`; resume from `ckpt` if present.

    With an `evaluator` (see make_evaluator) the policy is evaluated before the first iteration
    and after every chunk; `keep` must then be the chunk ends."""
    total = trainer.num_iterations
    keys = seed_keys(num_seeds)
    sharding = seed_sharding(num_seeds)
    if sharding is not None:
        keys = jax.device_put(keys, sharding)
    init = jax.jit(jax.vmap(trainer.init))
    run = jax.jit(jax.vmap(trainer.run, in_axes=(0, None, None)), static_argnums=2)

    def fresh_carry():
        carry = init(keys)
        # Every leaf has the seed axis first; shard them all alike (init may leave some
        # replicated, and vmap needs one layout for the mapped axis).
        return carry if sharding is None else jax.device_put(carry, sharding)

    carry = fresh_carry()
    start, kept, elapsed, compile_s, eval_s, initial = 0, {}, 0.0, 0.0, 0.0, None
    if ckpt.exists():
        try:
            carry, payload = store.load_checkpoint(ckpt, carry)
        except (ValueError, EOFError, KeyError):
            payload = None  # unreadable or foreign: start over
        if payload is not None and payload.get("run_key") == run_key:
            start, kept = payload["start"], payload["kept"]
            elapsed, compile_s = payload["run_s"], payload["compile_s"]
            eval_s, initial = payload.get("eval_s", 0.0), payload.get("initial")
        else:
            carry = fresh_carry()
    compiled = {}

    def run_evaluator(iteration):
        nonlocal eval_s
        t0 = time.perf_counter()
        # iteration + 1: the initial policy is "iteration -1" and fold_in wants data >= 0.
        result = jax.device_get(evaluator(carry, jnp.int32(iteration + 1)))
        eval_s += time.perf_counter() - t0
        return {name: np.asarray(values) for name, values in result.items()}

    if evaluator is not None and initial is None:
        initial = run_evaluator(-1)
    progress = Progress(total, label, enabled=not quiet, done=start)
    while start < total:
        length = min(chunk, total - start)
        if length not in compiled:
            t0 = time.perf_counter()
            compiled[length] = run.lower(carry, jnp.int32(start), length).compile()
            compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        carry, metrics = compiled[length](carry, jnp.int32(start))
        metrics = jax.device_get(metrics)
        elapsed += time.perf_counter() - t0
        # Keep only the logged iterations: memory does not grow with T.
        local = keep[(keep >= start) & (keep < start + length)] - start
        for name, values in metrics.items():
            kept.setdefault(name, []).append(np.asarray(values)[:, local])
        if evaluator is not None:
            if local.tolist() != [length - 1]:
                raise ValueError("with an evaluator, keep must be the chunk ends")
            for name, values in run_evaluator(start + length - 1).items():
                kept.setdefault(name, []).append(values[:, None])
        start += length
        store.save_checkpoint(
            ckpt,
            carry,
            {
                "run_key": run_key,
                "start": start,
                "kept": kept,
                "run_s": elapsed,
                "compile_s": compile_s,
                "eval_s": eval_s,
                "initial": initial,
            },
        )
        progress.update(start)
    progress.close()
    metrics = {name: np.concatenate(parts, axis=1) for name, parts in kept.items()}
    return {
        "metrics": metrics,
        "run_s": elapsed,
        "compile_s": compile_s,
        "eval_s": eval_s,
        "initial": initial,
    }


def run_experiment(experiment: Experiment, out_dir, quiet: bool = False, log=None) -> dict:
    """Run every (env, link, method) of the experiment into out_dir; returns the summary."""
    from zopg.experiments.report import write_reports

    log = log or (lambda msg: None if quiet else print(msg, file=sys.stderr))
    out_dir = Path(out_dir)
    runs_dir = out_dir / "runs"
    started = time.perf_counter()
    records = []
    num_devices = len(jax.devices())
    if seed_sharding(experiment.seeds) is None and num_devices > 1:
        log(f"{experiment.seeds} seeds do not divide over {num_devices} devices: one device used")
    for env_spec in experiment.envs:
        for link_spec in experiment.links:
            for method in experiment.methods:
                if not method.runs_on(env_spec.id):
                    continue
                env, env_params, policy, _, algo, config, trainer = build_run(
                    experiment, env_spec, link_spec, method
                )
                # References never see the teacher, so one run per env serves every link.
                run_link = REWARD_ACCESS if algo.reference else link_spec
                rid = run_id(method.label, env_spec.slug, run_link.name)
                rhash = run_hash(experiment, env_spec, run_link, method, config)
                exact = hasattr(env, "tabular_model")
                chunk, keep = schedule(trainer.num_iterations, experiment.evaluation, exact)
                done_meta = runs_dir / f"{rid}.json"
                done_data = runs_dir / f"{rid}.npz"
                if any(done == rid for done, _ in records):
                    pass  # a reference already run for this env under another link
                elif (
                    done_meta.exists()
                    and done_data.exists()
                    and (store.read_json(done_meta).get("run_hash") == rhash)
                ):
                    log(f"{rid}: finished earlier, skipped")
                else:
                    evaluator = None
                    if not exact:
                        evaluator = make_evaluator(
                            trainer,
                            policy,
                            env,
                            env_params,
                            experiment.seeds,
                            experiment.evaluation.episodes,
                        )
                    result = execute_run(
                        trainer,
                        experiment.seeds,
                        chunk,
                        keep,
                        runs_dir / f"{rid}.ckpt",
                        rid,
                        quiet,
                        rhash,
                        evaluator,
                    )
                    buffer = _npz_bytes(keep, result["metrics"])
                    store.write_bytes_atomic(done_data, buffer)
                    v_uniform, v_star = reference_values(env, env_params, policy)
                    store.write_json_atomic(
                        done_meta,
                        {
                            "run_hash": rhash,
                            "method": method.label,
                            "algorithm": method.algorithm,
                            "reference": algo.reference,
                            "env": env_spec.id,
                            "link": link_spec.name,
                            "num_iterations": trainer.num_iterations,
                            "chunk_iterations": chunk,
                            "seeds": experiment.seeds,
                            "devices": len(jax.devices()),
                            "compile_s": result["compile_s"],
                            "run_s": result["run_s"],
                            "eval_s": result["eval_s"],
                            "evaluation": "exact" if exact else "monte-carlo",
                            "eval_episodes": None if exact else experiment.evaluation.episodes,
                            "initial_return": _listed(result["initial"], "eval/return"),
                            "initial_return_se": _listed(result["initial"], "eval/return_se"),
                            "uniform_value": v_uniform,
                            "optimal_value": v_star,
                            "config": {
                                k: (repr(v) if callable(v) else v)
                                for k, v in dataclasses.asdict(config).items()
                            },
                        },
                    )
                    (runs_dir / f"{rid}.ckpt").unlink(missing_ok=True)
                    log(
                        f"{rid}: {trainer.num_iterations} iterations x {experiment.seeds} seeds, "
                        f"compile {result['compile_s']:.1f}s, run {result['run_s']:.1f}s"
                    )
                records.append((rid, link_spec.name))
    return write_reports(experiment, out_dir, records, time.perf_counter() - started)


def _listed(values: dict | None, name: str):
    return None if values is None else [float(x) for x in values[name]]


def _npz_bytes(iterations, metrics) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, __iterations__=iterations, **{k.replace("/", "__"): v for k, v in metrics.items()}
    )
    return buffer.getvalue()


def load_run(runs_dir: Path, rid: str) -> dict:
    meta = store.read_json(runs_dir / f"{rid}.json")
    with np.load(runs_dir / f"{rid}.npz") as data:
        iterations = data["__iterations__"]
        metrics = {k.replace("__", "/"): data[k] for k in data.files if k != "__iterations__"}
    return {**meta, "iterations": iterations, "metrics": metrics}
