"""KL-penalised REINFORCE and offline DPO/IPO on token pairs (zopg.algorithms.token_finetune)
against the closed forms of their optima on a space small enough to enumerate."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import t as scipy_t

from zopg.algorithms.token_finetune import (
    PairSettings,
    ReinforceSettings,
    generated_log_probs,
    pair_runs,
    reinforce_runs,
)
from zopg.envs import make
from zopg.errors import ConfigError
from zopg.policies import make_policy

VOCAB, LENGTH = 3, 2


@pytest.fixture(scope="module")
def space():
    env, env_params = make("tokens/hmm-v16-l16", vocab=VOCAB, length=LENGTH)
    policy = make_policy("gru", env, env_params)
    ref = policy.init(jax.random.PRNGKey(0))
    every = jnp.array(list(itertools.product(range(VOCAB), repeat=LENGTH)), jnp.int32)
    return env, env_params, policy, ref, every


def _log_probs(space, params):
    _, env_params, policy, _, every = space
    return np.asarray(generated_log_probs(env_params, policy, params, every), np.float64)


def _kl(log_p, log_q):
    return float(np.sum(np.exp(log_p) * (log_p - log_q)))


def _tilted(log_ref, score):
    """log of π* ∝ π_ref exp(score), the optimum of E[score] − KL(π ‖ π_ref)."""
    logits = log_ref + score
    return logits - np.logaddexp.reduce(logits)


def _kl_monitor(space):
    env, env_params, policy, ref, _ = space

    def monitor(params, key, *_):
        from zopg.sequence_kl import per_prefix_kl, sample_sequences

        tokens = sample_sequences(key, env, env_params, policy, params, 64)
        return {"kl": jnp.mean(per_prefix_kl(env, env_params, policy, params, ref, tokens))}

    return monitor


def test_generated_log_probs_is_a_law(space):
    # Over every sequence of the space, exp(log π) sums to 1: the log-probabilities are of whole
    # sequences, token by token.
    assert np.exp(_log_probs(space, space[3])).sum() == pytest.approx(1.0, abs=1e-5)


def test_reinforce_reaches_the_kl_regularised_optimum(space):
    # max E[r] − β KL(π ‖ π_ref) is attained at π* ∝ π_ref exp(r / β) (over whole sequences: a
    # GRU's conditionals can hold any law on 9 sequences). REINFORCE's stochastic steps end near
    # it: within a twentieth of the reference's own KL to it. (They settle there exactly: at π*
    # the penalised reward r − β log(π/π_ref) is β log Z for every sequence, so every
    # leave-one-out advantage, and with it the gradient's noise, vanishes.)
    env, env_params, policy, ref, every = space
    beta = 0.5
    table = jnp.asarray(np.random.default_rng(1).normal(size=(VOCAB, VOCAB)), jnp.float32)

    def reward(t, tokens):
        return t[tokens[..., 0], tokens[..., 1]]

    settings = ReinforceSettings(steps=100, batch=256, learning_rate=3e-2, eval_every=50)
    params, history = reinforce_runs(
        jax.random.PRNGKey(3)[None],
        [beta],
        reward,
        table[None],
        env,
        env_params,
        policy,
        ref,
        _kl_monitor(space),
        settings,
    )
    final = jax.tree_util.tree_map(lambda x: x[0], params)
    log_ref = _log_probs(space, ref)
    target = _tilted(log_ref, np.asarray(reward(table, every), np.float64) / beta)
    start = _kl(target, log_ref)
    assert start > 0.3  # the tilt is far from the reference: the check below can fail
    assert _kl(target, _log_probs(space, final)) < start / 20
    assert history["step"] == [0, 50, 100]
    assert np.asarray(history["kl"]).shape == (3, 1)


@pytest.mark.slow  # the closed-form optimum above already checks the penalty's sign and size
def test_reinforce_without_penalty_keeps_to_the_proxy_argmax(space):
    # With β_KL = 0 and the same key, the run drifts further from π_ref than with β_KL = 1.
    env, env_params, policy, ref, _ = space
    table = jnp.arange(VOCAB * VOCAB, dtype=jnp.float32).reshape(VOCAB, VOCAB) / 4.0
    key = jax.random.PRNGKey(5)
    params, _ = reinforce_runs(
        jnp.stack([key, key]),
        [0.0, 1.0],
        lambda t, tokens: t[tokens[..., 0], tokens[..., 1]],
        jnp.stack([table, table]),
        env,
        env_params,
        policy,
        ref,
        _kl_monitor(space),
        ReinforceSettings(steps=100, batch=128, learning_rate=3e-2, eval_every=100),
    )
    log_ref = _log_probs(space, ref)
    free, held = (
        _log_probs(space, jax.tree_util.tree_map(lambda x, i=i: x[i], params)) for i in (0, 1)
    )
    assert _kl(free, log_ref) > 2 * _kl(held, log_ref)
    # The unpenalised run puts most of its mass on the best sequence (2, 2).
    assert np.exp(free[-1]) > 0.5


def _all_pairs(every):
    rows = list(itertools.product(range(every.shape[0]), repeat=2))
    a = np.array([i for i, _ in rows])
    b = np.array([j for _, j in rows])
    return a, b


@pytest.mark.parametrize(
    # IPO's case is slow: both share every line of pair_runs but the loss, which
    # test_dpo.py checks against its formula.
    "loss",
    ["sigmoid", pytest.param("ipo", marks=pytest.mark.slow)],
)
def test_pairs_reach_the_closed_form_optimum(space, loss):
    # With every ordered pair of the space and soft labels, each loss has a closed-form optimum:
    # DPO with labels σ(s_a − s_b) puts β(log-ratio_a − log-ratio_b) = s_a − s_b, so π* ∝ π_ref
    # exp(s / β); IPO with labels 1/2 + (s_a − s_b)/c puts log-ratio_a − log-ratio_b =
    # (2p − 1)/(2β) = (s_a − s_b)/(cβ), so π* ∝ π_ref exp(s / (cβ)).
    _, env_params, policy, ref, every = space
    scores = np.random.default_rng(2).normal(size=every.shape[0])
    a, b = _all_pairs(every)
    gap = scores[a] - scores[b]
    if loss == "sigmoid":
        beta = 0.5
        labels, tilt = 1.0 / (1.0 + np.exp(-gap)), scores / beta
    else:
        # IPO's target margin 1/(2β) is far larger than DPO's scale: a small β keeps the tilt
        # as far from π_ref as DPO's.
        beta, c = 0.05, 2.0 * np.abs(gap).max()
        labels, tilt = 0.5 + gap / c, scores / (c * beta)
    settings = PairSettings(loss=loss, steps=300, batch=81, learning_rate=3e-2, eval_every=300)
    params, _ = pair_runs(
        jax.random.PRNGKey(4)[None],
        [beta],
        every[a][None],
        every[b][None],
        labels[None],
        env_params,
        policy,
        ref,
        lambda p, k: {"nothing": jnp.zeros(())},
        settings,
    )
    final = jax.tree_util.tree_map(lambda x: x[0], params)
    log_ref = _log_probs(space, ref)
    target = _tilted(log_ref, tilt)
    start = _kl(target, log_ref)
    assert start > 0.3
    assert _kl(target, _log_probs(space, final)) < start / 20


@pytest.mark.parametrize(
    ("make_settings", "field"),
    [
        (lambda: ReinforceSettings(batch=1), "batch"),
        (lambda: ReinforceSettings(steps=10, eval_every=20), "eval_every"),
        (lambda: ReinforceSettings(learning_rate=0.0), "learning_rate"),
        (lambda: PairSettings(loss="hinge"), "loss"),
        (lambda: PairSettings(steps=0), "steps"),
    ],
)
def test_bad_settings_name_the_field(make_settings, field):
    with pytest.raises(ConfigError, match=field):
        make_settings()


def test_pairs_of_mismatched_shapes_are_refused(space):
    _, env_params, policy, ref, every = space
    with pytest.raises(ConfigError, match="pairs"):
        pair_runs(
            jax.random.PRNGKey(0)[None],
            [0.1],
            every[None],
            every[None, :4],
            np.ones((1, every.shape[0])),
            env_params,
            policy,
            ref,
            lambda p, k: {},
        )


def test_the_study_summary_fits_only_the_seeds_that_moved():
    # A seed whose proxy stayed at its constant start never leaves π_ref (√KL 0 throughout):
    # the fit leaves it out, the means and per-seed counts keep it.
    study = pytest.importorskip("benchmarks.studies.lm_overoptimisation_policies")
    d = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 1.2, 2.1, 2.9], [0.0, 0.0, 0.0, 0.0]])
    gold = np.array([[0.0, 1.0, 1.5, -2.0], [0.0, 1.1, 1.4, -1.0], [0.0, 0.01, -0.02, 0.0]])
    curve = {"step": np.arange(4) * 20, "d": d, "gold": gold}
    np.testing.assert_array_equal(study._moved(curve), [True, True, False])
    entry = study.summarise_curve(curve)
    assert entry["seeds_fitted"] == 2
    assert entry["peak_step"] == 40  # the mean over all three seeds peaks at the third point
    assert entry["gain_at_peak"] == pytest.approx(gold[:, 2].mean())
    drop = gold[:, 2] - gold[:, 3]
    assert entry["drop"] == pytest.approx(drop.mean())
    half = scipy_t.ppf(0.975, 2) * drop.std(ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(entry["drop_ci"], [drop.mean() - half, drop.mean() + half])
    assert entry["seeds_below_reference_at_end"] == 2
    # Gao et al.'s RL form on the moving seeds alone peaks inside the measured range.
    assert 0 < entry["d_star"] < 3
