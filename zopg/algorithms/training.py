"""The shared wrapper around every Trainer: budget accounting, contract checks, chunked runs.

`build(config, problem)` validates the config, guards the budget counters, builds the trainer and
checks its contract (abstractly, before anything compiles). The resulting `Training` gives
`train(key) -> (final_params, metrics)`, pure and vmappable over keys, and the chunked forms the
runner uses. Iteration t always uses `fold_in(run_key, t)`, so a run gives identical numbers in
one call or in chunks of any size; the runner relies on that for progress, checkpoints and
resume.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from zopg.algorithms.base import AlgorithmConfig, Problem, Spent, Trainer, check_budget_fits
from zopg.errors import ConfigError
from zopg.policies import flat_view

BUDGET_METRICS = {
    "queries": "budget/queries",
    "trajectories": "budget/trajectories",
    "judged_trajectories": "budget/judged_trajectories",
    "env_steps": "budget/env_steps",
}
# Metric prefixes only the wrapper and the evaluator write.
RESERVED = ("budget/", "eval/", "exact/")


@dataclasses.dataclass(frozen=True)
class Training:
    """A built algorithm: `train(key)` and its chunkable parts.

    carry = {"state": the algorithm's state, "run_key": the seed's key for iterations,
    "spent": cumulative Spent, and with the probe "probe_sum": Σ_t ‖∇V(θ_t)‖²}.

    probe: also report, every iteration, the exact value and gradient norm of a tabular env
    (`exact/value_before` and `exact/grad_norm_sq` at θ_t, `exact/value` after the update and
    the running mean `exact/grad_norm_sq_mean`). Outside the budget and never shown to the
    algorithm; the rate experiments need it, everything else uses zopg.evaluation.
    """

    trainer: Trainer
    num_iterations: int
    problem: Problem
    probe: bool = False

    def init(self, key):
        k_init, k_run = jax.random.split(key)
        carry = {"state": self.trainer.init(k_init), "run_key": k_run, "spent": Spent.zero()}
        if self.probe:
            carry["probe_sum"] = jnp.zeros(())
        return carry

    def step(self, carry, t):
        """Iteration t: (carry, metrics), with the cumulative budget/* counters and the
        trainer's diagnostics of the new state."""
        carry, metrics = self._iterate(carry, t)
        return carry, {**metrics, **self._diagnostics(carry)}

    def _diagnostics(self, carry) -> dict:
        diagnose = self.trainer.diagnostics
        return {} if diagnose is None else diagnose(carry["state"])

    def _iterate(self, carry, t):
        state, spent, metrics = self.trainer.iterate(
            carry["state"], t, jax.random.fold_in(carry["run_key"], t)
        )
        total = carry["spent"] + spent
        out = {**carry, "state": state, "spent": total}
        metrics = {**metrics, **{BUDGET_METRICS[k]: getattr(total, k) for k in BUDGET_METRICS}}
        if self.probe:
            probed, out["probe_sum"] = self._probe(carry, state, t)
            metrics.update(probed)
        return out, metrics

    def _probe(self, before, after, t):
        value = self.problem.exact_value
        theta = flat_view(self.trainer.policy_params(before["state"]))[0]
        value_t, grad_t = jax.value_and_grad(value)(theta)
        grad_norm_sq = jnp.sum(grad_t**2)
        total = before["probe_sum"] + grad_norm_sq
        metrics = {
            "exact/value_before": value_t,
            "exact/grad_norm_sq": grad_norm_sq,
            "exact/grad_norm_sq_mean": total / (t + 1).astype(total.dtype),
            "exact/value": value(flat_view(self.trainer.policy_params(after))[0]),
        }
        return metrics, total

    def run(self, carry, start, length: int):
        """Iterations [start, start + length): (carry, metrics with a leading axis `length`)."""
        return jax.lax.scan(self.step, carry, start + jnp.arange(length))

    def advance(self, carry, start, stop):
        """Iterations [start, stop) with traced bounds (one compilation for every length):
        (carry, metrics of iteration stop − 1). Needs stop > start. Diagnostics are computed
        once, of the final state, not inside the loop."""
        shapes = jax.eval_shape(self._iterate, carry, jnp.asarray(start))[1]
        empty = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(t, loop):
            return self._iterate(loop[0], t)

        carry, metrics = jax.lax.fori_loop(start, stop, body, (carry, empty))
        return carry, {**metrics, **self._diagnostics(carry)}

    def final_params(self, carry):
        return self.trainer.policy_params(carry["state"])

    def train(self, key):
        """The whole run in one scan: (final policy params, per-iteration metrics)."""
        carry, metrics = self.run(self.init(key), 0, self.num_iterations)
        return self.final_params(carry), metrics


def build(algorithm, config: AlgorithmConfig, problem: Problem, probe: bool = False) -> Training:
    """Validate, guard the budget, make the trainer and check its contract."""
    if not isinstance(config, algorithm.config):
        raise ConfigError(
            f"{algorithm.name} takes a {algorithm.config.__name__}; got {type(config).__name__}"
        )
    config.validate(problem)
    check_budget_fits(config, problem.horizon)
    if probe:
        problem.require_exact("the exact-gradient probe")
    trainer = algorithm.make_trainer(config, problem)
    check_contract(algorithm.name, trainer)
    return Training(trainer, config.num_steps, problem, probe)


def check_contract(name: str, trainer) -> None:
    """Trace init and one iteration abstractly (nothing compiles) and refuse what breaks the
    contract: a missing Spent, metrics that are not named scalars or use reserved prefixes, or a
    state whose structure changes between iterations (a scan could not carry it)."""
    if not isinstance(trainer, Trainer):
        raise ConfigError(f"{name}: make_trainer must return a Trainer; got {type(trainer)!r}")
    state = jax.eval_shape(trainer.init, jax.random.key(0))
    out = jax.eval_shape(trainer.iterate, state, jnp.int32(0), jax.random.key(1))
    if trainer.diagnostics is not None:
        check_metrics(name, jax.eval_shape(trainer.diagnostics, state), "diagnostics")
    if not (isinstance(out, tuple) and len(out) == 3):
        raise ConfigError(f"{name}: iterate must return (state, Spent, metrics)")
    new_state, spent, metrics = out
    if not isinstance(spent, Spent):
        raise ConfigError(
            f"{name}: iterate must return a Spent as its second value; got {type(spent).__name__}"
        )
    for field in BUDGET_METRICS:
        leaf = getattr(spent, field)
        if getattr(leaf, "shape", None) != () or leaf.dtype != jnp.int32:
            raise ConfigError(f"{name}: Spent.{field} must be an int32 scalar; got {leaf!r}")
    check_metrics(name, metrics, "iterate's metrics")
    same = jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state) and all(
        (a.shape, a.dtype) == (b.shape, b.dtype)
        for a, b in zip(
            jax.tree_util.tree_leaves(new_state), jax.tree_util.tree_leaves(state), strict=True
        )
    )
    if not same:
        raise ConfigError(f"{name}: iterate must return a state shaped like init's")


def check_metrics(name: str, metrics, what: str) -> None:
    """Metrics are a dict of named scalars, never under the wrapper's and evaluator's names."""
    if not isinstance(metrics, dict):
        raise ConfigError(f"{name}: {what} must be a dict of scalars")
    for key, value in metrics.items():
        if not isinstance(key, str) or key.startswith(RESERVED):
            raise ConfigError(
                f"{name}: metric {key!r}: names under {', '.join(RESERVED)} are written by the "
                "wrapper and the evaluator, not by algorithms"
            )
        if getattr(value, "shape", None) != ():
            raise ConfigError(f"{name}: metric {key!r} must be a scalar; got {value!r}")
