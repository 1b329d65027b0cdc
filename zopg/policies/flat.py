"""The flat-parameter view that every zeroth-order method perturbs."""

from __future__ import annotations

import jax
from jax.flatten_util import ravel_pytree


def flat_view(params):
    """(theta, unravel): theta is one 1-D vector; unravel(theta) rebuilds the params pytree."""
    return ravel_pytree(params)


def num_params(params) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(params))
