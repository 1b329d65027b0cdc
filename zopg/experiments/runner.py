"""Run an experiment: seeds vmapped and sharded over devices, in segments that end at the logged
iterations, evaluated there, checkpointed, resumable.

The policy is evaluated (zopg.evaluation) before the first iteration and after every logged
iteration, outside the scan and outside the budget. Segments run with traced bounds, so one
compilation serves every segment length. The run is checkpointed at the first segment end after
every `chunk_iterations` iterations; a killed run resumes there with identical numbers, and a
finished run is skipped.
"""

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

from zopg import store
from zopg.errors import ConfigError
from zopg.evaluation import make_evaluator
from zopg.experiments.build import BuiltRun, built_runs
from zopg.experiments.memory import check_fits
from zopg.experiments.progress import Progress
from zopg.experiments.schema import Experiment, LinkSpec
from zopg.experiments.shards import RunLock, Shard

SEED_BASE = 0  # seed i of every run uses split(key(SEED_BASE), seeds)[i], see seed_keys
EVAL_SEED = 1  # Monte Carlo evaluation keys: independent of every training key
REWARD_ACCESS = LinkSpec(name="reward-access", params={})


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


def make_seed_evaluator(training, evaluator, num_seeds: int):
    """(carry, iteration, reference) -> {"eval/value", "eval/value_se"}: [seeds] values of each
    seed's current policy, and with an exact evaluator "eval/kl_to_reference", the exact
    trajectory KL of each seed's policy to `reference` (that seed's initial policy params, as
    `reference_params` gives them); on a token environment, the per-prefix estimate of the
    sequence KL on the value's own sequences. Monte Carlo keys come from EVAL_SEED, the seed and the
    iteration, so a resumed run evaluates exactly as an uninterrupted one."""
    seed_eval_keys = jax.random.split(jax.random.key(EVAL_SEED), num_seeds)

    @jax.jit
    def evaluate_seeds(carry, iteration, reference=None):
        params = jax.vmap(training.final_params)(carry)
        keys = jax.vmap(lambda k: jax.random.fold_in(k, iteration))(seed_eval_keys)
        value, stderr = jax.vmap(evaluator.value)(keys, params)
        out = {"eval/value": value, "eval/value_se": stderr}
        if evaluator.kl_to_reference is not None and reference is not None:
            out["eval/kl_to_reference"] = jax.vmap(evaluator.kl_to_reference)(params, reference)
        elif evaluator.kl_estimate is not None and reference is not None:
            kl = jax.vmap(evaluator.kl_estimate)(keys, params, reference)
            out["eval/kl_to_reference"] = kl
        return out

    return evaluate_seeds


def reference_params(training, fresh_carry):
    """Each seed's initial policy params (π_ref of the KL to the reference), from a freshly
    initialised carry: init is a function of the seed key, so a resumed run gets the same."""
    return jax.vmap(training.final_params)(fresh_carry)


@dataclasses.dataclass
class Timing:
    """Seconds spent, by phase. init_s: compiling and running every seed's init (a trainer's
    work before iteration 0, such as a reward model fitted once, lands here, not in eval_s)."""

    compile_s: float = 0.0
    run_s: float = 0.0
    eval_s: float = 0.0
    init_s: float = 0.0


def execute_run(
    training,
    evaluate_seeds,
    keys,
    logged: np.ndarray,
    chunk_iterations: int,
    ckpt: Path | None,
    label: str,
    quiet: bool,
    run_key: str,
    log=None,
) -> dict:
    """Run every iteration for every seed key, keeping metrics and evaluations at `logged`.

    Returns {"metrics": name -> [seeds, len(logged)], "initial": the evaluation before the first
    iteration (name -> [seeds]), "timing": Timing}. With `ckpt`, resumes from it when it holds
    this run (`run_key`) and checkpoints there as it goes.
    """
    total = training.num_iterations
    sharding = seed_sharding(len(keys))
    if sharding is not None:
        keys = jax.device_put(keys, sharding)
    init = jax.jit(jax.vmap(training.init))
    advance = jax.jit(jax.vmap(training.advance, in_axes=(0, None, None)))

    def fresh_carry():
        carry = init(keys)
        # Every leaf has the seed axis first; shard them all alike (init may leave some
        # replicated, and vmap needs one layout for the mapped axis).
        return carry if sharding is None else jax.device_put(carry, sharding)

    t0 = time.perf_counter()
    # Waited for here: dispatch is asynchronous, and the first evaluation would otherwise be
    # charged with init's work.
    carry = jax.block_until_ready(fresh_carry())
    start, kept, timing, initial = 0, {}, Timing(init_s=time.perf_counter() - t0), None
    reference = reference_params(training, carry)
    if ckpt is not None and ckpt.exists():
        try:
            loaded, payload, loaded_kept = store.load_checkpoint(ckpt, carry)
        except store.CHECKPOINT_ERRORS as err:
            payload = None  # unreadable or foreign: start over
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            if log is not None:
                log(f"{label}: checkpoint {ckpt.name} unreadable ({reason}); starting over")
        if payload is not None and payload.get("run_key") == run_key:
            carry, start = loaded, payload["start"]
            kept = {name: [values] for name, values in loaded_kept.items()}
            # Phases add up over invocations, this one's init included.
            resumed = Timing(**payload["timing"])
            resumed.init_s += timing.init_s
            timing = resumed
            initial = {k: np.asarray(v) for k, v in payload["initial"].items()}

    def evaluate(iteration):
        t0 = time.perf_counter()
        # iteration + 1: the initial policy is "iteration -1" and fold_in wants data >= 0.
        result = jax.device_get(evaluate_seeds(carry, jnp.int32(iteration + 1), reference))
        timing.eval_s += time.perf_counter() - t0
        return {name: np.asarray(values) for name, values in result.items()}

    if initial is None:
        initial = evaluate(-1)
    compiled, last_checkpoint = None, start
    progress = Progress(total, label, enabled=not quiet, done=start)
    for iteration in logged[logged >= start]:
        stop = int(iteration) + 1
        if compiled is None:
            t0 = time.perf_counter()
            compiled = advance.lower(carry, jnp.int32(start), jnp.int32(stop)).compile()
            timing.compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        carry, metrics = compiled(carry, jnp.int32(start), jnp.int32(stop))
        metrics = jax.device_get(metrics)
        timing.run_s += time.perf_counter() - t0
        metrics.update(evaluate(iteration))
        for name, values in metrics.items():
            kept.setdefault(name, []).append(np.asarray(values)[:, None])
        start = stop
        if ckpt is not None and (start - last_checkpoint >= chunk_iterations or start == total):
            payload = {
                "run_key": run_key,
                "start": start,
                "timing": dataclasses.asdict(timing),
                "initial": initial,
            }
            store.save_checkpoint(ckpt, carry, payload, _joined(kept))
            last_checkpoint = start
        progress.update(start)
    progress.close()
    return {"metrics": _joined(kept), "initial": initial, "timing": timing}


def _joined(kept: dict) -> dict:
    """name -> [seeds, points so far] from the per-segment columns."""
    return {name: np.concatenate(columns, axis=1) for name, columns in kept.items()}


def train_seeds(training, keys, logged, evaluator=None, label: str = "", quiet: bool = True):
    """Programmatic runs (rate sweeps, probes): every seed key trained through execute_run, no
    checkpoint; the evaluator defaults to the problem's (exact, else 100 Monte Carlo episodes)."""
    problem = training.problem
    if evaluator is None:
        evaluator = make_evaluator(problem.env, problem.env_params, problem.policy)
    evaluate_seeds = make_seed_evaluator(training, evaluator, len(keys))
    logged = np.asarray(logged, dtype=np.int64)
    return execute_run(
        training, evaluate_seeds, keys, logged, training.num_iterations, None, label, quiet, ""
    )


# The longest run id whose files (<id>.json.lock, the longest) a file system takes: 255 bytes.
MAX_RUN_ID_BYTES = 240


def run_id(method: str, env_slug: str, link: str, point: dict) -> str:
    swept = "".join(f"__{k}={_slug(v)}" for k, v in point.items())
    rid = f"{method}__{env_slug}__{link}{swept}"
    if any(ord(c) < 32 or ord(c) == 127 for c in rid):
        raise ConfigError(f"run id {rid!r}: a sweep value has a control character")
    if len(rid.encode()) > MAX_RUN_ID_BYTES:
        # Only a long swept value can get here (labels are at most 64 bytes each).
        raise ConfigError(
            f"run id {rid[:60]!r}... is {len(rid.encode())} bytes; file names allow "
            f"{MAX_RUN_ID_BYTES}: use shorter sweep values or labels (sweep label = ...)"
        )
    return rid


def _slug(value) -> str:
    return str(value).replace("/", "-").replace(" ", "")


def run_hash(experiment: Experiment, env_spec, link_spec, method, config, evaluator) -> str:
    """Everything that determines a run's numbers; a finished run with this hash is reused
    (by a later invocation, by another link panel for references, by another sweep point when
    the swept field does not touch this run)."""
    identity = {
        "seeds": experiment.seeds,
        "policy": experiment.policy,
        "policy_params": experiment.policy_params,
        "teacher": experiment.teacher,
        "points": experiment.evaluation.points,
        "env": {k: v for k, v in _set_fields(env_spec).items() if k != "label"},
        "link": dataclasses.asdict(link_spec),
        "method": _set_fields(method),
        "config": {"type": type(config).__qualname__, **config.to_data()},
        "seed_base": SEED_BASE,
        "evaluation": evaluator.kind,
        "episodes": evaluator.episodes,
        "eval_seed": EVAL_SEED,
    }
    text = json.dumps(identity, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _set_fields(spec) -> dict:
    return {k: v for k, v in dataclasses.asdict(spec).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One distinct run of an experiment: its id, its hash, the experiment variant (sweep point)
    it was built from, the built run and its labels (method, env, link, sweep point)."""

    run_id: str
    run_hash: str
    variant: Experiment
    run: BuiltRun
    labels: dict


def plan_runs(experiment: Experiment) -> tuple[list[PlannedRun], list[dict]]:
    """Every distinct run of the experiment (built and validated; nothing compiles) and one
    entry per (run, panel): a run appears in every link panel and sweep point it serves."""
    planned, entries, by_hash, by_id = [], [], {}, {}
    for point, variant, env_spec, link_spec, method, run in built_runs(experiment):
        # References never see the teacher's link: one run serves every link.
        run_link = REWARD_ACCESS if run.algorithm.reference else link_spec
        rhash = run_hash(variant, env_spec, run_link, method, run.config, run.evaluator)
        rid = by_hash.get(rhash)
        if rid is None:
            rid = run_id(method.label, env_spec.slug, run_link.panel, point)
            if rid in by_id:
                # Two different runs would share one file: labels that differ only where file
                # names cannot (open/a and open-a, a '__' inside a label).
                raise ConfigError(
                    f"{experiment.source}: runs {by_id[rid]} and "
                    f"{(method.label, env_spec.name, run_link.panel, point)} would share the file "
                    f"runs/{rid}.json; give them labels that differ in letters or digits"
                )
            by_hash[rhash] = rid
            by_id[rid] = (method.label, env_spec.name, run_link.panel, point)
            labels = {
                "method": method.label,
                "env": env_spec.name,
                "link": run_link.panel,
                "sweep": point,
            }
            planned.append(PlannedRun(rid, rhash, variant, run, labels))
        # The run hash too, so that `zopg report` uses only runs made with these settings.
        entries.append({"run_id": rid, "link": link_spec.panel, "sweep": point, "run_hash": rhash})
    return planned, entries


def is_finished(runs_dir: Path, planned: PlannedRun) -> bool:
    """Whether runs_dir holds the run finished with the same run hash (then it is not rerun)."""
    return store.finished_run_hash(runs_dir, planned.run_id) == planned.run_hash


def run_experiment(
    experiment: Experiment,
    out_dir,
    quiet: bool = False,
    log=None,
    shard: Shard | None = None,
    overwrite: bool = False,
) -> dict:
    """Run every (sweep point, env, link, method) of the experiment into out_dir/runs, or with
    `shard` only the runs that shard owns, and write out_dir/experiment.json (the experiment and
    all its runs). Runs finished earlier are skipped, and so are runs another process holds the
    lock of. zopg.analysis.report turns the folder into metrics.csv, summary.json,
    manifest.json and figures. Returns the record, with `done` (run ids per outcome) added."""
    log = log or (lambda msg: None if quiet else print(msg, file=sys.stderr))
    out_dir = Path(out_dir)
    runs_dir = out_dir / "runs"
    started = time.perf_counter()
    planned, entries = plan_runs(experiment)
    check_same_experiment(runs_dir, planned, overwrite)
    check_fits([(p.run_id, p.run) for p in planned], experiment.seeds, experiment.evaluation.points)
    num_devices = len(jax.devices())
    if seed_sharding(experiment.seeds) is None and num_devices > 1:
        log(f"{experiment.seeds} seeds do not divide over {num_devices} devices: one device used")
    record = {
        **experiment.to_dict(),
        "source": experiment.source,
        "config_hash": experiment.config_hash(),
        "runs": entries,
    }
    try:
        previous = store.read_experiment(out_dir)
    except (OSError, ValueError):
        previous = None
    # Written first, so that `zopg report` knows every run of the experiment (and which are
    # missing) while shards are still running. Every shard writes the same text.
    store.write_experiment(out_dir, record)
    done = {"ran": [], "finished_earlier": [], "held_elsewhere": [], "other_shards": []}
    for p in planned:
        if shard is not None and not shard.owns(p.run_id):
            done["other_shards"].append(p.run_id)
        elif is_finished(runs_dir, p):
            log(f"{p.run_id}: finished earlier, skipped")
            done["finished_earlier"].append(p.run_id)
        else:
            lock = RunLock(runs_dir / f"{p.run_id}.lock")
            with lock as held:
                if not held:
                    log(f"{p.run_id}: running in {lock.holder}, skipped")
                    done["held_elsewhere"].append(p.run_id)
                elif is_finished(runs_dir, p):
                    # Another process finished it between our first look and the lock.
                    done["finished_earlier"].append(p.run_id)
                else:
                    execute_and_store(p, runs_dir, quiet, log)
                    done["ran"].append(p.run_id)
    if shard is None and done["ran"]:
        # Only a process that saw every run may speak for the whole experiment's wall time, and
        # one that skipped every run would only overwrite the time of the run that did them.
        record["wall_s_this_invocation"] = time.perf_counter() - started
        store.write_experiment(out_dir, record)
    elif shard is None and previous is not None:
        record["wall_s_this_invocation"] = previous.get("wall_s_this_invocation")
        store.write_experiment(out_dir, record)
    return {**record, "done": done}


def check_same_experiment(runs_dir: Path, planned: list[PlannedRun], overwrite: bool) -> None:
    """A results folder belongs to one configuration: when a finished run there has the id of a
    planned run but another run hash (other settings: another --set, budget or file of the same
    name), running would replace it, so this is refused before anything is written, unless asked
    to overwrite. Run hashes, unlike the experiment's config hash, do not change when a new
    version of zopg adds a setting at its default, so an old folder still resumes."""
    if overwrite:
        return
    changed = []
    for p in planned:
        found = store.finished_run_hash(runs_dir, p.run_id)
        if found is not None and found != p.run_hash:
            changed.append(p.run_id)
    if changed:
        raise ConfigError(
            f"{runs_dir.parent} holds results of another configuration: {len(changed)} finished "
            f"run(s) with other settings, e.g. {changed[0]}; use --out with a new folder, or "
            "--overwrite to replace them"
        )


def execute_and_store(planned: PlannedRun, runs_dir: Path, quiet: bool, log) -> None:
    """Run one planned run and write its run files."""
    experiment, run, rid = planned.variant, planned.run, planned.run_id
    rhash, labels = planned.run_hash, planned.labels
    training, evaluator = run.training, run.evaluator
    logged = logged_iterations(training.num_iterations, experiment.evaluation.points)
    result = execute_run(
        training,
        make_seed_evaluator(training, evaluator, experiment.seeds),
        seed_keys(experiment.seeds),
        logged,
        experiment.evaluation.chunk_iterations,
        runs_dir / f"{rid}.ckpt",
        rid,
        quiet,
        rhash,
        log,
    )
    timing, initial = result["timing"], result["initial"]
    uniform, optimal = evaluator.bounds
    meta = {
        "run_hash": rhash,
        **labels,
        "algorithm": run.algorithm.name,
        "reference": run.algorithm.reference,
        "num_iterations": training.num_iterations,
        "seeds": experiment.seeds,
        "devices": len(jax.devices()),
        **dataclasses.asdict(timing),
        "evaluation": evaluator.kind,
        "eval_episodes": evaluator.episodes,
        "initial_value": initial["eval/value"].tolist(),
        "initial_value_se": initial["eval/value_se"].tolist(),
        "uniform_value": uniform,
        "optimal_value": optimal,
        "config": run.config.to_data(),
        "nan_when_undefined": list(run.algorithm.nan_when_undefined),
    }
    store.write_run(runs_dir, rid, meta, logged, result["metrics"])
    (runs_dir / f"{rid}.ckpt").unlink(missing_ok=True)
    log(
        f"{rid}: {training.num_iterations} iterations x {experiment.seeds} seeds, "
        f"init {timing.init_s:.1f}s, compile {timing.compile_s:.1f}s, run {timing.run_s:.1f}s, "
        f"evaluate {timing.eval_s:.1f}s"
    )
