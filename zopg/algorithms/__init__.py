"""Algorithms: one file each, a config and `make_trainer(config, problem)` (see base.py), run by
the shared wrapper in training.py. `make_train(config, env, policy, oracle)` gives the pure
`train(key) -> (final_params, metrics)` of PureJaxRL, ready to vmap over seeds."""

from __future__ import annotations

import jax

from zopg.algorithms.base import Algorithm, AlgorithmConfig, Problem, Spent, Trainer
from zopg.algorithms.dpo_offline import DPOOfflineConfig
from zopg.algorithms.dpo_online import DPOOnlineConfig
from zopg.algorithms.es import ESConfig
from zopg.algorithms.exact_pg import ExactPGConfig
from zopg.algorithms.fedavg_dpo import FedAvgDPOConfig
from zopg.algorithms.par_s2zpo import ParS2ZPOConfig
from zopg.algorithms.ppo import PPOConfig
from zopg.algorithms.registry import ALGORITHMS, for_config, get, register
from zopg.algorithms.rm_ppo import RMPPOConfig
from zopg.algorithms.training import Training, build
from zopg.algorithms.zbcpg import ZBCPGConfig
from zopg.algorithms.zpg import ZPGConfig
from zopg.algorithms.zspo import ZSPOConfig


def make_training(
    config, env, policy, oracle=None, env_params=None, *, probe=False, initial_params=None
) -> Training:
    """The built algorithm for `config` (found by its type): train(key) and chunked runs."""
    problem = Problem.build(env, policy, oracle, env_params, initial_params)
    return build(for_config(config), config, problem, probe)


def make_train(
    config, env, policy, oracle=None, env_params=None, *, probe=False, initial_params=None
):
    """`train(key) -> (final_policy_params, metrics)`: jitted, pure, vmappable over keys.

    metrics are per iteration: the algorithm's own, the cumulative budget/* counters and, with
    probe=True (tabular envs), the exact value and gradient norm (see Training).
    """
    training = make_training(
        config, env, policy, oracle, env_params, probe=probe, initial_params=initial_params
    )
    return jax.jit(training.train)


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AlgorithmConfig",
    "DPOOfflineConfig",
    "DPOOnlineConfig",
    "ESConfig",
    "ExactPGConfig",
    "FedAvgDPOConfig",
    "PPOConfig",
    "ParS2ZPOConfig",
    "Problem",
    "RMPPOConfig",
    "Spent",
    "Trainer",
    "Training",
    "ZBCPGConfig",
    "ZPGConfig",
    "ZSPOConfig",
    "build",
    "for_config",
    "get",
    "make_train",
    "make_training",
    "register",
]
