"""Zeroth-order estimators on quadratics, where the smoothed gradient equals the true gradient.

For f(theta) = 1/2 theta^T A theta + b^T theta every estimator here is unbiased (odd moments of
the directions vanish), so the mean of many estimates must match grad f within a tolerance set
by the per-coordinate standard error of that mean.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg import ConfigError
from zopg.algorithms.base import Spent
from zopg.estimators import (
    EstimatorConfig,
    block_masks,
    block_zo_gradient,
    sample_direction,
    zo_gradient,
)

DIM = 6
A = jnp.array(np.diag(np.arange(1.0, DIM + 1)) + 0.3)
B = jnp.linspace(-1.0, 1.0, DIM)
THETA = jnp.linspace(0.5, -0.4, DIM)
GRAD = A @ THETA + B
NUM_SAMPLES = 40_000


def quadratic(theta):
    return 0.5 * theta @ A @ theta + B @ theta


def exact_difference(noise_sd=0.0):
    """difference_fn with exact f differences plus optional per-pair Gaussian noise."""

    def diff(key, theta_1, theta_0, num_pairs):
        delta = quadratic(theta_1) - quadratic(theta_0)
        noise = noise_sd * jax.random.normal(key, (num_pairs,))
        return delta + noise, Spent.zero()

    return diff


def mean_and_stderr(config, mu=0.3, noise_sd=0.0, mask=None):
    keys = jax.random.split(jax.random.key(0), NUM_SAMPLES)
    estimate = jax.jit(
        jax.vmap(lambda k: zo_gradient(k, THETA, exact_difference(noise_sd), config, mu, mask)[0])
    )
    g = np.asarray(estimate(keys))
    return g.mean(0), g.std(0, ddof=1) / np.sqrt(NUM_SAMPLES)


CONFIGS = [
    EstimatorConfig(direction=d, two_sided=two, spend=spend, num_pairs=n)
    for d in ("sphere", "gaussian", "rademacher")
    for two in (False, True)
    for spend, n in (("one-direction", 1), ("many-directions", 4))
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.direction}-{c.two_sided}-{c.spend}")
def test_mean_estimate_matches_gradient(config):
    mean, stderr = mean_and_stderr(config, noise_sd=0.2)
    assert np.all(np.abs(mean - GRAD) <= 5 * stderr + 1e-4), (mean, GRAD, stderr)


def test_wrong_scale_would_be_caught():
    """Power check: a sphere estimate scaled by 1/mu instead of d/mu misses by a factor d."""
    mean, stderr = mean_and_stderr(EstimatorConfig(direction="sphere"))
    assert np.any(np.abs(mean / DIM - GRAD) > 5 * stderr)


def test_one_direction_many_pairs_averages_noise():
    """N pairs on one direction shrink the noise part of the variance by N."""
    cfg_1 = EstimatorConfig(direction="sphere", num_pairs=1)
    cfg_16 = EstimatorConfig(direction="sphere", num_pairs=16)
    # Large noise makes the noise term dominate the direction term d * |grad|^2.
    _, se_1 = mean_and_stderr(cfg_1, noise_sd=5.0)
    _, se_16 = mean_and_stderr(cfg_16, noise_sd=5.0)
    ratio = float(np.mean(se_1**2) / np.mean(se_16**2))
    assert 6.0 < ratio < 17.0


@pytest.mark.parametrize("partition", ["random", "fixed"])
def test_block_sphere_is_unbiased_for_the_block_gradient(partition):
    """Given a block B, E[(K/mu) Δ v] is the gradient restricted to B."""
    mask = jnp.arange(DIM) < 2
    config = EstimatorConfig(direction="sphere", partition=partition)
    mean, stderr = mean_and_stderr(config, mask=mask)
    expected = np.where(np.asarray(mask), GRAD, 0.0)
    assert np.all(np.abs(mean - expected) <= 5 * stderr + 1e-4)
    assert np.all(mean[2:] == 0.0)


@pytest.mark.parametrize("partition", ["random", "fixed"])
def test_random_blocks_average_to_scaled_gradient(partition):
    """Over random blocks of size K, E[g] = (K / d) grad f: each coordinate is chosen w.p. K/d."""
    config = EstimatorConfig(direction="block-sphere", block_size=3, partition=partition)
    mean, stderr = mean_and_stderr(config)
    assert np.all(np.abs(mean - GRAD * 3 / DIM) <= 5 * stderr + 1e-4)


def test_parallel_blocks_are_disjoint_and_sum_to_scaled_gradient():
    config = EstimatorConfig(direction="sphere", block_size=2)
    keys = jax.random.split(jax.random.key(1), NUM_SAMPLES)
    run = jax.jit(
        jax.vmap(lambda k: block_zo_gradient(k, THETA, exact_difference(), config, 0.3, 2))
    )
    g, _, _, mask = run(keys)
    assert np.all(np.asarray(mask).sum(-1) == 4)  # two disjoint blocks of two
    g = np.asarray(g)
    assert np.all(g[~np.asarray(mask)] == 0.0)
    stderr = g.std(0, ddof=1) / np.sqrt(NUM_SAMPLES)
    assert np.all(np.abs(g.mean(0) - GRAD * 4 / DIM) <= 5 * stderr + 1e-4)


@pytest.mark.parametrize("partition", ["random", "fixed"])
def test_block_masks_are_disjoint_with_right_sizes(partition):
    masks = np.asarray(block_masks(jax.random.key(3), 10, 3, 3, partition))
    assert masks.shape == (3, 10)
    assert np.all(masks.sum(0) <= 1)
    if partition == "random":
        assert np.all(masks.sum(1) == 3)
    else:
        # Fixed partition {0,1,2}, {3,4,5}, {6,7,8}, {9}: each mask is one of these runs.
        for m in masks:
            idx = np.flatnonzero(m)
            assert idx.size in (1, 3) and np.all(idx // 3 == idx[0] // 3)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (EstimatorConfig(direction="cauchy"), "unknown direction 'cauchy'.*rademacher"),
        (EstimatorConfig(spend="all"), "unknown spend 'all'"),
        (EstimatorConfig(num_pairs=0), r"^num_pairs = 0: must be an integer >= 1$"),
        (EstimatorConfig(direction="block-sphere", block_size=0), r"block_size = 0.*1\.\.6"),
        (EstimatorConfig(direction="block-sphere", block_size=7), r"block_size = 7.*1\.\.6"),
        (
            EstimatorConfig(direction="block-sphere", block_size=2, partition="x"),
            r"^unknown partition 'x'; known partitions: fixed, random$",
        ),
    ],
)
def test_bad_estimator_config(config, match):
    with pytest.raises(ConfigError, match=match):
        config.validate(DIM)


@pytest.mark.parametrize("block_size", [1, DIM])
def test_block_sizes_at_both_ends_are_valid(block_size):
    # K = 1 (one coordinate per estimate) and K = d (block-sphere is the sphere) are both allowed.
    config = EstimatorConfig(direction="block-sphere", block_size=block_size)
    assert config.validate(DIM) is config


@pytest.mark.parametrize(
    ("partition", "num_blocks", "message"),
    [
        ("random", 4, "num_blocks = 4: times block_size 3 must be <= d = 10"),
        ("fixed", 5, "num_blocks = 5: must be <= 4 blocks of the fixed partition"),
    ],
)
def test_block_masks_refuse_more_blocks_than_fit(partition, num_blocks, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        block_masks(jax.random.key(0), 10, 3, num_blocks, partition)


@pytest.mark.parametrize(
    ("partition", "dim", "size", "num_blocks"),
    [("random", 9, 3, 3), ("fixed", 10, 3, 4)],  # 3 x 3 of 9; all 4 parts {0-2, 3-5, 6-8, 9}
)
def test_block_masks_may_fill_every_coordinate(partition, dim, size, num_blocks):
    # The largest block count allowed: every coordinate is owned by exactly one block.
    masks = np.asarray(block_masks(jax.random.key(1), dim, size, num_blocks, partition))
    assert masks.shape == (num_blocks, dim) and np.all(masks.sum(0) == 1)


@pytest.mark.parametrize("direction", ["gaussian", "rademacher", "sphere"])
def test_masked_directions_are_zero_outside_the_mask(direction):
    from zopg import estimators

    mask = jnp.arange(DIM) % 2 == 0
    sample = getattr(estimators, f"{direction}_direction")
    full = np.asarray(sample(jax.random.key(5), DIM))
    masked = np.asarray(sample(jax.random.key(5), DIM, mask))
    assert masked.dtype == np.float32 and full.dtype == np.float32
    assert np.all(masked[1::2] == 0.0)
    if direction == "sphere":
        # The same draw renormalised over the kept coordinates.
        kept = full[::2] / np.linalg.norm(full)
        np.testing.assert_allclose(masked[::2], kept / np.linalg.norm(kept), rtol=1e-5)
    else:
        np.testing.assert_array_equal(masked[::2], full[::2])
    if direction == "rademacher":
        assert set(np.unique(full)) == {-1.0, 1.0}


@pytest.mark.parametrize("direction", ["gaussian", "rademacher", "sphere", "block-sphere"])
def test_sample_direction_draws_the_named_law_and_scale(direction):
    from zopg.estimators import sample_direction

    config = EstimatorConfig(direction=direction, block_size=2, partition="fixed")
    keys = jax.random.split(jax.random.key(7), 2000)
    v, scale = jax.vmap(lambda k: sample_direction(k, DIM, config))(keys)
    v, scale = np.asarray(v), np.asarray(scale)
    norms = np.linalg.norm(v, axis=1)
    if direction == "rademacher":
        assert set(np.unique(v)) == {-1.0, 1.0} and np.all(scale == 1.0)
    elif direction == "gaussian":
        assert np.all(scale == 1.0) and not np.allclose(norms, norms[0])
        assert len(np.unique(np.abs(v))) > DIM
    elif direction == "sphere":
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
        assert np.all(scale == DIM) and np.all(v != 0.0)
    else:
        # One block of the fixed partition {0,1}, {2,3}, {4,5}: two non-zero coordinates of one
        # block, unit norm, scale K; every block is drawn (block 1 as often as block 0).
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
        assert np.all(scale == 2.0)
        support = v != 0.0
        assert np.all(support.sum(1) == 2)
        blocks = np.flatnonzero(support[0]) // 2
        assert blocks[0] == blocks[1]
        drawn = np.bincount(np.argmax(support, axis=1) // 2, minlength=3)
        assert np.all(drawn > 2000 / 3 - 5 * np.sqrt(2000 * 2 / 9))


def test_sample_direction_takes_a_given_mask():
    from zopg.estimators import sample_direction

    mask = jnp.array([True, False] * (DIM // 2))
    for direction in ("gaussian", "rademacher"):
        v, _ = sample_direction(jax.random.key(2), DIM, EstimatorConfig(direction=direction), mask)
        assert np.all(np.asarray(v)[1::2] == 0.0) and np.all(np.asarray(v)[::2] != 0.0)


@pytest.mark.parametrize(("spend", "calls"), [("one-direction", [4]), ("many-directions", [1])])
def test_spend_decides_how_the_pairs_share_directions(spend, calls):
    """One direction: one call for all N pairs, g = (d/mu) delta v with |v| = 1. Many: N calls
    of one pair each on N directions, whose mean is shorter than any one of them."""
    seen = []

    def constant(key, theta_1, theta_0, num_pairs):
        seen.append(num_pairs)  # a static int, recorded while tracing
        return jnp.ones(num_pairs), Spent.of(queries=num_pairs, trajectories=2 * num_pairs)

    config = EstimatorConfig(direction="sphere", spend=spend, num_pairs=4)
    g, delta_hat, spent = zo_gradient(jax.random.key(3), THETA, constant, config, 0.5)
    assert seen == calls and float(delta_hat) == 1.0
    assert int(spent.queries) == 4 and int(spent.trajectories) == 8
    norm = float(jnp.linalg.norm(g))
    if spend == "one-direction":
        assert norm == pytest.approx(DIM / 0.5, rel=1e-5)
    else:
        assert norm < 0.9 * DIM / 0.5


@pytest.mark.parametrize("partition", ["random", "fixed"])
def test_a_block_of_the_whole_vector_is_the_sphere(partition):
    # K = d: one block of every coordinate, whichever the partition.
    config = EstimatorConfig(direction="block-sphere", block_size=DIM, partition=partition)
    v, scale = sample_direction(jax.random.key(0), DIM, config)
    assert np.all(np.asarray(v) != 0.0) and float(jnp.linalg.norm(v)) == pytest.approx(1.0)
    assert scale.dtype == jnp.float32 and float(scale) == DIM


def test_random_blocks_are_not_runs_of_the_fixed_partition():
    # K = 2 of d = 6 at random: {0, 2} and the like occur; the fixed partition draws only
    # {0, 1}, {2, 3} or {4, 5}.
    keys = jax.random.split(jax.random.key(9), 200)
    for partition, scattered in (("random", True), ("fixed", False)):
        config = EstimatorConfig(direction="block-sphere", block_size=2, partition=partition)
        v, scale = jax.vmap(lambda k, c=config: sample_direction(k, DIM, c))(keys)
        support = np.asarray(v) != 0.0
        first = np.argmax(support, axis=1)
        runs = np.all(support.sum(1) == 2) and np.all(support[np.arange(200), first + 1])
        aligned = runs and np.all(first % 2 == 0)
        assert aligned != scattered
        assert scale.dtype == jnp.float32
