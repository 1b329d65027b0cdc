"""Best-of-n: the exact law against brute force over every n-tuple, its KL against the
log n - (n - 1)/n bound (equal on a fine space, far below on a tiny one), the sampler on the
token environment against the exact law, the Monte Carlo KL estimate, and refusals."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from zopg import ConfigError
from zopg.envs import make
from zopg.lm.best_of_n import (
    best_of_n_indices,
    best_of_n_kl,
    best_of_n_kl_bound,
    best_of_n_kl_estimate,
    best_of_n_law,
    best_of_n_sequences,
)
from zopg.policies import make_policy

ENV_ID = "tokens/hmm-v16-l16"
# Five outcomes: a tie at the highest level that has mass (outcomes 0 and 3, score 2), and an
# outcome of probability 0 above it, which best-of-n must never pick.
TINY_PROBS = np.array([0.1, 0.3, 0.0, 0.35, 0.25])
TINY_SCORES = np.array([2.0, 1.0, 3.0, 2.0, 0.5])


def brute_force_law(probs, scores, n):
    """The pick's law from every n-tuple of outcomes, each weighted by its probability, the
    pick the first draw of the tuple whose score is the tuple's maximum."""
    law = np.zeros(len(probs))
    for draws in itertools.product(range(len(probs)), repeat=n):
        tuple_scores = [scores[d] for d in draws]
        first = tuple_scores.index(max(tuple_scores))
        law[draws[first]] += math.prod(probs[d] for d in draws)
    return law


def kl_of(law, probs):
    kept = law > 0
    return float(np.sum(law[kept] * np.log(law[kept] / probs[kept])))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_the_law_is_the_brute_force_over_every_n_tuple(n):
    want = brute_force_law(TINY_PROBS, TINY_SCORES, n)
    got = best_of_n_law(TINY_PROBS, TINY_SCORES, n)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[2] == 0.0  # no mass, never picked, whatever its score
    # The tied pair keeps its reference ratio 0.1 : 0.35 inside the winning level.
    assert got[0] / got[3] == pytest.approx(0.1 / 0.35, rel=1e-12)
    kl = best_of_n_kl(TINY_PROBS, TINY_SCORES, n)
    assert kl == pytest.approx(kl_of(want, TINY_PROBS), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_levels_without_mass_at_the_bottom_and_in_between(n):
    probs, scores = np.array([0.0, 0.4, 0.0, 0.6, 0.0]), np.array([0.0, 1.0, 1.5, 2.0, -1.0])
    want = brute_force_law(probs, scores, n)
    np.testing.assert_allclose(best_of_n_law(probs, scores, n), want, rtol=0, atol=1e-12)
    assert best_of_n_kl(probs, scores, n) == pytest.approx(kl_of(want, probs), abs=1e-12)


def test_one_candidate_is_the_reference_and_costs_no_kl():
    np.testing.assert_allclose(best_of_n_law(TINY_PROBS, TINY_SCORES, 1), TINY_PROBS, atol=1e-15)
    assert abs(best_of_n_kl(TINY_PROBS, TINY_SCORES, 1)) < 1e-15
    assert best_of_n_kl_bound(1) == 0.0


def test_on_a_tiny_space_the_kl_is_far_below_the_bound_and_tends_to_the_top_level():
    # Measured: n = 2: 0.1655 against the bound's 0.1931; n = 4: 0.5142 against 0.6363;
    # n = 16: 0.7978 against 1.8351. As n grows the pick is the reference restricted to the
    # top level (mass 0.45), so the KL tends to -log 0.45 = 0.7985 while the bound grows as log n.
    for n in [2, 3, 4, 16, 64]:
        kl, bound = best_of_n_kl(TINY_PROBS, TINY_SCORES, n), best_of_n_kl_bound(n)
        assert 0 < kl < bound
        assert kl < -math.log(0.45)
    assert best_of_n_kl_bound(16) - best_of_n_kl(TINY_PROBS, TINY_SCORES, 16) > 1.0
    # 0.55 ** 1000 ~ 1e-260: only the top level is left.
    assert best_of_n_kl(TINY_PROBS, TINY_SCORES, 1000) == pytest.approx(-math.log(0.45), 1e-12)


@pytest.mark.parametrize("n", [2, 16, 128, 1024])
def test_on_a_fine_space_the_kl_is_the_bound(n):
    """K equiprobable outcomes with distinct scores are the bins k = ceil(K U) of a continuous
    uniform U, and best-of-n's pick is the bin of the maximum of n uniforms, whose KL is the
    bound. So bound - KL = Σ_k P_k g_k, g_k the KL of that maximum's law inside bin k from the
    uniform there (the chain rule). In bin k >= 2 the density ratio to the uniform lies in
    [m, M] with M / m <= R_k = (k / (k - 1))^(n - 1), so g_k <= log R_k and
    g_k <= χ² <= (M - 1)(1 - m) <= (R_k - 1)² / 4; in bin 1 it is the bound itself. The sum
    is the tolerance: about 6 times the measured gap, which is close to n² / (24 K²)
    (n = 16: 2.7e-8; n = 1024: 1.09e-4).
    """
    size = 20_000
    k = np.arange(1, size + 1, dtype=np.float64)
    # Scores in a shuffled order, so that the law has to sort them.
    order = np.random.default_rng(0).permutation(size)
    probs, scores = np.full(size, 1 / size), k[order]
    law_by_rank = (k / size) ** n - ((k - 1) / size) ** n
    np.testing.assert_allclose(
        best_of_n_law(probs, scores, n), law_by_rank[order], rtol=1e-9, atol=1e-300
    )
    log_ratio = (n - 1) * np.log(k[1:] / k[:-1])
    within = np.minimum(log_ratio, np.expm1(np.minimum(log_ratio, 20.0)) ** 2 / 4)
    bound = best_of_n_kl_bound(n)
    gap_limit = law_by_rank[0] * bound + np.sum(law_by_rank[1:] * within)
    kl = best_of_n_kl(probs, scores, n)
    assert bound - gap_limit <= kl <= bound
    assert gap_limit < 1e-3  # the limit is tight enough to mean something


def test_the_bound_is_log_n_minus_the_mean_gap():
    assert best_of_n_kl_bound(2) == pytest.approx(math.log(2) - 0.5, abs=1e-15)
    assert best_of_n_kl_bound(4096) == pytest.approx(math.log(4096) - 4095 / 4096, abs=1e-15)
    assert best_of_n_kl_bound(1e3) == best_of_n_kl_bound(1000)  # an integral float is an int


def test_indices_take_the_first_of_tied_maxima():
    scores = jnp.array([[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0], [5.0, 1.0, 1.0, 5.0]])
    np.testing.assert_array_equal(best_of_n_indices(scores), [1, 0, 0])
    ints = np.random.default_rng(1).integers(0, 3, (500, 6))  # many ties
    want = [list(row).index(row.max()) for row in ints]
    np.testing.assert_array_equal(jax.jit(best_of_n_indices)(ints), want)


def level_score(tokens):
    """A score with many ties: the count of token 2, plus a half when the first token is 0."""
    return jnp.sum(tokens == 2, axis=-1) + 0.5 * (tokens[..., 0] == 0)


@pytest.fixture(scope="module")
def token_space():
    """The V 3, L 4 token environment, a random GRU reference (weights scaled up so its law is
    far from uniform), and all 81 sequences with their exact reference probabilities."""
    env, env_params = make(ENV_ID, vocab=3, length=4)
    policy = make_policy("gru", env, env_params)
    params = jax.tree_util.tree_map(lambda x: 3.0 * x, policy.init(jax.random.PRNGKey(0)))
    sequences = np.array(list(itertools.product(range(3), repeat=4)), np.int32)
    log_probs = np.asarray(policy.sequence_log_probs(params, jnp.asarray(sequences)), np.float64)
    steps = np.take_along_axis(log_probs, sequences[..., None], axis=-1)[..., 0]
    probs = np.exp(steps.sum(axis=1))
    assert abs(probs.sum() - 1.0) < 1e-5
    assert probs.max() / probs.min() > 10  # far from uniform, so the shares matter
    return env, env_params, policy, params, sequences, probs


def chi_square_p_value(counts, probs):
    """Pearson's test of counts against probs, cells expecting fewer than 5 pooled into one
    (the χ² law of the statistic needs about 5 per cell)."""
    expected = counts.sum() * probs
    small = expected < 5
    observed = np.append(counts[~small], counts[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    statistic = np.sum((observed - expected) ** 2 / expected)
    return stats.chi2.sf(statistic, len(expected) - 1)


def test_the_sampler_follows_the_exact_law_on_all_81_sequences(token_space):
    env, env_params, policy, params, sequences, probs = token_space
    n, draws = 4, 20_000
    result = best_of_n_sequences(
        jax.random.PRNGKey(3), env, env_params, policy, params, level_score, n, draws
    )
    tokens = np.asarray(result.tokens)
    assert tokens.shape == (draws, 4) and result.candidate_scores.shape == (draws, n)
    np.testing.assert_array_equal(result.scores, np.asarray(level_score(tokens)))
    np.testing.assert_array_equal(result.scores, np.max(result.candidate_scores, axis=1))
    np.testing.assert_array_equal(result.index, np.argmax(result.candidate_scores, axis=1))
    counts = np.bincount(tokens @ np.array([27, 9, 3, 1]), minlength=81)
    law = best_of_n_law(probs, np.asarray(level_score(jnp.asarray(sequences))), n)
    # Under the law, the p-value is uniform: it falls below 1e-4 by chance once in 10**4 runs.
    assert chi_square_p_value(counts, law) > 1e-4
    # The same picks are far from the reference itself: the test can tell the two apart.
    assert chi_square_p_value(counts, probs) < 1e-12


def test_a_group_split_over_calls_keeps_the_first_maximiser(token_space):
    env, env_params, policy, params, _, _ = token_space
    # n = 11 over calls of at most 4 candidates: 3 pieces of width 4, the last one part real.
    result = best_of_n_sequences(
        jax.random.PRNGKey(4), env, env_params, policy, params, level_score, 11, 8, chunk=4
    )
    assert result.tokens.shape == (8, 4) and result.candidate_scores.shape == (8, 11)
    np.testing.assert_array_equal(result.index, np.argmax(result.candidate_scores, axis=1))
    np.testing.assert_array_equal(result.scores, np.max(result.candidate_scores, axis=1))
    np.testing.assert_array_equal(result.scores, np.asarray(level_score(result.tokens)))
    assert np.any(np.asarray(result.index) >= 4)  # later pieces do win sometimes


def test_the_monte_carlo_estimate_matches_the_exact_kl_on_a_fine_space():
    """Picks from K = 2**20 equiprobable outcomes (scores 1 .. K), the candidates themselves
    the reference sample. Per pick the term is (n - 1) log F + log n, with F ~ Beta(n, 1):
    its sd over N picks is sd / √N. The empirical CDF adds an error of sd at most
    (n - 1) √(E[(1 - F) / F] / M) = √((n - 1) / M) to the mean (E[1 / F] = n / (n - 1));
    the two may be dependent, so their sds add. The discreteness (a pick's log-ratio is off by
    about (n - 1) / (2k)) biases the mean by about n / (2K), and (count + 1) / (M + 1) by about
    1 / M: both far below the tolerance, 5 sds (chance failure < 1e-6) plus n / K.
    """
    size, n, picks = 2**20, 16, 100_000
    candidates = np.random.default_rng(7).integers(1, size + 1, (picks, n)).astype(np.float64)
    estimate = best_of_n_kl_estimate(candidates.max(axis=1), candidates, n)
    exact = best_of_n_kl(np.full(size, 1 / size), np.arange(1, size + 1), n)
    terms = (n - 1) * np.log(candidates.max(axis=1) / size)
    sd = terms.std(ddof=1) / math.sqrt(picks) + math.sqrt((n - 1) / candidates.size)
    tolerance = 5 * sd + n / size
    assert abs(estimate - exact) <= tolerance
    # Tight enough to tell n = 16 from n = 17.
    assert tolerance < best_of_n_kl_bound(17) - best_of_n_kl_bound(16)


def test_the_estimate_approaches_the_bound_for_continuous_scores():
    # Normal scores, a separate reference sample; the tolerance as in the test above.
    rng = np.random.default_rng(8)
    n, picks, size = 64, 20_000, 400_000
    pick_scores = rng.standard_normal((picks, n)).max(axis=1)
    estimate = best_of_n_kl_estimate(pick_scores, rng.standard_normal(size), n)
    sd = (n - 1) / n / math.sqrt(picks) + math.sqrt((n - 1) / size)  # Exp((n - 1) / n) terms
    assert abs(estimate - best_of_n_kl_bound(n)) <= 5 * sd
    assert best_of_n_kl_estimate([0.3], [1.0, 2.0], 1) == 0.0  # n = 1 costs nothing


def test_a_pick_above_every_reference_score_stays_finite():
    # F = (0 + 1) / (2 + 1) for the lowest pick, (2 + 1) / (2 + 1) = 1 for the highest.
    got = best_of_n_kl_estimate([-5.0, 9.0], [1.0, 2.0], 4)
    assert got == pytest.approx(math.log(4) + 3 * (math.log(1 / 3) + 0.0) / 2, rel=1e-12)


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError) as err:
        best_of_n_law(TINY_PROBS, TINY_SCORES[:4], 2)
    assert str(err.value) == "scores has shape (4,): must have the shape of ref_probs, (5,)"
    with pytest.raises(ConfigError, match=r"^n = 0: must be an integer in \[1, inf\]$"):
        best_of_n_kl_bound(0)
    for bad_n in (2.5, True, "4"):
        with pytest.raises(ConfigError, match=r"^n = .*: must be an integer in \[1, inf\]$"):
            best_of_n_kl(TINY_PROBS, TINY_SCORES, bad_n)
    with pytest.raises(ConfigError, match=r"ref_probs sum to 0\.9.*: must sum to 1"):
        best_of_n_law(TINY_PROBS * 0.9, TINY_SCORES, 2)
    with pytest.raises(ConfigError, match=r"ref_probs holds -0\.1: every probability must be"):
        best_of_n_law([0.6, 0.5, -0.1], [1, 2, 3], 2)
    with pytest.raises(ConfigError, match=r"ref_probs has shape \(2, 2\): must be a non-empty"):
        best_of_n_law(np.full((2, 2), 0.25), np.zeros((2, 2)), 2)
    with pytest.raises(ConfigError, match=r"scores holds NaN"):
        best_of_n_law(TINY_PROBS, [1.0, np.nan, 2.0, 3.0, 4.0], 2)
    with pytest.raises(ConfigError, match=r"pick_scores is empty"):
        best_of_n_kl_estimate([], [1.0], 2)
    with pytest.raises(ConfigError, match=r"reference_scores holds NaN"):
        best_of_n_kl_estimate([1.0], [np.nan], 2)


def test_the_sampler_refuses_bad_settings(token_space):
    env, env_params, policy, params, _, _ = token_space
    args = (jax.random.PRNGKey(0), env, env_params, policy, params)
    with pytest.raises(ConfigError, match=r"^num_sequences = 0: must be an integer"):
        best_of_n_sequences(*args, level_score, 4, 0)
    with pytest.raises(ConfigError, match=r"^n = -1: must be an integer"):
        best_of_n_sequences(*args, level_score, -1, 8)
    with pytest.raises(ConfigError, match=r"^score_fn = 3: must be a function"):
        best_of_n_sequences(*args, 3, 4, 8)
    with pytest.raises(ConfigError, match=r"score_fn returned shape \(2, 4, 4\)"):
        best_of_n_sequences(*args, lambda tokens: tokens.astype(float), 4, 2)
    with pytest.raises(ConfigError, match=r"score_fn returned NaN"):
        best_of_n_sequences(*args, lambda tokens: jnp.full(tokens.shape[:-1], jnp.nan), 4, 2)
    grid, grid_params = make("gridworld/open-5x5")
    with pytest.raises(ConfigError, match=r"needs a token environment"):
        best_of_n_sequences(
            jax.random.PRNGKey(0), grid, grid_params, policy, params, level_score, 4, 2
        )


def prompted_score(tokens):
    """A score that favours prompt 0 by far (so candidates with prompts of their own would pick
    prompt 0 almost always) and, within a prompt, completions with more 1s and a leading 0."""
    completion = tokens[..., 1:]
    return (
        10.0 * (tokens[..., 0] == 0)
        + jnp.sum(completion == 1, axis=-1)
        + 0.5 * (completion[..., 0] == 0)
    )


def _completion_law(policy, params, prompt: int) -> np.ndarray:
    """π(completion | prompt) over the 8 completions of V 2, L 3, in base-2 order."""
    completions = np.array(list(itertools.product(range(2), repeat=3)), np.int32)
    full = np.concatenate([np.full((8, 1), prompt, np.int32), completions], axis=1)
    log_probs = np.asarray(policy.sequence_log_probs(params, jnp.asarray(full)), np.float64)
    steps = np.take_along_axis(log_probs, full[..., None], axis=-1)[..., 0][:, 1:]
    return np.exp(steps.sum(axis=1)), np.asarray(prompted_score(jnp.asarray(full)))


# chunk 2 splits each group of 4 over two calls: 16,000 compiled calls, so it is slow.
@pytest.mark.parametrize("chunk", [4096, pytest.param(2, marks=pytest.mark.slow)])
def test_with_a_prompt_the_candidates_share_it_and_each_prompt_gets_its_own_law(chunk):
    """V 2, P 1, L 3: the picks' prompts follow the environment's prompt law (candidates with
    prompts of their own would almost always pick prompt 0, which the score favours by 10),
    and given its prompt a pick follows best_of_n_law over the 8 completions under
    π(· | prompt)."""
    env, env_params = make(ENV_ID, vocab=2, length=3, prompt_length=1)
    policy = make_policy("gru", env, env_params)
    params = jax.tree_util.tree_map(lambda x: 3.0 * x, policy.init(jax.random.PRNGKey(1)))
    n, draws = 4, 8_000
    result = best_of_n_sequences(
        jax.random.PRNGKey(6), env, env_params, policy, params, prompted_score, n, draws, chunk
    )
    np.testing.assert_array_equal(result.index, np.argmax(result.candidate_scores, axis=1))
    tokens = np.asarray(result.tokens)
    prompt_law = np.exp(np.asarray(env.prompt_log_prob(env_params, jnp.arange(2)[:, None])))
    np.testing.assert_allclose(prompt_law.sum(), 1.0, atol=1e-6)
    assert 0.1 < prompt_law[0] < 0.9  # both prompts common: the check below has power
    # Under the law the p-value is uniform: below 1e-4 by chance once in 10**4 runs.
    assert chi_square_p_value(np.bincount(tokens[:, 0], minlength=2), prompt_law) > 1e-4
    for prompt in range(2):
        given, scores = _completion_law(policy, params, prompt)
        np.testing.assert_allclose(given.sum(), 1.0, atol=1e-5)
        counts = np.bincount(tokens[tokens[:, 0] == prompt][:, 1:] @ [4, 2, 1], minlength=8)
        assert chi_square_p_value(counts, best_of_n_law(given, scores, n)) > 1e-4
        assert chi_square_p_value(counts, given) < 1e-6  # best-of-n moved: the test has power
