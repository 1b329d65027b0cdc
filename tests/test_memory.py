"""Memory guard: runs too big to fit are refused before anything compiles, and the estimate is
checked against what XLA allocates for the same computation."""

import logging
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from zopg import ConfigError
from zopg.envs import make as make_env
from zopg.experiments import load_experiment
from zopg.experiments.build import build_run
from zopg.experiments.memory import (
    ENV_VAR,
    check_fits,
    check_model_fits,
    estimate_run_bytes,
    memory_limit,
    parse_bytes,
)
from zopg.experiments.runner import plan_runs

SMALL = """
name = "memory"
seeds = 4
budget_queries = 2000
[[envs]]
id = "gridworld/open-5x5"
[[links]]
name = "bradley-terry"
[evaluation]
points = 10
[methods.zpg]
algorithm = "zpg"
num_pairs = 4
num_queries = 5
[methods.zpg_wide]
algorithm = "zpg"
num_pairs = 16
num_queries = 5
[methods.dpo]
algorithm = "dpo-online"
num_pairs = 8
num_queries = 5
num_eval_pairs = 32
"""
POINTS = 10
MEASURED_SEEDS = 8


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """label -> BuiltRun, built as the runner builds them (one env, one link)."""
    path = tmp_path_factory.mktemp("memory") / "memory.toml"
    path.write_text(SMALL)
    experiment = load_experiment(path)
    env, link = experiment.envs[0], experiment.links[0]
    return {m.label: build_run(experiment, env, link, m) for m in experiment.methods}


@pytest.fixture(autouse=True)
def no_limit_override(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_small_run_fits(runs):
    check_fits(runs.items(), seeds=4, points=POINTS)


def test_huge_seed_count_is_refused_without_compiling(runs, caplog):
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        with pytest.raises(ConfigError) as refused:
            check_fits([("zpg__run", runs["zpg"])], seeds=100_000_000, points=POINTS)
        assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
        # The capture works: a fresh function does log its compilation.
        jax.jit(lambda x: x * 3 + 1).lower(jnp.zeros(7)).compile()
    assert [r for r in caplog.records if "Compiling" in r.getMessage()]
    message = str(refused.value)
    assert message.startswith("zpg__run: seeds = 100000000 need about ")
    assert "more than the memory limit" in message
    assert "of this machine's" in message or "of this container's" in message
    # num_pairs sizes ZPG's per-iteration arrays; num_iterations does not.
    assert "use fewer seeds or smaller num_pairs" in message
    assert "num_iterations" not in message


def test_message_names_the_estimate_the_limit_and_every_refused_run(runs, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "1M")
    with pytest.raises(ConfigError) as refused:
        check_fits(runs.items(), seeds=1000, points=POINTS)
    message = str(refused.value)
    estimate = estimate_run_bytes(runs["zpg"], 1000, POINTS)
    assert message.startswith(f"zpg: seeds = 1000 need about {estimate.total / 2**20:.1f} MiB (")
    assert f"more than the memory limit 1.0 MiB ({ENV_VAR}=1M)" in message
    assert "; 2 other runs would not fit either;" in message
    # DPO's held-out pairs live in its state: their number is a remedy too.
    with pytest.raises(ConfigError, match=r"smaller .*num_eval_pairs"):
        check_fits([("dpo", runs["dpo"])], seeds=1000, points=POINTS)


def test_limit_from_the_environment(runs, monkeypatch):
    needed = estimate_run_bytes(runs["zpg"], 1000, POINTS).total
    monkeypatch.setenv(ENV_VAR, str(needed // 2))
    with pytest.raises(ConfigError, match=f"{ENV_VAR}={needed // 2}"):
        check_fits([("zpg", runs["zpg"])], seeds=1000, points=POINTS)
    monkeypatch.setenv(ENV_VAR, "64G")
    check_fits([("zpg", runs["zpg"])], seeds=1000, points=POINTS)
    assert memory_limit() == (64 * 2**30, f"{ENV_VAR}=64G")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12345", 12345),
        ("1e9", 10**9),
        ("8G", 8 * 2**30),
        ("1.5KiB", 1536),
        ("2mb", 2 * 2**20),
        (" 1T ", 2**40),
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "-5", "0", "8X", "", "0.1", "8 G B"])
def test_bad_limit_names_the_variable(runs, monkeypatch, text):
    monkeypatch.setenv(ENV_VAR, text)
    with pytest.raises(ConfigError, match=f"{ENV_VAR} = {text!r}: must be a positive number"):
        check_fits([("zpg", runs["zpg"])], seeds=4, points=POINTS)


def test_limit_of_this_machine():
    limit, where = memory_limit()
    assert limit > 0
    assert where.startswith("80% of this ")


def test_estimate_is_linear_in_seeds(runs):
    for run in runs.values():
        one, many, huge = (estimate_run_bytes(run, s, POINTS) for s in (1, 7, 100_000_000))
        parts = lambda e: (e.state, e.iteration, e.evaluation, e.metrics, e.shared)  # noqa: E731
        assert parts(one) == parts(many) == parts(huge)
        assert many.total - many.shared == 7 * (one.total - one.shared)
        assert huge.total - huge.shared == 100_000_000 * one.per_seed
        # The state part is exact: the carry of 3 vmapped seeds, plus each seed's two keys.
        keys = jax.random.split(jax.random.key(0), 3)
        carry = jax.eval_shape(jax.vmap(run.training.init), keys)
        carry_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(carry))
        key_bytes = jax.random.key_data(keys).nbytes
        assert 3 * one.state == carry_bytes + 2 * key_bytes


@pytest.fixture(scope="module")
def xla_measured(runs):
    """label -> bytes XLA allocates (arguments, outputs, temporaries) for the runner's vmapped
    advance at MEASURED_SEEDS seeds: one compilation per run, here only."""
    measured = {}
    for label, run in runs.items():
        keys = jax.ShapeDtypeStruct((MEASURED_SEEDS,), jax.random.key(0).dtype)
        carry = jax.eval_shape(jax.vmap(run.training.init), keys)
        advance = jax.jit(jax.vmap(run.training.advance, in_axes=(0, None, None)))
        bound = jax.ShapeDtypeStruct((), jnp.int32)
        stats = advance.lower(carry, bound, bound).compile().memory_analysis()
        measured[label] = (
            stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
        )
    return measured


@pytest.mark.parametrize("label", ["zpg", "zpg_wide", "dpo"])
def test_estimate_bounds_what_xla_allocates(runs, xla_measured, label):
    estimate = estimate_run_bytes(runs[label], MEASURED_SEEDS, POINTS)
    # What that compiled call holds: its input carry and everything it creates (the evaluation
    # and the kept metrics are other calls and the host's).
    advance = MEASURED_SEEDS * (estimate.state + estimate.iteration)
    ratio = advance / xla_measured[label]
    # Never below: the estimate counts every intermediate as alive at once. At most 20x: what it
    # over-counts is XLA's fusion (elementwise chains never materialise) and buffer reuse; for
    # every built-in algorithm on the GridWorld the ratio was 2-9x.
    assert 1.0 <= ratio <= 20.0, (label, advance, xla_measured[label])


def test_wider_estimates_grow_with_num_pairs(runs, xla_measured):
    narrow, wide = (estimate_run_bytes(runs[k], 1, POINTS) for k in ("zpg", "zpg_wide"))
    assert wide.iteration > 2 * narrow.iteration
    assert xla_measured["zpg_wide"] > 2 * xla_measured["zpg"]


def open_layout(cells: int) -> list[str]:
    return ["S" + "." * (cells - 1)] + ["." * cells] * (cells - 2) + ["." * (cells - 1) + "G"]


def test_a_huge_tabular_model_is_refused_before_it_is_built(monkeypatch):
    # 1000 x 1000 cells: P alone would be 14.6 TiB; an abstract trace sizes it in no memory.
    monkeypatch.delenv(ENV_VAR, raising=False)
    env, params = make_env("gridworld/open-5x5", layout=open_layout(1000))
    with pytest.raises(ConfigError, match=r"1000000 states x 4 actions.*use a smaller layout"):
        check_model_fits(env, params, "probe")
    # A small one passes, and an env without a model is not checked at all.
    check_model_fits(*make_env("gridworld/open-5x5"), "probe")
    check_model_fits(*make_env("gymnax/CartPole-v1"), "probe")


def test_the_model_check_runs_when_an_experiment_loads(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "64M")
    rows = ",".join(f'"{row}"' for row in open_layout(40))  # P and R: 78 MiB
    path = tmp_path / "big.toml"
    path.write_text(
        SMALL.replace(
            'id = "gridworld/open-5x5"\n', f'id = "gridworld/open-5x5"\nlayout = [{rows}]\n'
        )
    )
    # Loading validates by building every run; the check comes before the model is built.
    with pytest.raises(
        ConfigError, match=r"envs \(gridworld/open-5x5\): its tabular model \(1600 states"
    ):
        load_experiment(path)


@pytest.mark.slow
def test_tabular_estimate_is_within_a_factor_of_two_of_a_run(tmp_path):
    """`zopg run` on a 40x40 open GridWorld: its max RSS less a 5x5 run's, against the estimate."""
    used = {}
    for cells in (5, 40):
        rows = ",".join(f'"{row}"' for row in open_layout(cells))
        path = tmp_path / f"grid{cells}.toml"
        path.write_text(
            SMALL.replace("seeds = 4", "seeds = 2")
            .replace(
                'id = "gridworld/open-5x5"\n', f'id = "gridworld/open-5x5"\nlayout = [{rows}]\n'
            )
            .split("[methods.zpg_wide]")[0]
        )
        script = (
            "import resource, sys; from zopg.cli import main; "
            f"code = main(['run', {str(path)!r}, '--out', {str(tmp_path / str(cells))!r}]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        used[cells] = int(done.stdout.split()[-1]) * 1024
    experiment = load_experiment(tmp_path / "grid40.toml")
    runs = [(p.run_id, p.run) for p in plan_runs(experiment)[0]]
    estimate = estimate_run_bytes(runs[0][1], experiment.seeds, experiment.evaluation.points)
    assert 0.5 <= estimate.total / (used[40] - used[5]) <= 2.0
