"""The chunkable form of `train(key)`: init, run a slice of iterations, read out the policy.

Every iteration t draws its randomness from `fold_in(run_key, t)`, so running [0, T) in one
call or in chunks [0, k), [k, 2k), ... gives identical numbers. The runner relies on that for
progress bars, checkpoints and resume; `train(key)` is the one-chunk special case.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Trainer:
    """init_state(key) -> state; iterate(state, t, key_t) -> (state, metrics); policy_params."""

    init_state: Callable
    iterate: Callable
    policy_params: Callable
    num_iterations: int

    def init(self, key):
        """Carry for run(): the algorithm's state plus the seed's run key."""
        k_init, k_run = jax.random.split(key)
        return {"state": self.init_state(k_init), "run_key": k_run}

    def run(self, carry, start, length: int):
        """Iterations [start, start + length): (carry, metrics with a leading axis `length`)."""

        def _body(carry, t):
            state, metrics = self.iterate(
                carry["state"], t, jax.random.fold_in(carry["run_key"], t)
            )
            return {"state": state, "run_key": carry["run_key"]}, metrics

        return jax.lax.scan(_body, carry, start + jnp.arange(length))

    def final_params(self, carry):
        return self.policy_params(carry["state"])

    def train(self, key):
        """The whole run in one scan: (final policy params, per-iteration metrics)."""
        carry, metrics = self.run(self.init(key), 0, self.num_iterations)
        return self.final_params(carry), metrics

    def jitted_train(self):
        return jax.jit(self.train)
