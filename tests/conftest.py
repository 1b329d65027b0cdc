"""Shared fixtures: built-in environments and policies, built once per test session."""

import jax
import pytest

from zopg.envs import make
from zopg.policies import make_policy

BUILTIN = ("gridworld/open-5x5", "gridworld/cliff-4x6")


@pytest.fixture(scope="session", params=BUILTIN)
def builtin_env(request):
    env, params = make(request.param)
    return request.param, env, params


@pytest.fixture(scope="session")
def random_tabular(builtin_env):
    """A tabular policy with random (non-uniform) logits on each built-in layout."""
    _, env, params = builtin_env
    policy = make_policy("tabular", env, params, init_scale=1.0)
    return policy, policy.init(jax.random.key(7))
