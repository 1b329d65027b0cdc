"""Plugins: a package outside zopg adds an environment and a policy, and an experiment file names
them by import path ("package.module:NAME"); a policy registered from Python is named like a
built-in; bad paths and broken plugins are refused with one clear line before anything runs."""

import pytest

from zopg import ConfigError, cli, store
from zopg.envs import make
from zopg.policies import make_policy, policy_names, register

CHAIN = """\
# A chain of cells 0..length: action 1 moves right, 0 left; reaching the end pays 1.

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ChainParams:
    length: int = struct.field(pytree_node=False, default=4)
    steps: int = struct.field(pytree_node=False, default=8)


@struct.dataclass
class ChainState:
    pos: jax.Array
    time: jax.Array


@dataclasses.dataclass(frozen=True)
class Chain:
    action_kind = "discrete"
    num_actions = 2

    def reset(self, key, params):
        state = ChainState(pos=jnp.int32(0), time=jnp.int32(0))
        return state.pos, state

    def step(self, key, state, action, params):
        pos = jnp.clip(state.pos + 2 * action - 1, 0, params.length).astype(jnp.int32)
        time = state.time + 1
        reward = jnp.where(pos == params.length, 1.0, 0.0)
        done = (pos == params.length) | (time >= params.steps)
        return pos, ChainState(pos=pos, time=time), reward, done

    def horizon(self, params):
        return params.steps

    def observation_shape(self, params):
        return ()

    def num_states(self, params):
        return params.length + 1


def make_chain(length=4, steps=8):
    return Chain(), ChainParams(length=length, steps=steps)
"""

POLICY = """\
# One logit per action, shared by every state.

import dataclasses

import jax.numpy as jnp

from zopg.policies import CategoricalPolicy


@dataclasses.dataclass(frozen=True)
class StateFree(CategoricalPolicy):
    num_actions: int

    def init(self, key):
        return {"logits": jnp.zeros(self.num_actions)}

    def logits(self, params, obs):
        return jnp.broadcast_to(params["logits"], jnp.shape(obs) + (self.num_actions,))


def make_state_free(env, env_params):
    return StateFree(num_actions=env.num_actions)
"""

LINK = """\
# A logistic link with its own name, scale 0.5.

import dataclasses
from typing import ClassVar

import jax
import jax.scipy.special as jsp


@dataclasses.dataclass(frozen=True)
class Steep:
    scale: float = 0.5
    name: ClassVar[str] = "steep"
    invertible: ClassVar[bool] = True
    saturation: ClassVar[float] = float("inf")

    def prob(self, x):
        return jax.nn.sigmoid(x / self.scale)

    def inverse(self, p):
        return self.scale * jsp.logit(p)
"""

UTILITY = """\
# The return, scaled: a utility written outside zopg.

import dataclasses
from typing import ClassVar

from zopg.preferences import Utility
from zopg.rollout import masked_return


@dataclasses.dataclass(frozen=True)
class Scaled(Utility):
    factor: float = 2.0
    name: ClassVar[str] = "scaled"
    markov: ClassVar[bool] = True

    def __call__(self, traj):
        return self.factor * masked_return(traj)
"""

EXPERIMENT = """\
name = "plugin"
seeds = 2
budget_queries = 400
policy = "myext.policies:make_state_free"

[[envs]]
id = "myext.chain:make_chain"
label = "chain"
length = 3

[[links]]
name = "bradley-terry"

[evaluation]
points = 2
episodes = 20

[methods.zpg]
algorithm = "zpg"
num_pairs = 2
num_queries = 5
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A package `zopg_plugin_test` in a temporary folder on sys.path."""
    package = tmp_path / "site" / "zopg_plugin_test"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "chain.py").write_text(CHAIN)
    (package / "policies.py").write_text(POLICY)
    (package / "links.py").write_text(LINK)
    (package / "utilities.py").write_text(UTILITY)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return tmp_path


def experiment(folder, text=EXPERIMENT):
    path = folder / "plugin.toml"
    path.write_text(text.replace("myext.", "zopg_plugin_test."))
    return path


def test_an_environment_and_a_policy_from_outside_zopg_run_from_a_toml_file(plugin):
    out = plugin / "out"
    assert cli.main(["run", str(experiment(plugin)), "--out", str(out), "--quiet"]) == 0
    summary = store.read_json(out / "summary.json")
    (result,) = summary["results"]
    assert result["env"] == "chain" and result["evaluation"] == "monte-carlo"
    # The chain pays 1 at its end within 8 steps; the state-free policy starts at a fair coin.
    assert 0.0 <= result["value"]["mean"] <= 1.0
    assert result["initial_value"]["mean"] > 0.0


def test_make_and_make_policy_take_import_paths(plugin):
    env, params = make("zopg_plugin_test.chain:make_chain", length=2)
    assert params.length == 2 and env.num_states(params) == 3
    policy = make_policy("zopg_plugin_test.policies:make_state_free", env, params)
    assert type(policy).__name__ == "StateFree"


def test_a_link_from_outside_zopg_is_a_teacher_and_an_assumed_link(plugin):
    from zopg.preferences import make_link

    link = make_link("zopg_plugin_test.links:Steep", scale=0.25)
    assert float(link.prob(0.25)) == pytest.approx(0.7310586, abs=1e-6)
    with pytest.raises(ConfigError, match="known parameters: scale"):
        make_link("zopg_plugin_test.links:Steep", slope=2.0)
    with pytest.raises(ConfigError, match="must name a frozen dataclass"):
        make_link("zopg_plugin_test.chain:make_chain")
    text = EXPERIMENT.replace(
        'name = "bradley-terry"', 'name = "myext.links:Steep"\nlabel = "steep"'
    ).replace("num_queries = 5", 'num_queries = 5\nlink = "myext.links:Steep"')
    out = plugin / "out"
    assert cli.main(["run", str(experiment(plugin, text)), "--out", str(out), "--quiet"]) == 0
    (result,) = store.read_json(out / "summary.json")["results"]
    assert result["link"] == "steep"


def test_a_utility_from_outside_zopg_is_the_teachers(plugin):
    from zopg.preferences import make_utility

    assert make_utility("zopg_plugin_test.utilities:Scaled", factor=3.0).factor == 3.0
    with pytest.raises(ConfigError, match=r"must name a subclass of zopg\.preferences\.Utility"):
        make_utility("zopg_plugin_test.links:Steep")
    text = EXPERIMENT.replace(
        "[[envs]]", '[teacher.utility]\nname = "myext.utilities:Scaled"\nfactor = 3.0\n\n[[envs]]'
    )
    out = plugin / "out"
    assert cli.main(["run", str(experiment(plugin, text)), "--out", str(out), "--quiet"]) == 0
    (result,) = store.read_json(out / "summary.json")["results"]
    # Scored by the teacher's utility: three times the chain's return of 0 or 1.
    assert 0.0 < result["initial_value"]["mean"] <= 3.0


def test_a_registered_policy_is_named_like_a_built_in(plugin, monkeypatch):
    from zopg_plugin_test.policies import make_state_free

    monkeypatch.setattr("zopg.policies._REGISTERED", {})
    register("state-free", make_state_free)
    assert "state-free" in policy_names()
    text = EXPERIMENT.replace('"myext.policies:make_state_free"', '"state-free"')
    path = experiment(plugin, text)
    assert cli.main(["run", str(path), "--out", str(plugin / "out"), "--dry-run"]) == 0
    with pytest.raises(ConfigError, match="already registered"):
        register("state-free", make_state_free)
    with pytest.raises(ConfigError, match="already registered"):
        register("tabular", make_state_free)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("myext.chain:make_chain", "nowhere.chain:make_chain", "cannot import 'nowhere.chain'"),
        ("myext.chain:make_chain", "myext.chain:missing", "has no 'missing'"),
        ("myext.chain:make_chain", "myext.chain:Chain", "unexpected keyword argument 'length'"),
        ("myext.chain:make_chain", "builtins:dict", "must return \\(env, params\\)"),
        ("myext.policies:make_state_free", "myext.policies:nope", "has no 'nope'"),
        ("myext.policies:make_state_free", "myext.chain:make_chain", "lacks init, log_prob"),
    ],
)
def test_bad_plugins_are_refused_in_one_line(plugin, capsys, old, new, message):
    path = experiment(plugin, EXPERIMENT.replace(old, new))
    assert cli.main(["run", str(path), "--out", str(plugin / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err
