"""The gold utilities: deterministic, standardised under the SFT reference (checked on sequences
the standardisation never saw), the bigram-goodhart score against a direct NumPy sum, and
best-of-1024 on the gold gaining at least 2 reference sds."""

import itertools
import math

import jax
import numpy as np
import pytest

from zopg import ConfigError
from zopg.envs import make
from zopg.lm.gold import STANDARDISE_KEY, BigramGoodhart, GoldGRU, longest_run
from zopg.lm.reference import reference_policy
from zopg.preferences import make_utility, utility_names
from zopg.rollout import rollout_batch
from zopg.sequence_kl import sample_sequences

ENV_ID = "tokens/hmm-v16-l16"
NAMES = ("gold-gru", "bigram-goodhart")
FRESH = 4096


@pytest.fixture(scope="module")
def setting():
    env, params = make(ENV_ID)
    policy, ref = reference_policy("gru", env, params)
    # A key the standardisation does not use: these sequences test it, they did not fit it.
    assert STANDARDISE_KEY != 4
    tokens = sample_sequences(jax.random.PRNGKey(4), env, params, policy, ref, FRESH)
    bound = {name: make_utility(name).bind(env, params) for name in NAMES}
    return env, params, policy, ref, tokens, bound


def test_the_gold_utilities_are_known_by_name():
    assert set(NAMES) <= set(utility_names())
    assert isinstance(make_utility("gold-gru"), GoldGRU)
    assert isinstance(make_utility("bigram-goodhart", max_run=4), BigramGoodhart)


@pytest.mark.parametrize("name", NAMES)
def test_gold_is_standardised_under_the_reference(setting, name):
    """Mean 0 within 4 standard errors of FRESH sequences; sd 1 within 4 sds of the sample sd
    (≈ √((κ − 1) / 4n) relative, κ the kurtosis, estimated from the same sample)."""
    *_, tokens, bound = setting
    values = np.asarray(bound[name].score(tokens), np.float64)
    mean, sd = values.mean(), values.std(ddof=1)
    assert abs(mean) < 4 * sd / math.sqrt(FRESH), (mean, sd)
    kurtosis = np.mean((values - mean) ** 4) / sd**4
    assert abs(sd - 1.0) < 4 * math.sqrt((kurtosis - 1) / (4 * FRESH)), (sd, kurtosis)


@pytest.mark.parametrize("name", NAMES)
def test_gold_is_deterministic(setting, name):
    env, params, *_, tokens, bound = setting
    again = make_utility(name).bind(env, params)
    assert again == bound[name] and hash(again) == hash(bound[name])
    np.testing.assert_array_equal(again.score(tokens[:64]), bound[name].score(tokens[:64]))


def test_another_seed_is_another_gold(setting):
    env, params, *_, tokens, bound = setting
    other = make_utility("bigram-goodhart", seed=1).bind(env, params)
    correlation = np.corrcoef(other.score(tokens), bound["bigram-goodhart"].score(tokens))[0, 1]
    assert abs(correlation) < 0.5, correlation


def test_gold_reads_the_trajectory_final_observation(setting):
    env, params, policy, ref, _, bound = setting
    traj = rollout_batch(jax.random.PRNGKey(2), policy, ref, env, params, 32)
    for utility in bound.values():
        np.testing.assert_allclose(utility(traj), utility.score(traj.final_obs[:, :-1]))


def numpy_longest_run(row):
    best = current = 1
    for previous, token in itertools.pairwise(row):
        current = current + 1 if token == previous else 1
        best = max(best, current)
    return best


def test_bigram_goodhart_against_a_direct_sum(setting):
    *_, tokens, bound = setting
    utility = bound["bigram-goodhart"]
    table = np.asarray(utility.bound.tables.tree["bigram"], np.float64)
    rows = np.asarray(tokens[:200])
    runs = np.array([numpy_longest_run(r) for r in rows])
    np.testing.assert_array_equal(longest_run(rows), runs)
    expected = [
        sum(table[a, b] for a, b in itertools.pairwise(r)) - 8.0 * max(run - 6, 0)
        for r, run in zip(rows, runs, strict=True)
    ]
    np.testing.assert_allclose(utility.raw_score(rows), expected, rtol=1e-5, atol=1e-4)


def test_repeating_the_top_token_maximises_the_bigram_and_the_penalty_punishes_it(setting):
    """Where the proxies cannot see: the bigram part alone is largest for one token repeated,
    and the run penalty makes that sequence far worse than the reference's typical one."""
    *_, tokens, bound = setting
    utility = bound["bigram-goodhart"]
    table = np.asarray(utility.bound.tables.tree["bigram"])
    top = int(np.argmax(np.diag(table)))
    assert table[top, top] == table.max()
    repeated = np.full((1, 16), top)
    no_penalty = BigramGoodhart(penalty=0.0).bind(*setting[:2])
    assert float(no_penalty.raw_score(repeated)[0]) == pytest.approx(15 * table.max(), rel=1e-5)
    assert float(utility.score(repeated)[0]) < -5.0
    # Rare under the reference, which is why the proxies fitted on its pairs barely see it.
    assert np.mean(np.asarray(longest_run(tokens)) > 6) < 0.03


@pytest.mark.slow  # 65,536 reference sequences per utility (about 15 s each on one core)
@pytest.mark.parametrize("name", NAMES)
def test_best_of_1024_on_the_gold_gains_at_least_two_sds(setting, name):
    env, params, policy, ref, _, bound = setting
    tokens = sample_sequences(jax.random.PRNGKey(11), env, params, policy, ref, 64 * 1024)
    best = np.asarray(bound[name].score(tokens)).reshape(64, 1024).max(axis=1)
    se = best.std(ddof=1) / math.sqrt(64)
    assert best.mean() - 4 * se >= 2.0, (best.mean(), se)


def test_bad_gold_settings_are_refused_in_one_line(setting):
    with pytest.raises(ConfigError) as error:
        make_utility("gold-gru", hidden=0)
    assert str(error.value) == "gold-gru.hidden = 0: must be an integer in [1, 4096]"
    with pytest.raises(ConfigError, match=r"^bigram-goodhart.penalty = -1.0"):
        make_utility("bigram-goodhart", penalty=-1.0)
    with pytest.raises(ConfigError, match=r"^gold-gru.reference = 'mlp': must be one of gru"):
        make_utility("gold-gru", reference="mlp")
    # What bind fills in is not a parameter.
    with pytest.raises(ConfigError, match="gold-gru utility parameter = 'bound'"):
        make_utility("gold-gru", bound=None)
    with pytest.raises(ConfigError, match="must be bound to its env first"):
        make_utility("gold-gru").score(np.zeros((1, 16), np.int32))
    with pytest.raises(ConfigError, match="needs a token environment"):
        make_utility("bigram-goodhart").bind(*make("gridworld/open-5x5"))
