"""Zeroth-order gradient estimators: direction samplers, one/two-sided differences, ways to spend N.

An estimator sees the objective only through `difference_fn(key, theta_1, theta_0, num_pairs)`,
which returns `num_pairs` estimates of V(theta_1) - V(theta_0) (from preferences, from sampled
returns, or exact) and the budget it spent (a pytree of int32 counters, e.g.
zopg.algorithms.base.Spent). That keeps the estimator testable on quadratics.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from zopg.errors import bad_value, unknown_name

DIRECTIONS = ("sphere", "gaussian", "rademacher", "block-sphere")
SPENDS = ("one-direction", "many-directions")
PARTITIONS = ("random", "fixed")


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
    """How one gradient estimate is formed (mu is passed per call so it can follow a schedule).

    direction   sphere (scale d/mu), gaussian or rademacher (scale 1/mu), block-sphere (scale K/mu)
    two_sided   theta +- mu v (antithetic) instead of theta + mu v vs theta; halves the scale
    spend       one-direction: one v with `num_pairs` pairs; many-directions: `num_pairs` v's,
                one pair each
    block_size  K for block-sphere; partition: K coordinates at random, or one block of a fixed
                partition of 0..d-1 into consecutive runs of K (the last may be shorter)
    """

    direction: str = "sphere"
    two_sided: bool = False
    spend: str = "one-direction"
    num_pairs: int = 1
    block_size: int | None = None
    partition: str = "random"

    def validate(self, dim: int) -> EstimatorConfig:
        if self.direction not in DIRECTIONS:
            raise unknown_name("direction", self.direction, DIRECTIONS)
        if self.spend not in SPENDS:
            raise unknown_name("spend", self.spend, SPENDS)
        if self.partition not in PARTITIONS:
            raise unknown_name("partition", self.partition, PARTITIONS)
        if not isinstance(self.num_pairs, int) or self.num_pairs < 1:
            raise bad_value("num_pairs", self.num_pairs, "must be an integer >= 1")
        if self.direction == "block-sphere":
            check_block_size(self.block_size, dim)
        return self


def check_block_size(block_size, dim: int) -> None:
    if not isinstance(block_size, int) or not 1 <= block_size <= dim:
        raise bad_value("block_size", block_size, f"must be an integer in 1..{dim} (d = {dim})")


# -- directions -------------------------------------------------------------------------------


def sphere_direction(key, dim: int, mask=None) -> jax.Array:
    """Uniform on the unit sphere of the coordinates where `mask` is True (all when None)."""
    z = jax.random.normal(key, (dim,))
    if mask is not None:
        z = jnp.where(mask, z, 0.0)
    return z / jnp.linalg.norm(z)


def gaussian_direction(key, dim: int, mask=None) -> jax.Array:
    z = jax.random.normal(key, (dim,))
    return z if mask is None else jnp.where(mask, z, 0.0)


def rademacher_direction(key, dim: int, mask=None) -> jax.Array:
    z = jax.random.rademacher(key, (dim,), dtype=jnp.float32)
    return z if mask is None else jnp.where(mask, z, 0.0)


def block_masks(key, dim: int, block_size: int, num_blocks: int, partition: str) -> jax.Array:
    """`num_blocks` disjoint coordinate blocks as a bool array [num_blocks, dim].

    random: the first num_blocks * K entries of a random permutation, in runs of K.
    fixed: num_blocks distinct blocks of the partition {0..K-1}, {K..2K-1}, ..., drawn at random.
    """
    if partition == "random":
        if num_blocks * block_size > dim:
            raise bad_value(
                "num_blocks", num_blocks, f"times block_size {block_size} must be <= d = {dim}"
            )
        perm = jax.random.permutation(key, dim)
        owner = (
            jnp.full((dim,), -1)
            .at[perm[: num_blocks * block_size]]
            .set(jnp.arange(num_blocks * block_size) // block_size)
        )
    else:
        num_parts = -(-dim // block_size)
        if num_blocks > num_parts:
            raise bad_value(
                "num_blocks", num_blocks, f"must be <= {num_parts} blocks of the fixed partition"
            )
        chosen = jax.random.permutation(key, num_parts)[:num_blocks]
        part = jnp.arange(dim) // block_size
        owner = jnp.where(part[None, :] == chosen[:, None], jnp.arange(num_blocks)[:, None], -1)
        owner = owner.max(axis=0)
    return owner[None, :] == jnp.arange(num_blocks)[:, None]


def sample_direction(key, dim: int, config: EstimatorConfig, mask=None):
    """(v, scale_dim): a direction and the dimension factor of its estimator scale."""
    if config.direction == "block-sphere" and mask is None:
        k_block, key = jax.random.split(key)
        mask = block_masks(k_block, dim, config.block_size, 1, config.partition)[0]
    if config.direction in ("sphere", "block-sphere"):
        v = sphere_direction(key, dim, mask)
        scale_dim = dim if mask is None else jnp.sum(mask)
    elif config.direction == "gaussian":
        v, scale_dim = gaussian_direction(key, dim, mask), 1
    else:
        v, scale_dim = rademacher_direction(key, dim, mask), 1
    return v, jnp.asarray(scale_dim, jnp.float32)


# -- estimates --------------------------------------------------------------------------------


def zo_gradient(key, theta, difference_fn, config: EstimatorConfig, mu, mask=None):
    """One zeroth-order gradient estimate at theta.

    Returns (g, delta_hat, spent): g has theta's shape, delta_hat is the mean estimated value
    difference, spent the budget used. With `mask`, directions live in those coordinates only.
    """
    dim = theta.shape[0]

    def _one_direction(key, num_pairs):
        k_dir, k_diff = jax.random.split(key)
        v, scale_dim = sample_direction(k_dir, dim, config, mask)
        if config.two_sided:
            theta_1, theta_0, scale = theta + mu * v, theta - mu * v, scale_dim / (2 * mu)
        else:
            theta_1, theta_0, scale = theta + mu * v, theta, scale_dim / mu
        delta, spent = difference_fn(k_diff, theta_1, theta_0, num_pairs)
        delta_hat = jnp.mean(delta)
        return scale * delta_hat * v, delta_hat, spent

    if config.spend == "one-direction":
        return _one_direction(key, config.num_pairs)
    keys = jax.random.split(key, config.num_pairs)
    g, delta_hat, spent = jax.vmap(lambda k: _one_direction(k, 1))(keys)
    return g.mean(axis=0), delta_hat.mean(), _summed(spent)


def block_zo_gradient(key, theta, difference_fn, config, mu, num_blocks: int):
    """P disjoint blocks, each with its own direction, rollouts and queries, all vmapped.

    Returns (g, delta_hat, spent, mask): g is zero outside the union `mask` of the blocks.
    """
    k_blocks, k_est = jax.random.split(key)
    masks = block_masks(k_blocks, theta.shape[0], config.block_size, num_blocks, config.partition)
    keys = jax.random.split(k_est, num_blocks)
    g, delta_hat, spent = jax.vmap(
        lambda k, m: zo_gradient(k, theta, difference_fn, config, mu, mask=m)
    )(keys, masks)
    return g.sum(axis=0), delta_hat.mean(), _summed(spent), masks.any(axis=0)


def _summed(spent):
    """The budget of vmapped calls: every counter summed over the batch axis."""
    return jax.tree_util.tree_map(lambda x: jnp.sum(x).astype(jnp.int32), spent)
