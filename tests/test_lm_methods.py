"""The token family in the runner: `policy = "sft"`, the evaluator's sequence KL against exact
enumeration, and a small ZPG run on LoRA that raises the gold value."""

import math

import jax
import numpy as np
import pytest

from zopg import ConfigError
from zopg.algorithms import ZPGConfig, make_training
from zopg.envs import make
from zopg.evaluation import make_evaluator
from zopg.experiments.runner import train_seeds
from zopg.policies import make_policy, policy_names
from zopg.preferences import Oracle, make_link, make_utility
from zopg.sequence_kl import per_prefix_kl, sample_sequences, sequence_kl

ENV_ID = "tokens/hmm-v16-l16"


def first_token_is_zero(traj):
    """A cheap utility for the small spaces (the gold utilities need a trained reference)."""
    return (traj.final_obs[..., 0] == 0).astype(float)


def test_the_evaluator_logs_the_sequence_kl_estimate_against_enumeration():
    """On V 3, L 4 the evaluator's KL (per-prefix, on its own `episodes` sequences) is within 4
    standard errors of the exact KL over all 81 sequences; the estimate for a policy and
    itself is exactly 0."""
    env, params = make(ENV_ID, vocab=3, length=4)
    policy = make_policy("gru", env, params)
    theta = jax.tree_util.tree_map(lambda x: 2.0 * x, policy.init(jax.random.PRNGKey(0)))
    ref = policy.init(jax.random.PRNGKey(1))
    episodes = 4096
    evaluator = make_evaluator(env, params, policy, first_token_is_zero, episodes=episodes)
    assert evaluator.kind == "monte-carlo" and evaluator.kl_to_reference is None
    key = jax.random.PRNGKey(2)
    estimate = float(evaluator.kl_estimate(key, theta, ref))
    tokens = sample_sequences(key, env, params, policy, theta, episodes)
    terms = np.asarray(per_prefix_kl(env, params, policy, theta, ref, tokens))
    assert estimate == pytest.approx(terms.mean(), rel=1e-6)  # the value's own sequences
    exact = sequence_kl(env, params, policy, theta, ref)
    se = terms.std(ddof=1) / math.sqrt(episodes)
    assert abs(estimate - exact) < 4 * se, (estimate, exact, se)
    assert exact > 10 * se  # far from 0: the comparison can fail
    assert float(evaluator.kl_estimate(key, theta, theta)) == 0.0


def test_sft_is_a_policy_name_built_on_the_reference():
    env, params = make(ENV_ID)
    assert "sft" in policy_names()
    policy = make_policy("sft", env, params, network="gru", parameterisation="lora", rank=2)
    assert policy.parameterisation == "lora" and policy.rank == 2 and policy.base is not None
    with pytest.raises(ConfigError) as error:
        make_policy("sft", env, params, network="lstm")
    assert str(error.value) == "sft.network = 'lstm': must be one of gru, transformer"


@pytest.fixture(scope="module")
def zpg_on_lora():
    """ZPG on LoRA r 4 of the SFT GRU, a Bradley-Terry teacher on gold-gru, 20,000 queries (one
    vote per pair, 8 two-sided pairs per iteration), 5 seeds; sgd step 1e-5 and μ 0.05 from a
    probe of four step sizes on this setting (1e-4 collapsed the policy, 1e-3/1e-4 with Adam
    barely moved)."""
    env, params = make(ENV_ID)
    policy = make_policy("sft", env, params, network="gru", parameterisation="lora", rank=4)
    gold = make_utility("gold-gru")
    config = ZPGConfig(
        num_iterations=2500, num_pairs=8, num_queries=1, two_sided=True, mu=0.05, step_size=1e-5
    )
    oracle = Oracle(make_link("bradley-terry"), utility=gold.bind(env, params))
    training = make_training(config, env, policy, oracle, params)
    evaluator = make_evaluator(env, params, policy, gold, episodes=512)
    keys = jax.random.split(jax.random.key(0), 5)
    return train_seeds(training, keys, np.array([0, 1249, 2499]), evaluator)


# 2,500 iterations x 5 seeds with a GRU (about 20 s): in make test-all.
@pytest.mark.slow
def test_zpg_on_lora_raises_the_gold_value(zpg_on_lora):
    """Paired over seeds: final minus initial gold (in reference sds) above 0 by more than 3
    standard errors of the seeds' differences."""
    initial = zpg_on_lora["initial"]["eval/value"]
    final = zpg_on_lora["metrics"]["eval/value"][:, -1]
    gain = final - initial
    se = gain.std(ddof=1) / math.sqrt(len(gain))
    assert gain.mean() > 3 * se, (gain, se)


@pytest.mark.slow
def test_the_runner_logs_the_kl_to_the_reference_on_tokens(zpg_on_lora):
    np.testing.assert_array_equal(zpg_on_lora["initial"]["eval/kl_to_reference"], 0.0)
    kl = zpg_on_lora["metrics"]["eval/kl_to_reference"]
    # After one step the policy may still equal the reference in float32 (a KL of 0 exactly).
    assert kl.shape == (5, 3) and np.all(kl >= 0) and np.all(np.isfinite(kl))
    assert np.all(kl[:, -1] > 0.01)
