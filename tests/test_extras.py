"""The optional extras: without gymnax, brax or submitit installed, what needs one is refused
before anything runs, in one line naming the extra to install; the GridWorld needs none."""

import sys

import pytest

from zopg import ConfigError, cli
from zopg.envs import make


@pytest.fixture
def without(monkeypatch):
    """Make imports of these top-level packages fail as if they were not installed."""

    def hide(*packages):
        for name in list(sys.modules):
            if name.split(".")[0] in packages or name in ("zopg.envs.gymnax_env",):
                monkeypatch.delitem(sys.modules, name)
        for package in packages:
            monkeypatch.setitem(sys.modules, package, None)  # import raises ModuleNotFoundError

    return hide


@pytest.mark.parametrize(
    ("package", "env_id", "extra"),
    [("gymnax", "gymnax/CartPole-v1", "gymnax"), ("brax", "brax/inverted_pendulum", "brax")],
)
def test_an_env_of_a_missing_extra_names_the_extra(without, package, env_id, extra):
    without(package)
    with pytest.raises(ConfigError, match=rf"'{env_id}' needs the {extra} extra: pip install "):
        make(env_id)
    make("gridworld/open-5x5")  # the core needs neither


def test_an_experiment_of_a_missing_extra_is_refused_before_it_runs(without, tmp_path, capsys):
    without("gymnax", "brax")
    out = tmp_path / "out"
    assert cli.main(["run", "control", "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'zopg[gymnax]'" in err
    assert not out.exists()


def test_submit_without_submitit_names_the_slurm_extra(without, tmp_path):
    from zopg.experiments.submit import make_executor

    without("submitit")
    with pytest.raises(ConfigError, match=r"zopg submit needs the slurm extra"):
        make_executor("local", tmp_path, {})
