"""The Env and Policy contracts: every built-in keeps them, and make / make_policy refuse what
breaks them in one line naming the env or policy, the offending value and what is allowed."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from zopg import ConfigError
from zopg.envs import ContinuousEnv, DiscreteEnv, Env, make, registered_envs
from zopg.envs import registry as env_registry
from zopg.policies import ObsNormalization, Policy, make_policy, register

# One brax env stands for the BraxEnv class (each costs a simulator build); the rest are cheap.
ENV_IDS = [
    env_id
    for env_id in registered_envs()
    if env_id != "gridworld" and (not env_id.startswith("brax/") or env_id.endswith("pendulum"))
]
# (policy, env id, options): each built-in policy on an env of its action kind.
POLICIES = [
    ("tabular", "gridworld/cliff-4x6", {}),
    ("mlp", "gridworld/open-5x5", {}),
    ("mlp", "gymnax/CartPole-v1", {}),
    ("gaussian", "gymnax/Pendulum-v1", {}),
]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_built_in_env_keeps_the_env_contract(env_id):
    env, params = make(env_id)  # make checks the contract; these are its other half
    assert isinstance(env, Env)
    assert isinstance(env, DiscreteEnv if env.action_kind == "discrete" else ContinuousEnv)
    # params are a pytree of their fields, not one opaque leaf.
    assert all(leaf is not params for leaf in jax.tree_util.tree_leaves(params))
    # horizon(params) is a Python int under jit, where rollouts call it.
    jax.jit(lambda p: jnp.zeros(env.horizon(p)))(params)


@pytest.mark.parametrize(("name", "env_id", "options"), POLICIES)
def test_every_built_in_policy_keeps_the_policy_contract(name, env_id, options):
    env, params = make(env_id)
    policy = make_policy(name, env, params, **options)
    assert isinstance(policy, Policy)
    hash(policy)
    if name != "tabular":
        shape = env.observation_shape(params)
        size = int(np.prod(shape))
        norm = ObsNormalization(mean=(0.0,) * size, std=(1.0,) * size, shape=shape)
        assert isinstance(make_policy(name, env, params, obs_norm=norm), Policy)


# -- environments that break the contract --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Chain:
    """A minimal discrete env; its params class is what the tests vary."""

    action_kind = "discrete"
    num_actions = 2

    def reset(self, key, params):
        return jnp.int32(0), jnp.int32(0)

    def step(self, key, state, action, params):
        return state, state, jnp.float32(0.0), jnp.bool_(False)

    def horizon(self, params):
        return params.steps

    def observation_shape(self, params):
        return ()


@struct.dataclass
class ChainParams:
    steps: int = struct.field(pytree_node=False, default=8)
    reward: float = 1.0


@dataclasses.dataclass(frozen=True)
class PlainParams:
    steps: int = 8


@struct.dataclass
class TracedHorizon:
    steps: int = 8  # not declared static: a traced leaf under jit


@struct.dataclass
class TextLeaf:
    steps: int = struct.field(pytree_node=False, default=8)
    label: str = "chain"


@dataclasses.dataclass(frozen=True)
class NoStep:
    action_kind = "discrete"
    num_actions = 2

    def reset(self, key, params):
        return jnp.int32(0), jnp.int32(0)

    def horizon(self, params):
        return params.steps

    def observation_shape(self, params):
        return ()


class Unhashable(Chain):
    __hash__ = None  # as a dataclass with eq but not frozen has


@dataclasses.dataclass(frozen=True)
class NoActions(Chain):
    num_actions = 0


@dataclasses.dataclass(frozen=True)
class Continuous(Chain):
    action_kind = "continuous"


@dataclasses.dataclass(frozen=True)
class BinaryActions(Chain):
    action_kind = "binary"


def made(monkeypatch, env, params):
    """make() of a registered factory returning (env, params), as a plugin would."""
    monkeypatch.setitem(env_registry._REGISTRY, "test/chain", lambda: (env, params))
    return make("test/chain")


def refused(monkeypatch, env, params) -> str:
    with pytest.raises(ConfigError) as info:
        made(monkeypatch, env, params)
    message = str(info.value)
    assert "\n" not in message and message.startswith("environment 'test/chain': ")
    return message


def test_a_well_formed_env_is_accepted(monkeypatch):
    env, params = made(monkeypatch, Chain(), ChainParams())
    assert isinstance(env, DiscreteEnv) and params.steps == 8


def test_plain_dataclass_params_are_refused(monkeypatch):
    message = refused(monkeypatch, Chain(), PlainParams())
    assert "params = PlainParams(steps=8)" in message
    assert "plain dataclass" in message and "flax.struct.dataclass" in message


@pytest.mark.parametrize("params", [{"steps": 8}, None, (8,)])
def test_params_that_are_no_dataclass_are_refused(monkeypatch, params):
    message = refused(monkeypatch, Chain(), params)
    assert f"params = {params!r}: must be a flax.struct.dataclass instance" in message


@dataclasses.dataclass(frozen=True)
class IntHorizon(Chain):
    def horizon(self, params):
        return int(params.steps)  # fails on a tracer, where Chain's returns one


@pytest.mark.parametrize("env", [Chain(), IntHorizon()], ids=["returned", "converted"])
def test_a_horizon_from_a_traced_field_is_refused(monkeypatch, env):
    message = refused(monkeypatch, env, TracedHorizon())
    assert "horizon(params) reads a traced field (one of params.steps)" in message
    assert "struct.field(pytree_node=False)" in message


def test_a_leaf_that_is_no_number_is_refused(monkeypatch):
    message = refused(monkeypatch, Chain(), TextLeaf())
    assert "params.label = 'chain': must be a number or an array" in message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (NoStep(), "NoStep lacks step; an environment needs action_kind, reset, step, horizon"),
        (Unhashable(), "Unhashable objects must be hashable"),
        (NoActions(), "num_actions = 0: must be an integer >= 1"),
        (Continuous(), "Continuous lacks action_shape, action_bounds; a continuous-action"),
        (BinaryActions(), "action_kind = 'binary': must be one of discrete, continuous"),
    ],
)
def test_envs_that_break_the_contract_are_refused(monkeypatch, env, expected):
    assert expected in refused(monkeypatch, env, ChainParams())


# -- policies that break the contract ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NoLogProb:
    def init(self, key):
        return {"logits": jnp.zeros(2)}

    def sample(self, key, params, obs):
        return jnp.int32(0)

    def sample_and_log_prob(self, key, params, obs):
        return jnp.int32(0), jnp.float32(0.0)


class UnhashablePolicy(NoLogProb):
    __hash__ = None  # as a dataclass with eq but not frozen has

    def log_prob(self, params, obs, action):
        return jnp.float32(0.0)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            NoLogProb(),
            "policy 'broken': NoLogProb lacks log_prob; a policy needs init, log_prob, sample, "
            "sample_and_log_prob (zopg.policies.Policy)",
        ),
        (UnhashablePolicy(), "policy 'broken': UnhashablePolicy objects must be hashable"),
    ],
)
def test_policies_that_break_the_contract_are_refused(monkeypatch, policy, expected):
    monkeypatch.setattr("zopg.policies._REGISTERED", {})
    register("broken", lambda env, env_params: policy)
    env, params = make("gridworld/open-5x5")
    with pytest.raises(ConfigError) as info:
        make_policy("broken", env, params)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)
