"""The sequence KL: exact enumeration against a direct NumPy sum over every sequence, the
per-prefix Monte Carlo estimate against the exact value, zero at the reference, and refusals."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The HMM's prompt law summed over every hidden path, shared with the environment's tests.
from test_tokens import brute_force_prompt_probs

from zopg import ConfigError
from zopg.envs import make
from zopg.policies import make_policy
from zopg.sequence_kl import (
    per_prefix_kl,
    sample_sequences,
    sequence_kl,
    sequence_kl_estimate,
)

ENV_ID = "tokens/hmm-v16-l16"
NAMES = ["gru", "transformer"]
# The GRU's cases run in `make test`; the transformer's (compile-bound, 3-5 s each) are marked
# slow and run in `make test-all`.
HEAVY = ["gru", pytest.param("transformer", marks=pytest.mark.slow)]


def two_policies(name, env, params, parameterisation="all"):
    """A policy and two parameter sets far enough apart that the KL is well above rounding."""
    policy = make_policy(name, env, params, parameterisation=parameterisation)
    theta = policy.init(jax.random.PRNGKey(0))
    flat_scale = 2.0 if parameterisation == "all" else 1.0
    theta = jax.tree_util.tree_map(lambda x: flat_scale * x, theta)
    ref = jax.tree_util.tree_map(
        lambda x, k: x + 0.3 * jax.random.normal(k, x.shape),
        theta,
        dict_keys(theta, jax.random.PRNGKey(1)),
    )
    return policy, theta, ref


def dict_keys(tree, key):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, list(jax.random.split(key, len(leaves))))


def next_token_probs_numpy(policy, params, sequences, vocab):
    """p[x, j, v] = π(v | x_<j) for every sequence, from the policy's log_probs at the
    observation the environment shows after j tokens (pad from j on, then the position j)."""
    sequences = np.asarray(sequences)
    count, size = sequences.shape
    obs = np.full((count, size, size + 1), vocab, np.int32)
    for j in range(size):
        obs[:, j, :j] = sequences[:, :j]
        obs[:, j, -1] = j
    log_probs = jax.jit(policy.log_probs)(params, jnp.asarray(obs))
    return np.exp(np.asarray(log_probs, np.float64))


def direct_kl(policy, theta, ref, vocab, prompt_length, length, prompt_probs):
    """Σ_x P(x) log(π(x) / π_ref(x)) over every sequence, in float64 NumPy."""
    sequences = np.array(list(itertools.product(range(vocab), repeat=prompt_length + length)))
    p = next_token_probs_numpy(policy, theta, sequences, vocab)
    q = next_token_probs_numpy(policy, ref, sequences, vocab)
    rows = np.arange(len(sequences))[:, None]
    cols = np.arange(prompt_length, prompt_length + length)[None, :]
    picked = sequences[:, prompt_length:]
    log_p = np.log(p[rows, cols, picked]).sum(axis=1)
    log_q = np.log(q[rows, cols, picked]).sum(axis=1)
    prompt = np.array([prompt_probs[tuple(s[:prompt_length])] for s in sequences])
    weight = prompt * np.exp(log_p)
    assert abs(weight.sum() - 1.0) < 1e-4
    return float(np.sum(weight * (log_p - log_q)))


@pytest.mark.parametrize("name", HEAVY)
def test_exact_kl_is_the_direct_sum_over_all_81_sequences(name):
    env, params = make(ENV_ID, vocab=3, length=4)
    policy, theta, ref = two_policies(name, env, params)
    want = direct_kl(policy, theta, ref, 3, 0, 4, {(): 1.0})
    got = sequence_kl(env, params, policy, theta, ref)
    assert want > 0.05  # far from 0, so the comparison means something
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_exact_kl_with_a_prompt_averages_over_prompts_by_their_law():
    env, params = make(ENV_ID, vocab=2, length=3, prompt_length=2, seed=4)
    policy, theta, ref = two_policies("gru", env, params)
    want = direct_kl(policy, theta, ref, 2, 2, 3, brute_force_prompt_probs(2, 4, 2))
    got = sequence_kl(env, params, policy, theta, ref)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_a_policy_without_sequence_log_probs_gives_the_same_kl():
    env, params = make(ENV_ID, vocab=3, length=3)
    policy, theta, ref = two_policies("gru", env, params)

    class PrefixOnly:  # only the per-observation contract: sequence_kl builds every prefix
        def log_probs(self, p, obs):
            return policy.log_probs(p, obs)

    plain = PrefixOnly()
    assert sequence_kl(env, params, plain, theta, ref) == pytest.approx(
        sequence_kl(env, params, policy, theta, ref), rel=1e-5
    )
    tokens = jnp.array([[0, 2, 1], [1, 1, 0]])
    np.testing.assert_allclose(
        per_prefix_kl(env, params, plain, theta, ref, tokens),
        per_prefix_kl(env, params, policy, theta, ref, tokens),
        rtol=1e-5,
    )


# Slow (a LoRA GRU with a prompt compiles for about 10 s): in make test, test_lm_methods checks
# that the per-prefix KL of a policy and itself is exactly 0, and the direct-sum test below
# checks sequence_kl itself.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "parameterisation"),
    [("gru", "lora"), ("transformer", "all")],
)
def test_kl_is_zero_at_the_reference(name, parameterisation):
    env, params = make(ENV_ID, vocab=3, length=4, prompt_length=1)
    policy, theta, _ = two_policies(name, env, params, parameterisation)
    assert abs(sequence_kl(env, params, policy, theta, theta)) < 1e-6
    tokens = sample_sequences(jax.random.PRNGKey(0), env, params, policy, theta, 16)
    np.testing.assert_array_equal(per_prefix_kl(env, params, policy, theta, theta, tokens), 0.0)


@pytest.mark.parametrize("name", HEAVY)
def test_the_per_prefix_estimate_matches_the_exact_kl(name):
    env, params = make(ENV_ID, vocab=3, length=4)
    policy, theta, ref = two_policies(name, env, params, "head")
    exact = sequence_kl(env, params, policy, theta, ref)
    n = 2000
    tokens = sample_sequences(jax.random.PRNGKey(5), env, params, policy, theta, n)
    assert tokens.shape == (n, 4) and np.all((tokens >= 0) & (tokens < 3))
    per_sequence = np.asarray(per_prefix_kl(env, params, policy, theta, ref, tokens))
    assert np.all(per_sequence >= -1e-6)  # a sum of KLs
    sd = per_sequence.std(ddof=1)
    # The sample mean is within 4 standard errors of the exact value.
    assert abs(per_sequence.mean() - exact) <= 4 * sd / np.sqrt(n)
    assert sd > 0 and exact > 0.01
    estimate = sequence_kl_estimate(jax.random.PRNGKey(5), env, params, policy, theta, ref, n)
    assert float(estimate) == pytest.approx(per_sequence.mean(), rel=1e-5)


def test_sampled_sequences_follow_the_policy():
    # Whole-sequence frequencies against π(x) = Π_j π(x_j | x_<j) over all 27 sequences.
    env, params = make(ENV_ID, vocab=3, length=3)
    policy, theta, _ = two_policies("gru", env, params)
    sequences = np.array(list(itertools.product(range(3), repeat=3)))
    p = next_token_probs_numpy(policy, theta, sequences, 3)
    probs = p[np.arange(27)[:, None], np.arange(3)[None, :], sequences].prod(axis=1)
    n = 8000
    tokens = np.asarray(sample_sequences(jax.random.PRNGKey(2), env, params, policy, theta, n))
    freq = np.bincount(tokens @ np.array([9, 3, 1]), minlength=27) / n
    assert np.all(np.abs(freq - probs) <= 5 * np.sqrt(probs * (1 - probs) / n) + 1e-9)


def test_enumeration_refuses_more_than_a_million_sequences():
    env, params = make(ENV_ID)
    policy = make_policy("gru", env, params)
    theta = policy.init(jax.random.PRNGKey(0))
    message = (
        r"vocab \*\* \(prompt_length \+ length\) = 16 \*\* 16 = 18446744073709551616: must be "
        r"at most 10\*\*6 to enumerate every sequence; use sequence_kl_estimate"
    )
    with pytest.raises(ConfigError, match=message):
        sequence_kl(env, params, policy, theta, theta)


def test_a_non_token_environment_is_refused():
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params)
    theta = policy.init(jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match=r"the sequence KL needs a token environment"):
        sequence_kl(env, params, policy, theta, theta)


def test_zopg_exact_exports_the_sequence_kl():
    from zopg import exact

    assert exact.sequence_kl is sequence_kl
