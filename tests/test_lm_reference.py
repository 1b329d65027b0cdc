"""The SFT reference: near the HMM's own likelihood (the Bayes limit, by the forward algorithm),
deterministic, stored as arrays that load back exactly, found before it is retrained."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from zopg import ConfigError
from zopg.envs import make
from zopg.lm import reference
from zopg.lm.reference import (
    SFTSettings,
    hmm_conditional_nll,
    hmm_sequences,
    load_reference,
    reference_params,
    reference_policy,
    reference_record,
    save_reference,
    sequence_nll,
    train_reference,
)
from zopg.policies import make_policy

ENV_ID = "tokens/hmm-v16-l16"
TEST_SEQUENCES = 2048


@pytest.fixture(scope="module")
def default_env():
    return make(ENV_ID)


@pytest.mark.parametrize("name", ["gru", pytest.param("transformer", marks=pytest.mark.slow)])
def test_the_shipped_reference_is_within_a_hundredth_of_a_nat_of_the_hmm(default_env, name):
    """On fresh HMM sequences, −log π_ref per generated token against the HMM's exact conditional
    −log P: the gap is the reference's excess loss, ≥ 0 in expectation (the HMM is Bayes
    optimal) and, for a converged SFT, small. Paired per sequence, so the standard error is of
    the difference (about 0.002 nats/token here)."""
    env, params = default_env
    policy = make_policy(name, env, params)
    theta = reference_params(env, params, policy)
    tokens = hmm_sequences(jax.random.PRNGKey(99), params, TEST_SEQUENCES)
    gap = (
        np.asarray(
            sequence_nll(policy, theta, params, tokens) - hmm_conditional_nll(env, params, tokens)
        )
        / params.length
    )
    se = gap.std(ddof=1) / math.sqrt(TEST_SEQUENCES)
    assert gap.mean() > -4 * se, (gap.mean(), se)
    assert gap.mean() < 0.01, (gap.mean(), se)
    record = reference_record(params, policy)
    assert record["settings"] == dataclasses.asdict(SFTSettings())
    assert record["nll_per_token"] - record["hmm_nll_per_token"] < 0.01


def test_hmm_conditional_nll_is_the_joint_minus_the_prompt(default_env):
    """With a prompt, −log P(generated | prompt) = −log P(all) + log P(prompt); without one it
    is −log P(all), each from the forward algorithm that test_tokens checks by brute force."""
    env, _ = make(ENV_ID, vocab=4, length=3, prompt_length=2)
    params = make(ENV_ID, vocab=4, length=3, prompt_length=2)[1]
    whole = make(ENV_ID, vocab=4, length=0 + 1, prompt_length=5)[1]
    tokens = hmm_sequences(jax.random.PRNGKey(3), params, 64)
    expected = env.prompt_log_prob(params, tokens[:, :2]) - env.prompt_log_prob(whole, tokens)
    np.testing.assert_allclose(hmm_conditional_nll(env, params, tokens), expected, rtol=1e-6)
    assert np.all(np.asarray(expected) > 0)


# A small network and short training shared by the tests that train: one compiled program.
SMALL = {"vocab": 4, "length": 4}
SMALL_NET = {"embed": 8, "hidden": 8}
SMALL_SFT = SFTSettings(steps=40, batch=32, learning_rate=1e-2)


def test_training_is_deterministic_and_lowers_the_loss():
    env, params = make(ENV_ID, **SMALL)
    policy = make_policy("gru", env, params, **SMALL_NET)
    settings = SMALL_SFT
    first, record = train_reference(env, params, policy, settings)
    second, _ = train_reference(env, params, policy, settings)
    for a, b in zip(
        jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(second), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    tokens = hmm_sequences(jax.random.PRNGKey(5), params, 512)
    start = policy.init(jax.random.split(jax.random.PRNGKey(settings.seed), 3)[0])
    before = float(np.mean(sequence_nll(policy, start, params, tokens)))
    after = float(np.mean(sequence_nll(policy, first, params, tokens)))
    assert after < before - 0.1, (before, after)
    assert record["nll_per_token"] >= record["hmm_nll_per_token"] - 0.05


def test_arrays_round_trip_and_foreign_files_are_refused(tmp_path, default_env):
    env, params = default_env
    policy = make_policy("gru", env, params, embed=4, hidden=4)
    theta = policy.init(jax.random.PRNGKey(0))
    path = save_reference(tmp_path / "ref.npz", theta, {"note": "test"})
    loaded = load_reference(path, policy)
    for a, b in zip(
        jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(loaded), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    other = make_policy("gru", env, params, embed=4, hidden=5)
    with pytest.raises(ConfigError, match="its arrays do not fit"):
        load_reference(path, other)
    hostile = tmp_path / "hostile.npz"
    np.savez(hostile, **{"params/head/bias": np.array([object()], dtype=object)})
    with pytest.raises(ConfigError, match="not a reference's arrays"):
        load_reference(hostile, policy)


def test_a_missing_reference_is_trained_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOPG_CACHE", str(tmp_path))
    env, params = make(ENV_ID, **SMALL)
    policy = make_policy("gru", env, params, **SMALL_NET)
    settings = SMALL_SFT
    calls = []
    train = reference.train_reference
    monkeypatch.setattr(
        reference, "train_reference", lambda *a, **k: calls.append(1) or train(*a, **k)
    )
    first = reference_params(env, params, policy, settings)
    second = reference_params(env, params, policy, settings)
    assert len(calls) == 1
    assert len(list((tmp_path / "sft").glob("*.npz"))) == 1
    for a, b in zip(
        jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(second), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_the_shipped_references_are_found_without_training(default_env, monkeypatch, tmp_path):
    monkeypatch.setenv("ZOPG_CACHE", str(tmp_path))
    monkeypatch.setattr(reference, "train_reference", lambda *a, **k: pytest.fail("trained"))
    env, params = default_env
    for name in ("gru", "transformer"):
        reference_params(env, params, make_policy(name, env, params))


@pytest.mark.parametrize("parameterisation", ["all", "head", "lora"])
def test_every_parameterisation_starts_at_the_reference(default_env, parameterisation):
    """π_ref's params in each parameterisation give the reference's own log-probabilities."""
    env, params = default_env
    full = make_policy("gru", env, params)
    theta = reference_params(env, params, full)
    policy, ref = reference_policy("gru", env, params, parameterisation=parameterisation, rank=2)
    tokens = hmm_sequences(jax.random.PRNGKey(8), params, 16)
    np.testing.assert_allclose(
        policy.sequence_log_probs(ref, tokens),
        full.sequence_log_probs(theta, tokens),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bad_settings_and_policies_are_refused_in_one_line(default_env):
    env, params = default_env
    with pytest.raises(ConfigError, match=r"^sft.steps = 0: must be an integer in"):
        SFTSettings(steps=0)
    with pytest.raises(ConfigError, match=r"^sft.learning_rate = -1.0"):
        SFTSettings(learning_rate=-1.0)
    head = make_policy("gru", env, params, parameterisation="head")
    with pytest.raises(ConfigError) as error:
        train_reference(env, params, head, SFTSettings(steps=1))
    assert str(error.value) == (
        "parameterisation = 'head': the reference is trained with 'all' (the others adapt a "
        "trained base)"
    )
    cart, cart_params = make("gymnax/CartPole-v1")
    with pytest.raises(ConfigError, match="needs a token environment"):
        reference_policy("gru", cart, cart_params)
