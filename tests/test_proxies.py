"""Proxy reward models of token sequences: what each kind can learn from Bradley–Terry pairs
labelled by a synthetic reward, early stopping, the ensemble's objectives, saving, refusals."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg import ConfigError
from zopg.lm.proxies import (
    FittedProxy,
    ProxySpec,
    evaluate_pairs,
    fit_proxy,
    held_out_accuracy,
    load_proxy,
    make_proxy,
    proxy_report,
    save_proxy,
    split_pairs,
)


def random_pairs(seed, num_pairs, vocab, length):
    rng = np.random.default_rng(seed)
    shape = (num_pairs, length)
    return rng.integers(0, vocab, shape), rng.integers(0, vocab, shape), rng


def bt_votes(rng, reward_a, reward_b):
    """One 0/1 Bradley–Terry draw per pair, and the true P(a preferred)."""
    p = 1.0 / (1.0 + np.exp(-(reward_a - reward_b)))
    return (rng.random(p.shape) < p).astype(np.float32), p


def unigram_reward(w, tokens):
    return w[tokens].sum(-1)


def bigram_reward(table, tokens):
    return table[tokens[:, :-1], tokens[:, 1:]].sum(-1)


# -- the spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    # gru-64 differs from gru-16 in its width only; the ensemble's start is checked below.
    ["linear-unigram", "linear-bigram", "gru-16", pytest.param("gru-64", marks=pytest.mark.slow)],
)
def test_every_kind_scores_any_batch_shape_and_starts_neutral(kind):
    spec = make_proxy(kind, 5, 6)
    assert hash(spec) == hash(make_proxy(kind, 5, 6)) and spec == make_proxy(kind, 5, 6)
    params = jax.jit(spec.init)(jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 3, 6), 0, 5)
    scores, members = jax.jit(lambda p, x: (spec.score(p, x), spec.member_scores(p, x)))(
        params, tokens
    )
    assert scores.shape == (2, 3) and scores.dtype == jnp.float32
    assert members.shape == (1, 2, 3)
    # Every kind starts at the neutral proxy: a zero score, so every pair is a coin flip.
    np.testing.assert_array_equal(scores, 0.0)


def test_linear_kinds_score_unigram_and_bigram_weights():
    tokens = np.array([[0, 2, 2, 1]])
    spec = make_proxy("linear-bigram", 3, 4)
    params = {"unigram": jnp.array([1.0, 10.0, 100.0]), "bigram": jnp.arange(9.0).reshape(3, 3)}
    # unigram: 1 + 100 + 100 + 10; bigram: B[0, 2] + B[2, 2] + B[2, 1] = 2 + 8 + 7.
    assert float(spec.score(params, tokens)[0]) == 211.0 + 17.0
    unigram = make_proxy("linear-unigram", 3, 4)
    assert float(unigram.score({"unigram": params["unigram"]}, tokens)[0]) == 211.0


def test_the_ensemble_objectives_are_the_mean_the_min_and_mean_minus_lambda_sd():
    spec = make_proxy("ensemble", 4, 5, base="gru-16", objective="mean-minus-sd", lam=0.5)
    assert (spec.base, spec.members, spec.lam) == ("gru-16", 4, 0.5)
    assert make_proxy("ensemble", 4, 5, objective="mean-minus-sd").lam == 1.0
    assert make_proxy("ensemble", 4, 5).objective == "mean"
    objectives = ("mean", "min", "mean-minus-sd")
    specs = [dataclasses.replace(spec, objective=objective) for objective in objectives]

    @jax.jit
    def scores(params, tokens):
        return spec.member_scores(params, tokens), [s.score(params, tokens) for s in specs]

    params = jax.jit(spec.init)(jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(2), (64, 5), 0, 4)
    members, _ = scores(params, tokens)
    np.testing.assert_array_equal(members, 0.0)  # every member starts neutral
    # ... from its own init seed.
    embeddings = np.asarray(params["params"]["embed"]["embedding"])
    assert embeddings.shape == (4, 4, 16)
    assert len({e.tobytes() for e in embeddings}) == 4
    # Random readouts, so that the members disagree.
    readout = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 1))
    params["params"]["readout"]["kernel"] = readout
    members, found = scores(params, tokens)
    members = np.asarray(members)
    assert members.shape == (4, 64) and np.all(members.std(axis=0) > 0)
    score = dict(zip(objectives, map(np.asarray, found), strict=True))
    np.testing.assert_allclose(score["mean"], members.mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(score["min"], members.min(axis=0), rtol=1e-6, atol=1e-6)
    expected = members.mean(axis=0) - 0.5 * members.std(axis=0)
    np.testing.assert_allclose(score["mean-minus-sd"], expected, rtol=1e-5, atol=1e-6)


def test_pair_metrics_by_hand():
    spec = make_proxy("linear-unigram", 3, 2)
    params = {"unigram": jnp.array([0.0, 1.0, 2.0])}
    a = np.array([[1, 1], [0, 0], [2, 0], [1, 0]])  # scores 2, 0, 2, 1
    b = np.array([[0, 0], [1, 1], [2, 0], [0, 1]])  # scores 0, 2, 2, 1
    votes = np.array([1.0, 1.0, 0.5, 0.0])  # right, wrong, a tie, a zero gap (half right)
    found = evaluate_pairs(spec, params, a, b, votes)
    assert found["pairs"] == 4
    # Ties are left out of the accuracy: (1 + 0 + 0.5) / 3.
    assert found["accuracy"] == pytest.approx(1.5 / 3)
    nll = [math.log1p(math.exp(-2)), math.log1p(math.exp(2)), math.log(2), math.log(2)]
    assert found["log_loss"] == pytest.approx(np.mean(nll), rel=1e-6)


# -- what the fits learn -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unigram_problem():
    vocab, length = 16, 16
    a, b, rng = random_pairs(0, 4000, vocab, length)
    w = rng.normal(0.0, 0.3, vocab)
    votes, p = bt_votes(rng, unigram_reward(w, a), unigram_reward(w, b))
    key = jax.random.PRNGKey(3)
    fitted = fit_proxy(make_proxy("linear-unigram", vocab, length), key, a, b, votes)
    return w, a, b, votes, p, key, fitted


def test_linear_unigram_recovers_a_unigram_reward(unigram_problem):
    w, *_, fitted = unigram_problem
    # With a fixed length the counts sum to the length, so w is seen only up to a constant:
    # compare centred weights. The MLE's standard error per weight is about
    # 1 / sqrt(3200 train pairs · E[σ'(Δ)] ≈ 0.15 · Var(count gap) ≈ 1.9) ≈ 0.03 against a
    # spread of 0.3 in the true weights: a correlation near 0.99. 0.95 leaves room for early
    # stopping's shrinkage (which keeps the correlation) and fails a fit with any sizeable
    # weight wrong.
    fitted_w = np.asarray(fitted.params["unigram"])
    correlation = np.corrcoef(fitted_w - fitted_w.mean(), w - w.mean())[0, 1]
    assert correlation > 0.95
    assert fitted.record.best_step > 0  # it learned something before stopping


def test_held_out_accuracy_is_close_to_the_bayes_accuracy(unigram_problem):
    _, a, b, votes, p, key, fitted = unigram_problem
    _, held = split_pairs(key, votes.size, 0.2)
    assert fitted.record.held_out_pairs == held.size == 800
    assert fitted.record.train_pairs == 3200
    p_held = p[held]
    bayes = np.mean(np.maximum(p_held, 1 - p_held))
    # Noise-free: the accuracy the proxy's ranking would have in expectation over the labels,
    # against the truth's; only pairs with a near-zero true gap should be ranked differently.
    gap = np.asarray(fitted.score(a[held]) - fitted.score(b[held]))
    expected = np.mean(np.where(gap > 0, p_held, 1 - p_held))
    assert bayes - 0.01 <= expected <= bayes
    # Realised: the held-out votes are Bernoulli draws, so the accuracy has an sd of
    # sqrt(mean p(1 - p) / n) ≈ 0.015 about its expectation; 3 sd, plus the 0.01 above.
    sd = math.sqrt(np.mean(p_held * (1 - p_held)) / held.size)
    assert abs(held_out_accuracy(fitted) - bayes) <= 0.01 + 3 * sd
    assert (
        held_out_accuracy(fitted)
        == evaluate_pairs(fitted.spec, fitted.params, a[held], b[held], votes[held])["accuracy"]
    )
    report = proxy_report(fitted)
    assert report["held_out_accuracy"] == fitted.record.held_out_accuracy
    assert report["kind"] == "linear-unigram" and report["held_out_pairs"] == 800


@pytest.fixture(scope="module")
def bigram_problem():
    """A reward of adjacent pairs only: the table is double-centred (rows and columns sum to
    zero), so token counts alone say next to nothing about it."""
    vocab, length = 4, 8
    a, b, rng = random_pairs(1, 3000, vocab, length)
    table = rng.normal(0.0, 1.0, (vocab, vocab))
    table = table - table.mean(0) - table.mean(1)[:, None] + table.mean()
    votes, _ = bt_votes(rng, bigram_reward(table, a), bigram_reward(table, b))
    spec = make_proxy("linear-unigram", vocab, length)
    unigram = fit_proxy(spec, jax.random.PRNGKey(0), a, b, votes)
    return vocab, length, a, b, votes, unigram


@pytest.mark.parametrize("kind", ["linear-bigram", "gru-16"])
def test_bigram_models_fit_a_bigram_reward_better_than_unigram(bigram_problem, kind):
    vocab, length, a, b, votes, unigram = bigram_problem
    key = jax.random.PRNGKey(0)
    richer = fit_proxy(make_proxy(kind, vocab, length), key, a, b, votes)
    # The unigram model can barely beat a coin (log 2 = 0.693); the richer ones see the pairs.
    assert unigram.record.held_out_log_loss > 0.65
    assert richer.record.held_out_log_loss < unigram.record.held_out_log_loss - 0.1
    assert richer.record.held_out_accuracy > unigram.record.held_out_accuracy + 0.1


# -- early stopping ------------------------------------------------------------------------------


def test_early_stopping_returns_the_best_evaluation():
    # 30 training pairs for 72 bigram weights: the held-out loss falls, then rises as the
    # model learns the training pairs' noise.
    vocab, length = 8, 8
    a, b, rng = random_pairs(2, 60, vocab, length)
    w = rng.normal(0.0, 0.5, vocab)
    votes, _ = bt_votes(rng, unigram_reward(w, a), unigram_reward(w, b))
    key = jax.random.PRNGKey(5)
    spec = make_proxy("linear-bigram", vocab, length)
    options = dict(holdout=0.5, batch=16, eval_every=10, patience=4)
    fitted = fit_proxy(spec, key, a, b, votes, max_steps=2000, **options)
    record = fitted.record
    (curve,) = record.curves
    assert curve[0] == pytest.approx(math.log(2))  # the zero start
    assert len(curve) == len(record.eval_steps) == record.steps // 10 + 1
    best = int(np.argmin(curve))
    assert record.best_step == record.eval_steps[best] == record.member_best_steps[0]
    # It rose after the best and stopped `patience` evaluations later, long before max_steps.
    assert 0 < record.best_step < record.steps == record.best_step + 4 * 10 < 2000
    assert curve[-1] > min(curve) + 0.01
    # The returned parameters are the best evaluation's, not the last step's.
    _, held = split_pairs(key, 60, 0.5)
    found = evaluate_pairs(spec, fitted.params, a[held], b[held], votes[held])
    assert found["log_loss"] == pytest.approx(min(curve), rel=1e-5)
    assert record.held_out_log_loss == pytest.approx(min(curve), rel=1e-5)


# -- the ensemble --------------------------------------------------------------------------------


# A linear base compiles in a second; the GRU base (members that also differ by their init
# seeds) takes several more, so it runs with the slow tests.
@pytest.fixture(
    scope="module", params=["linear-bigram", pytest.param("gru-16", marks=pytest.mark.slow)]
)
def ensemble_problem(request):
    vocab, length = 4, 8
    a, b, rng = random_pairs(4, 500, vocab, length)
    w = rng.normal(0.0, 0.5, vocab)
    votes, _ = bt_votes(rng, unigram_reward(w, a), unigram_reward(w, b))
    spec = make_proxy("ensemble", vocab, length, base=request.param)
    options = dict(batch=64, max_steps=200, eval_every=50)
    fit = lambda key: fit_proxy(spec, key, a, b, votes, **options)  # noqa: E731
    return fit, fit(jax.random.PRNGKey(0)), a


def test_ensemble_min_and_mean_minus_sd_are_at_most_the_mean(ensemble_problem):
    _, fitted, tokens = ensemble_problem
    members = np.asarray(fitted.member_scores(tokens))
    assert members.shape == (4, tokens.shape[0])
    # Members differ: their own bootstrap resamples (and init seeds, for a GRU base).
    for i in range(4):
        for j in range(i):
            assert np.max(np.abs(members[i] - members[j])) > 1e-3
    score = {
        objective: np.asarray(
            dataclasses.replace(fitted.spec, objective=objective, lam=1.0).score(
                fitted.params, tokens
            )
        )
        for objective in ("mean", "min", "mean-minus-sd")
    }
    assert np.all(score["min"] <= score["mean"] + 1e-6)
    assert np.all(score["mean-minus-sd"] <= score["mean"] + 1e-6)
    assert np.mean(score["min"] < score["mean"] - 1e-4) > 0.9  # strictly, where members differ
    assert len(fitted.record.curves) == 4 and len(set(fitted.record.curves)) == 4


def test_ensemble_fit_is_deterministic_given_the_key(ensemble_problem):
    fit, fitted, _ = ensemble_problem
    again, other = fit(jax.random.PRNGKey(0)), fit(jax.random.PRNGKey(1))
    for x, y in zip(jax.tree.leaves(fitted.params), jax.tree.leaves(again.params), strict=True):
        np.testing.assert_array_equal(x, y)
    assert again.record == fitted.record
    pairs = zip(jax.tree.leaves(fitted.params), jax.tree.leaves(other.params), strict=True)
    assert any(not np.array_equal(x, y) for x, y in pairs)  # another key, another fit


# -- saving --------------------------------------------------------------------------------------


def assert_same_proxy(loaded: FittedProxy, fitted: FittedProxy):
    assert loaded.spec == fitted.spec and loaded.record == fitted.record
    original, treedef = jax.tree.flatten(fitted.params)
    back, back_treedef = jax.tree.flatten(loaded.params)
    assert back_treedef == treedef
    for x, y in zip(original, back, strict=True):
        assert np.asarray(y).dtype == np.asarray(x).dtype
        assert np.asarray(y).tobytes() == np.asarray(x).tobytes()


def test_save_and_load_are_bit_identical(tmp_path, ensemble_problem, unigram_problem):
    for name, fitted in (("ensemble", ensemble_problem[1]), ("unigram", unigram_problem[-1])):
        path = save_proxy(tmp_path / f"{name}.npz", fitted)
        loaded = load_proxy(path)
        assert_same_proxy(loaded, fitted)
        tokens = np.zeros((3, fitted.spec.seq_len), np.int32)
        np.testing.assert_array_equal(loaded.score(tokens), fitted.score(tokens))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ensemble.npz", "unigram.npz"]


def test_a_file_with_an_object_array_is_refused(tmp_path, unigram_problem):
    fitted = unigram_problem[-1]
    good = save_proxy(tmp_path / "good.npz", fitted)
    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["leaf00000"] = np.array([{"weights": 1}], dtype=object)  # a pickle inside
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError, match=r"bad\.npz: not a saved proxy \(.*pickle"):
        load_proxy(tmp_path / "bad.npz")
    arrays["leaf00000"] = np.zeros(3, np.float32)  # the wrong shape for vocab 16
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(ConfigError, match=r"leaf00000 is float32\[3\], the spec needs"):
        load_proxy(tmp_path / "short.npz")


# -- refusals ------------------------------------------------------------------------------------


def test_an_unknown_kind_names_the_closest_and_every_kind():
    with pytest.raises(ConfigError) as err:
        make_proxy("gru16", 16, 16)
    assert str(err.value) == (
        "unknown proxy kind 'gru16' (did you mean 'gru-16'?); known proxy kinds: ensemble, "
        "gru-16, gru-64, linear-bigram, linear-unigram"
    )


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: make_proxy("gru-16", 1, 8), r"vocab = 1: must be an integer in \[2, 4096\]"),
        (
            lambda: make_proxy("gru-16", 8, 8, objective="min"),
            r"unknown option\(s\) \['objective'\] for proxy kind 'gru-16'; it takes none",
        ),
        (
            lambda: make_proxy("ensemble", 8, 8, base="ensemble"),
            "base = 'ensemble': must be one of linear-unigram",
        ),
        (
            lambda: make_proxy("ensemble", 8, 8, objective="max"),
            "objective = 'max': must be one of mean, min, mean-minus-sd",
        ),
        (
            lambda: make_proxy("ensemble", 8, 8, members=1),
            r"members = 1: must be an integer in \[2, 64\]",
        ),
        (lambda: make_proxy("ensemble", 8, 8, lam=-1), r"lam = -1.0: must be in \[0, 1e\+06\]"),
        (
            lambda: ProxySpec("linear-unigram", 8, 8, members=3),
            "members = 3: only an ensemble takes it",
        ),
    ],
)
def test_bad_specs_are_refused(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


def good_pairs(num_pairs=20):
    a, b, _ = random_pairs(9, num_pairs, 4, 3)
    return a, b, np.full(num_pairs, 0.5, np.float32)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(holdout=0.0), r"holdout = 0.0: must be in \(0, 1\)"),
        (dict(holdout=1.0), r"holdout = 1.0: must be in \(0, 1\)"),
        (
            dict(tokens_a=good_pairs()[0][:, :2]),
            r"tokens_a.shape = \(20, 2\): must be \[pairs, seq_len = 3\]",
        ),
        (
            dict(tokens_b=good_pairs(19)[1]),
            r"tokens_b.shape = \(19, 3\): must equal tokens_a.shape = \(20, 3\)",
        ),
        (dict(votes=np.full(19, 0.5)), r"votes.shape = \(19,\): must be \[pairs\] = \(20,\)"),
        (dict(votes=np.full(20, 1.5)), r"votes = 1.5: must be in \[0, 1\]"),
        (dict(votes=np.full(20, np.nan)), r"votes = nan: must be in \[0, 1\]"),
        (dict(tokens_a=np.full((20, 3), 4)), r"tokens_a token = 4: must be in \[0, vocab = 4\)"),
        (dict(tokens_b=np.full((20, 3), -1)), r"tokens_b token = -1: must be in \[0, vocab = 4\)"),
        (
            dict(tokens_a=np.full((20, 3), 1.0)),
            "tokens_a.dtype = 'float64': must be an integer type",
        ),
        (
            dict(holdout=0.04),
            r"num_pairs = 20: too few pairs to hold out 0.04 of them \(at least 25\)",
        ),
        (dict(eval_every=0), r"eval_every = 0: must be an integer in \[1, 4000\]"),
        (dict(learning_rate=0.0), r"learning_rate = 0.0: must be in \(0, inf\]"),
        (dict(spec="gru-16"), "spec = 'gru-16': must be a ProxySpec from make_proxy"),
    ],
)
def test_bad_fits_are_refused_before_compiling(change, match):
    a, b, votes = good_pairs()
    args = dict(spec=make_proxy("linear-unigram", 4, 3), tokens_a=a, tokens_b=b, votes=votes)
    args |= change
    spec, a, b, votes = (args.pop(k) for k in ("spec", "tokens_a", "tokens_b", "votes"))
    with pytest.raises(ConfigError, match=match):
        fit_proxy(spec, jax.random.PRNGKey(0), a, b, votes, **args)
