"""Refuse runs that would not fit in memory, estimated from abstract traces (nothing compiles)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.extend.core import subjaxprs

from zopg.algorithms import Training
from zopg.errors import ConfigError

ENV_VAR = "ZOPG_MEMORY_LIMIT"
# Of the machine's memory a run may plan to use: the OS, the Python process (JAX runtime,
# compiled code, the XLA compiler itself while it compiles) and other users need the rest, and
# there is usually no swap to spill to, so running out kills the process.
HOST_FRACTION = 0.8
UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
# A count with an optional binary unit: 12345, 1e9, 8G, 8 GiB, 1.5T.
BYTES = re.compile(r"\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", re.IGNORECASE)
# A field whose doubling grows a run by less (e.g. a count of stacked scalar losses) is not
# worth naming as a remedy.
MIN_GROWTH = 0.05
# What a run holds per byte of a large constant its programs close over (a tabular model's P
# and R): the constant, the arrays of building it eagerly (about 3x), and XLA's copies of it
# inside every compiled program that embeds it (about 2.4x each). Measured as `zopg run`'s max
# RSS less that of a 5x5 run, over the bytes of P and R, on open GridWorlds with 2 seeds:
# 8.2x at 40x40 cells, 12.3x at 50x50, 11.9x at 60x60 (a 60x60 run used 5.0 GiB for a 0.39 GiB
# model). Counting the model once, as before, fell 3x short.
CONSTANT_COPIES = 12
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Bytes a run needs: per seed (every part scales with the vmapped seed axis) and shared.

    state: the carry (algorithm state, run key, budget counters) and the seed's two keys.
    iteration: every array one vmapped `advance` call creates, counted as if all were alive at
    once (no buffer reuse, no fusion); this includes the new carry.
    evaluation: the same count for one evaluation of the seed's policy (Monte Carlo episodes or
    the exact computation).
    metrics: the kept metrics and evaluations at every logged point. They live on the host but
    count against the same limit: exact on the CPU, on the safe side on an accelerator.
    shared: constants of the traced computations (e.g. a tabular model), not per seed, times
    CONSTANT_COPIES.
    """

    seeds: int
    state: int
    iteration: int
    evaluation: int
    metrics: int
    shared: int = 0

    @property
    def per_seed(self) -> int:
        return self.state + self.iteration + self.evaluation + self.metrics

    @property
    def total(self) -> int:
        return self.seeds * self.per_seed + self.shared


def estimate_run_bytes(run, seeds: int, points: int) -> Estimate:
    """The memory a run of `seeds` seeds keeping `points` logged points needs (see Estimate).

    Traced once with one seed and scaled by `seeds`: under vmap every leaf of the carry and every
    intermediate that depends on the seed gains a leading seed axis, so state and per-iteration
    arrays grow exactly linearly; the few that do not depend on it are over-counted, which errs
    on the safe side. No key is split concretely, so 1e8 seeds cost what one seed costs.
    """
    training: Training = run.training
    state, iteration, evaluation, metric_shapes, shared = _per_seed_parts(training, run.evaluator)
    kept = min(points, training.num_iterations)
    # Each kept point holds every metric of `advance` and the two evaluation values; the runner
    # keeps per-segment columns and joins them into one more copy when it checkpoints.
    metric_bytes = sum(_nbytes(s) for s in jax.tree_util.tree_leaves(metric_shapes))
    metrics = 2 * kept * (metric_bytes + 2 * 4)
    return Estimate(seeds, state, iteration, evaluation, metrics, shared)


def _per_seed_parts(training: Training, evaluator):
    """(state, iteration, evaluation, metric shapes, shared constants) for one vmapped seed."""
    keys, carry, advance, (_, metrics) = _traced_advance(training)
    # The runner also holds each seed's training key and evaluation key.
    state = _tree_bytes(carry) + 2 * _nbytes(keys)

    def evaluate(carry, keys):
        # As the runner's evaluate_seeds: the policies of the seeds, scored with their keys.
        return jax.vmap(evaluator.value)(keys, jax.vmap(training.final_params)(carry))

    evaluation = jax.make_jaxpr(evaluate)(carry, keys)
    constants = (*advance.consts, *evaluation.consts)
    shared = CONSTANT_COPIES * sum(_nbytes(c) for c in constants if hasattr(c, "shape"))
    iteration = _created_bytes(advance.jaxpr)
    return state, iteration, _created_bytes(evaluation.jaxpr), metrics, shared


def _traced_advance(training: Training):
    """(one seed's key, its carry, the jaxpr of the runner's vmapped advance, its out shapes)."""
    keys = jax.ShapeDtypeStruct((1,), jax.random.key(0).dtype)
    carry = jax.eval_shape(jax.vmap(training.init), keys)
    bound = jax.ShapeDtypeStruct((), jnp.int32)
    advance = jax.vmap(training.advance, in_axes=(0, None, None))
    jaxpr, out = jax.make_jaxpr(advance, return_shape=True)(carry, bound, bound)
    return keys, carry, jaxpr, out


def _created_bytes(jaxpr) -> int:
    """Bytes of every equation's outputs, inner jaxprs (loop bodies, branches) included once.

    An upper-ish bound rather than a liveness analysis: XLA adds arrays the jaxpr does not show
    (a gather's expanded indices, while-loop copies), so a peak over the jaxpr's own order fell
    to 0.64× of what XLA allocated, whereas this sum stayed 2-9× above it for every built-in
    algorithm (fusion and buffer reuse are what it over-counts). A loop body is counted once:
    its buffers are reused from one trip to the next.
    """
    created = sum(_nbytes(v.aval) for eqn in jaxpr.eqns for v in eqn.outvars)
    return created + sum(_created_bytes(inner) for inner in subjaxprs(jaxpr))


def _tree_bytes(tree) -> int:
    return sum(_nbytes(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def _nbytes(shaped) -> int:
    dtype = shaped.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        # A typed key has no itemsize of its own; its data is what is stored.
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shaped.shape, dtype))
        return math.prod(data.shape) * data.dtype.itemsize
    return math.prod(shaped.shape) * dtype.itemsize


# -- the limit --------------------------------------------------------------------------------


def memory_limit() -> tuple[int, str]:
    """(bytes a run may use, where that number comes from): $ZOPG_MEMORY_LIMIT when set, else
    the default accelerator's allocator limit, else HOST_FRACTION of this machine's memory (or
    of its container's limit, when lower)."""
    text = os.environ.get(ENV_VAR)
    if text is not None:
        return parse_bytes(text), f"{ENV_VAR}={text}"
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        # XLA's allocator limit is already a fraction of the device (75% by default, or
        # XLA_PYTHON_CLIENT_MEM_FRACTION), and nothing else allocates from it.
        return int(stats["bytes_limit"]), f"bytes_limit of {device.platform} {device.device_kind}"
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    where = f"this machine's {format_bytes(physical)}"
    container = _container_limit()
    if container is not None and container < physical:
        physical, where = container, f"this container's {format_bytes(container)} limit"
    return int(HOST_FRACTION * physical), f"{HOST_FRACTION:.0%} of {where}"


def _container_limit() -> int | None:
    """The cgroup memory limit (v2, then v1), or None: a SLURM job or container gets less than
    the physical memory it sees."""
    for path in CGROUP_LIMITS:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def parse_bytes(text: str) -> int:
    """`12345`, `1e9`, `8G`, `8GiB`, `1.5T` (binary units) as bytes; else a ConfigError naming the
    environment variable."""
    match = BYTES.fullmatch(text)
    if match is not None:
        value = int(float(match[1]) * UNITS[match[2].lower()])
        if value > 0:
            return value
    raise ConfigError(
        f"{ENV_VAR} = {text!r}: must be a positive number of bytes, optionally with a binary "
        "unit K, M, G, T or P (e.g. 8G = 8 GiB)"
    )


def format_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'; bytes below 1 KiB as a plain count."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


# -- the check --------------------------------------------------------------------------------


def check_fits(runs: Iterable[tuple[str, object]], seeds: int, points: int) -> None:
    """Raise a ConfigError naming the first run whose estimate exceeds the memory limit: its
    seeds, the estimate by part, the limit and the fields that would make it smaller."""
    limit, where = memory_limit()
    devices = _seed_devices(seeds)
    if devices > 1 and os.environ.get(ENV_VAR) is None:
        # The runner shards the seeds over every device when they divide evenly, and each
        # device has its own memory.
        limit, where = devices * limit, f"{devices} devices × {where}"
    too_big = []
    for run_id, run in runs:
        estimate = estimate_run_bytes(run, seeds, points)
        if estimate.total > limit:
            too_big.append((run_id, run, estimate))
    if not too_big:
        return
    run_id, run, estimate = too_big[0]
    parts = ", ".join(
        f"{name} {format_bytes(size)}"
        for name, size in (
            ("state", estimate.state),
            ("one iteration's arrays", estimate.iteration),
            ("evaluation", estimate.evaluation),
            ("kept metrics", estimate.metrics),
        )
    )
    if estimate.shared:
        parts += f"; constants shared by the seeds {format_bytes(estimate.shared)}"
    more = len(too_big) - 1
    others = f"; {more} other run{'s' * (more > 1)} would not fit either" if more else ""
    raise ConfigError(
        f"{run_id}: seeds = {seeds} need about {format_bytes(estimate.total)} ({parts} per seed), "
        f"more than the memory limit {format_bytes(limit)} ({where}){others}; "
        f"use {' or '.join(_remedies(run, estimate))}"
    )


def check_model_fits(env, env_params, where: str) -> None:
    """Refuse an environment whose tabular model would not fit, before anything builds it: the
    model's shapes come from an abstract trace (a 1000x1000 GridWorld's P alone is 14.6 TiB;
    building it fails deep inside XLA)."""
    if not hasattr(env, "tabular_model"):
        return
    model = jax.eval_shape(lambda: env.tabular_model(env_params))
    need = CONSTANT_COPIES * _tree_bytes(model)
    limit, source = memory_limit()
    if need > limit:
        states, actions = model.transition.shape[:2]
        raise ConfigError(
            f"{where}: its tabular model ({states} states x {actions} actions, P and R of "
            f"{format_bytes(_tree_bytes(model))}) needs about {format_bytes(need)} to build and "
            f"compile, more than the memory limit {format_bytes(limit)} ({source}); use a "
            "smaller layout"
        )


def _seed_devices(seeds: int) -> int:
    """How many accelerators the runner spreads the seeds over (its seed_sharding rule). Forced
    CPU devices share one memory, so they count as one."""
    devices = jax.devices()
    if devices[0].platform == "cpu" or seeds % len(devices):
        return 1
    return len(devices)


def _remedies(run, estimate: Estimate) -> list[str]:
    """What to make smaller: seeds, then the config fields that size the state and arrays, and
    the evaluation settings when theirs is the largest part."""
    remedies = ["fewer seeds"]
    fields = _sizing_fields(run)
    if fields:
        remedies.append(f"smaller {', '.join(fields)}")
    largest = max(estimate.state + estimate.iteration, estimate.evaluation, estimate.metrics)
    if largest == estimate.metrics:
        remedies.append("fewer evaluation.points")
    elif largest == estimate.evaluation and run.evaluator.kind == "monte-carlo":
        remedies.append("fewer evaluation.episodes")
    return remedies


def _sizing_fields(run) -> list[str]:
    """The integer config fields whose doubling grows the per-seed state and iteration arrays by
    MIN_GROWTH at least, largest growth first. Measured, not declared: plugin algorithms size
    arrays with fields we cannot know. Only traced when a run is refused."""
    config, training = run.config, run.training
    problem = training.problem
    base = _training_bytes(training)
    grown = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        rule = field.metadata.get("rule")
        if rule is None or rule.kind != "integer" or value is None:
            continue
        doubled = dataclasses.replace(config, **{field.name: 2 * value})
        try:
            doubled.validate(problem)
            trainer = run.algorithm.make_trainer(doubled, problem)
            bigger = Training(trainer, doubled.num_steps, problem, training.probe)
            growth = _training_bytes(bigger) - base
        except Exception:
            # Doubling broke a relation between fields (or a plugin's assumptions): this field
            # is not a remedy we can measure, and the refusal must not fail for it.
            continue
        if growth >= base * MIN_GROWTH:
            grown.append((growth, _field_name(run, field.name)))
    return [name for _, name in sorted(grown, key=lambda g: -g[0])]


def _training_bytes(training: Training) -> int:
    """Per-seed carry and iteration arrays of one built training (no evaluator needed)."""
    _, carry, advance, _ = _traced_advance(training)
    return _tree_bytes(carry) + _created_bytes(advance.jaxpr)


def _field_name(run, field: str) -> str:
    """How the user sets a field: budget-matched methods derive theirs from budget_queries."""
    if field == run.config.budget_field and not run.algorithm.reference:
        return f"budget_queries (it sets {field})"
    return field
