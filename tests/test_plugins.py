"""Plugins: the pieces of docs/extending.md's package `myext` are built by import path
("package.module:NAME"); a policy registered from Python is named like a built-in; bad paths and
broken plugins are refused with one clear line before anything runs. (tests/test_extending.py
runs the page's experiment, which uses every piece.)"""

import pytest

from zopg import ConfigError, cli
from zopg.envs import make
from zopg.policies import make_policy, policy_names, register

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


def experiment(folder, text=EXPERIMENT):
    path = folder / "plugin.toml"
    path.write_text(text)
    return path


def test_make_and_make_policy_take_import_paths(recipes):
    env, params = make("myext.chain:make_chain", length=2)
    assert params.length == 2 and env.num_states(params) == 3
    policy = make_policy("myext.policies:make_state_free", env, params)
    assert type(policy).__name__ == "StateFree"


def test_a_link_from_outside_zopg_is_built_and_checked(recipes):
    from zopg.preferences import make_link

    link = make_link("myext.links:Steep", scale=0.25)
    assert float(link.prob(0.25)) == pytest.approx(0.7310586, abs=1e-6)
    with pytest.raises(ConfigError, match="known parameters: scale"):
        make_link("myext.links:Steep", slope=2.0)
    with pytest.raises(ConfigError, match="must name a frozen dataclass"):
        make_link("myext.chain:make_chain")


def test_a_utility_from_outside_zopg_is_built_and_checked(recipes):
    from zopg.preferences import make_utility

    assert make_utility("myext.utilities:Scaled", factor=3.0).factor == 3.0
    with pytest.raises(ConfigError, match=r"must name a subclass of zopg\.preferences\.Utility"):
        make_utility("myext.links:Steep")


def test_a_registered_policy_is_named_like_a_built_in(recipes, monkeypatch):
    from myext.policies import make_state_free

    monkeypatch.setattr("zopg.policies._REGISTERED", {})
    register("state-free", make_state_free)
    assert "state-free" in policy_names()
    text = EXPERIMENT.replace('"myext.policies:make_state_free"', '"state-free"')
    path = experiment(recipes, text)
    assert cli.main(["run", str(path), "--out", str(recipes / "out"), "--dry-run"]) == 0
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
def test_bad_plugins_are_refused_in_one_line(recipes, capsys, old, new, message):
    path = experiment(recipes, EXPERIMENT.replace(old, new))
    assert cli.main(["run", str(path), "--out", str(recipes / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err
