"""Score a batch of trials: whole training runs, vmapped over seeds and over traced values.

A trial's continuous hyperparameters that the trainer uses only in arithmetic (step sizes, μ,
β) are passed in as arrays, so the trials of one structural group are one compiled call
(PureJaxRL vmaps learning rates the same way). Trial by trial is the same program without the
trial axis, compiled once and called per trial: the baseline of the speed-up and of the test
that the batch gives the same scores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from zopg.algorithms.search_space import with_values
from zopg.algorithms.training import Training

# Tuning keys never meet a benchmark's (runner.SEED_BASE = 0, EVAL_SEED = 1).
TUNE_SEED_BASE = 1000
TUNE_EVAL_SALT = 7


def seed_keys(tune_seed: int, seeds: int):
    return jax.random.split(jax.random.key(TUNE_SEED_BASE + tune_seed), seeds)


def final_value_fn(run, traced_fields: tuple[str, ...]):
    """(values: field -> scalar, key) -> the evaluator's value of the final policy of one
    training run of `run` (a BuiltRun) with those field values."""
    algorithm, base, problem, evaluator = (
        run.algorithm,
        run.config,
        run.training.problem,
        run.evaluator,
    )
    iterations = run.training.num_iterations

    def final_value(values, key):
        config = with_values(base, {f: values[f] for f in traced_fields})
        training = Training(algorithm.make_trainer(config, problem), iterations, problem)
        carry, _ = training.advance(training.init(key), 0, iterations)
        eval_key = jax.random.fold_in(key, TUNE_EVAL_SALT)
        value, _ = evaluator.value(eval_key, training.final_params(carry))
        return value

    return final_value


def batched_scorer(run, traced_fields):
    """jit: ({field: [trials]}, keys [seeds]) -> values [trials, seeds]."""
    one = final_value_fn(run, traced_fields)
    return jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None)))


def single_scorer(run, traced_fields):
    """jit: ({field: scalar}, keys [seeds]) -> values [seeds]; one trial per call."""
    return jax.jit(jax.vmap(final_value_fn(run, traced_fields), in_axes=(None, 0)))


def as_arrays(trials: list[dict], traced_fields) -> dict:
    return {f: jnp.asarray([t[f] for t in trials], jnp.float32) for f in traced_fields}


def score_group(run, trials: list[dict], traced_fields, keys, vmapped: bool = True) -> np.ndarray:
    """values [len(trials), seeds] of one structural group on one tuning env."""
    if vmapped:
        return np.asarray(
            batched_scorer(run, traced_fields)(as_arrays(trials, traced_fields), keys)
        )
    scorer = single_scorer(run, traced_fields)
    rows = []
    for trial in trials:
        values = {f: jnp.asarray(trial[f], jnp.float32) for f in traced_fields}
        rows.append(np.asarray(scorer(values, keys)))
    return np.stack(rows)
