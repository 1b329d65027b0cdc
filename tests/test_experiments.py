"""Experiments: validation errors, an end-to-end CLI run, resume, sharding, summarize."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zopg
from zopg import ConfigError, cli, store
from zopg.analysis import plots
from zopg.analysis.report import write_reports
from zopg.experiments import load_experiment
from zopg.experiments.build import built_runs
from zopg.experiments.runner import logged_iterations, plan_runs, run_experiment

TINY = """
name = "tiny"
seeds = 4
budget_queries = 2000
[[envs]]
id = "gridworld/open-5x5"
[[links]]
name = "bradley-terry"
[evaluation]
points = 10
chunk_iterations = 25
[methods.zpg]
algorithm = "zpg"
num_pairs = 4
num_queries = 5
[methods.zbcpg]
algorithm = "zbcpg"
num_pairs = 2
num_queries = 5
block_size = 20
num_blocks = 2
"""


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("exp") / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def tiny_results(tiny_file, tmp_path_factory):
    """One uninterrupted single-device run through the CLI, shared by the tests below."""
    out = tmp_path_factory.mktemp("results") / "tiny"
    assert cli.main(["run", str(tiny_file), "--out", str(out), "--quiet"]) == 0
    return out


def skip_figures(monkeypatch):
    """Where figures are not what a test checks: drawing them costs 1-3 s a report. The
    end-to-end test below checks every figure, tests/test_plots.py a Monte Carlo folder's."""
    monkeypatch.setattr(plots, "plot_results", lambda out_dir: [])


def run_and_report(experiment, out, **kwargs):
    """What `zopg run` does: the runs, then the reports from the store."""
    run_experiment(experiment, out, **kwargs)
    return write_reports(out)


def write(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: "colour = 'red'\n" + t, r"bad.toml: colour: unknown key; allowed: .*budget_q"),
        (
            lambda t: t.replace('algorithm = "zpg"', 'algorithm = "zpgg"'),
            r"methods.zpg.algorithm: unknown algorithm 'zpgg' \(did you mean 'zpg'\?\); "
            r"known algorithms: .*zbcpg, zpg",
        ),
        (
            lambda t: t.replace("num_pairs = 4", "num_pears = 4"),
            r"methods.zpg: num_pears = 4: unknown field of ZPGConfig "
            r"\(did you mean 'num_pairs'\?\); allowed: .*num_pairs",
        ),
        (
            lambda t: t.replace("num_pairs = 4", "num_pairs = 0"),
            r"methods.zpg: num_pairs = 0: must be an integer in \[1, inf\]",
        ),
        (
            lambda t: t.replace("num_pairs = 4", "num_pairs = 4\nnum_iterations = 9"),
            r"methods.zpg.num_iterations: is derived from budget_queries",
        ),
        (
            lambda t: t.replace('"gridworld/open-5x5"', '"gridworld/maze"'),
            r"envs \(gridworld/maze\): unknown environment 'gridworld/maze'",
        ),
        (
            lambda t: t.replace(
                'id = "gridworld/open-5x5"', 'id = "gridworld/open-5x5"\nslip = 2.0'
            ),
            r"envs \(gridworld/open-5x5\): slip = 2.0: must be in \[0, 1\]",
        ),
        (lambda t: t.replace('"bradley-terry"', '"logit"'), r"links \(logit\): unknown link"),
        (lambda t: t.replace("seeds = 4", "seeds = 0"), r"seeds = 0: must be an integer >= 1"),
        (
            lambda t: t.replace("budget_queries = 2000", "budget_queries = 10"),
            r"methods.zpg: spends 20 queries per unit of num_iterations, more than budget_q",
        ),
        (lambda t: t + "\n[teacher]\nmistake = 0.9\n", r"teacher: teacher.mistake = 0.9"),
        (
            lambda t: t + "\n[teacher]\nlaziness = 0.9\n",
            r"teacher.laziness: unknown key; allowed: rationality",
        ),
        (lambda t: t.replace("points = 10", "points = -1"), r"evaluation.points = -1"),
        (lambda t: t.replace('name = "tiny"\n', ""), r"bad.toml: name: is required"),
        (
            lambda t: t.replace("chunk_iterations = 25", "chunk_iterations = 25\nepisodes = 1"),
            r"evaluation.episodes = 1: must be >= 2",
        ),
        (
            lambda t: t.replace('algorithm = "zpg"', 'algorithm = "zpg"\nenvs = ["gridworld/x"]'),
            r"methods.zpg.envs = \['gridworld/x'\]: must be a non-empty list of env ids "
            r"\(labels\) of this experiment \(gridworld/open-5x5\)",
        ),
        (
            lambda t: t.replace(
                'id = "gridworld/open-5x5"', 'id = "gridworld/open-5x5"\npolicy = "tabularr"'
            ),
            r"envs\[0\].policy = 'tabularr': allowed: tabular, mlp, gaussian",
        ),
        (
            lambda t: t.replace(
                'id = "gridworld/open-5x5"', 'id = "gridworld/open-5x5"\npolicy = "gaussian"'
            ),
            r"envs \(gridworld/open-5x5\).policy: policy 'gaussian' needs continuous actions",
        ),
        (
            lambda t: t + '\n[[envs]]\nid = "gridworld/open-5x5"\n',
            r"envs: each env id \(or label\) may appear once",
        ),
        (lambda t: t + "\n[[[", r"bad.toml: not valid TOML"),
        (
            lambda t: t.replace(
                "num_queries = 5\n[methods.zbcpg]",
                'num_queries = 5\nlink = "logit"\n[methods.zbcpg]',
            ),
            r"methods.zpg: unknown link 'logit'; known links: .*linear",
        ),
        (
            lambda t: t.replace(
                "num_queries = 5\n[methods.zbcpg]",
                'num_queries = 5\nlink = { name = "bradley-terry", scale = -1.0 }\n[methods.zbcpg]',
            ),
            r"methods.zpg: bradley-terry.scale = -1.0: must be in \(0, inf\)",
        ),
        (
            lambda t: t.replace('algorithm = "zpg"', 'algorithm = "no_such_module:ALGO"'),
            r"methods.zpg.algorithm: algorithm 'no_such_module:ALGO': cannot import",
        ),
    ],
)
def test_bad_experiment_files(tmp_path, edit, match):
    with pytest.raises(ConfigError, match=match):
        load_experiment(write(tmp_path, edit(TINY)))


def test_integral_floats_are_integers(tiny_file):
    """TOML reads 1e6 as a float; an integer field takes it as the integer it is."""
    exp = load_experiment(tiny_file, ["budget_queries=1e6", "methods.zpg.num_pairs=8.0"])
    assert exp.budget_queries == 1_000_000 and isinstance(exp.budget_queries, int)
    run = next(iter(built_runs(exp)))[-1]
    assert run.config.num_pairs == 8 and isinstance(run.config.num_pairs, int)
    with pytest.raises(ConfigError, match=r"budget_queries = 1000000.5: must be an integer"):
        load_experiment(tiny_file, ["budget_queries=1000000.5"])


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("methods.zpgg.num_pairs=3", r"methods.zpgg: no 'algorithm' key \(did you mean 'zpg'\?\)"),
        ("teacher.mistak=0.1", r"teacher.mistak: unknown key \(did you mean 'mistake'\?\)"),
        ("evaluation.pionts=3", r"evaluation.pionts: unknown key \(did you mean 'points'\?\)"),
        ("envs.0.id=gridworld/open-5x6", r"\(did you mean 'gridworld/open-5x5'\?\)"),
        ("links.0.name=bradly-terry", r"\(did you mean 'bradley-terry'\?\)"),
    ],
)
def test_misspelt_names_get_a_suggestion(tiny_file, override, match):
    with pytest.raises(ConfigError, match=match):
        list(built_runs(load_experiment(tiny_file, [override])))


def test_names_the_file_system_refuses_are_refused_before_running(tmp_path):
    long_label = TINY.replace("[methods.zpg]", f"[methods.{'m' * 65}]")
    with pytest.raises(ConfigError, match="at most 64 characters"):
        load_experiment(write(tmp_path, long_label))
    sweep = TINY + f'\n[[sweep]]\nfield = "description"\nvalues = ["{"v" * 250}"]\n'
    with pytest.raises(ConfigError, match=r"bytes; file names allow 240"):
        plan_runs(load_experiment(write(tmp_path, sweep)))
    nul = TINY + '\n[[sweep]]\nfield = "description"\nvalues = ["a\\u0000b"]\n'
    with pytest.raises(ConfigError, match="control character"):
        plan_runs(load_experiment(write(tmp_path, nul)))


def test_an_unknown_experiment_name_gets_a_suggestion():
    with pytest.raises(ConfigError, match=r"'quick_gridwrld' \(did you mean 'quick_gridworld'\?\)"):
        cli.resolve_experiment("quick_gridwrld")


def test_set_overrides(tiny_file):
    exp = load_experiment(tiny_file, ["methods.zpg.num_pairs=8", "envs.0.slip=0.3", "seeds=2"])
    zpg = next(m for m in exp.methods if m.label == "zpg")
    assert zpg.params["num_pairs"] == 8 and exp.envs[0].overrides["slip"] == 0.3
    assert exp.seeds == 2
    with pytest.raises(ConfigError, match=r"--set envs.3.slip: 'envs.3' must index 0..0"):
        load_experiment(tiny_file, ["envs.3.slip=0.1"])
    with pytest.raises(ConfigError, match=r"expected path\.to\.field=value"):
        load_experiment(tiny_file, ["seeds"])


def test_bad_input_exits_2_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    bad = write(tmp_path, TINY.replace("num_pairs = 4", "num_pairs = -4"))
    assert cli.main(["run", str(bad), "--out", str(out), "--quiet"]) == 2
    assert "num_pairs = -4" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["run", "no-such-experiment"]) == 2
    assert cli.main(["summarize", str(tmp_path)]) == 2


def test_end_to_end_writes_every_result_file(tiny_results):
    for name in ("metrics.csv", "summary.json", "manifest.json"):
        assert (tiny_results / name).stat().st_size > 0
    for name in (
        "convergence_queries",
        "convergence_trajectories",
        "convergence_iteration",
        "final_scores",
    ):
        assert (tiny_results / "figures" / f"{name}.png").stat().st_size > 1000
    columns = store.read_tidy(tiny_results / "metrics.csv")
    # One row per (method, env, link, seed, logged iteration) and one per seed for the initial
    # policy: 2 methods x 4 seeds x (10 points + 1).
    assert len(columns["method"]) == 2 * 4 * 11
    summary = store.read_json(tiny_results / "summary.json")
    by_method = {r["method"]: r for r in summary["results"]}
    # Both spent the shared budget: 100 iterations of 20 queries (ZBCPG: 2 blocks x 2 pairs x 5).
    assert by_method["zpg"]["queries"] == 2000 and by_method["zbcpg"]["queries"] == 2000
    assert by_method["zpg"]["iterations"] == 100 and by_method["zbcpg"]["iterations"] == 100
    manifest = store.read_json(tiny_results / "manifest.json")
    assert manifest["config_hash"] and manifest["versions"]["jax"]
    phases = ("init_s", "compile_s", "run_s", "eval_s")
    assert all(run[phase] > 0 for run in manifest["runs"].values() for phase in phases)
    assert manifest["init_s"] == pytest.approx(sum(r["init_s"] for r in manifest["runs"].values()))
    # The final value in the CSV is the one the summary reports.
    zpg_final = columns["value"][(columns["method"] == "zpg") & (columns["iteration"] == 99)]
    assert by_method["zpg"]["value"]["mean"] == pytest.approx(zpg_final.mean(), rel=1e-5)


def test_summarize_reproduces_summary_json(tiny_results, capsys):
    assert cli.main(["summarize", str(tiny_results)]) == 0
    printed = capsys.readouterr().out
    summary = store.read_json(tiny_results / "summary.json")
    for r in summary["results"]:
        line = next(l for l in printed.splitlines() if l.startswith(r["method"] + " "))
        for number in (
            r["value"]["mean"],
            r["score"]["mean"],
            *r["score"]["ci95"],
            r["score"]["iqm"],
        ):
            assert f"{number:.3f}" in line


def test_summarize_without_scores_shows_initial_and_iqm_of_the_return(capsys):
    """Monte Carlo results (the committed make bench-control) have no normalised score."""
    results = Path(__file__).resolve().parent.parent / "results" / "control"
    assert cli.main(["summarize", str(results)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "initial" in printed[1] and "score" not in printed[1]
    # Lines starting with "!" flag non-finite metrics under the table (online DPO's label
    # accuracy is undefined once every pair ties at 500).
    rows = [line for line in printed[2:] if not line.startswith("! ")]
    for r, line in zip(store.read_json(results / "summary.json")["results"], rows, strict=True):
        assert line.startswith(r["method"] + " ") and r["env"] in line
        for number in (r["value"]["mean"], r["initial_value"]["mean"], r["value"]["iqm"]):
            assert f"{number:.3f}" in line


def test_resume_after_interruption_is_identical(tiny_file, tiny_results, tmp_path, monkeypatch):
    skip_figures(monkeypatch)
    experiment = load_experiment(tiny_file)
    out = tmp_path / "resumed"
    real_save = store.save_checkpoint
    calls = {"n": 0}

    def dying_save(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # killed after the second checkpoint, in the middle of a run
            raise KeyboardInterrupt

    monkeypatch.setattr(store, "save_checkpoint", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(experiment, out, quiet=True)
    assert list((out / "runs").glob("*.ckpt"))
    monkeypatch.setattr(store, "save_checkpoint", real_save)
    messages = []
    run_and_report(experiment, out, quiet=True, log=messages.append)
    assert (out / "metrics.csv").read_text() == (tiny_results / "metrics.csv").read_text()
    # A finished run is skipped the next time.
    messages.clear()
    run_experiment(experiment, out, quiet=True, log=messages.append)
    assert all("skipped" in m for m in messages) and len(messages) == 2


@pytest.mark.slow  # the shard bookkeeping stays in tests/test_shards.py's fast tests
def test_sharded_run_matches_single_device(tiny_file, tiny_results, tmp_path):
    out = tmp_path / "sharded"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    code = (
        "import sys, jax; from zopg import cli; assert len(jax.devices()) == 4; "
        f"sys.exit(cli.main(['run', {str(tiny_file)!r}, '--out', {str(out)!r}, '--quiet']))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(run["devices"] == 4 for run in manifest["runs"].values())
    sharded = store.read_tidy(out / "metrics.csv")
    single = store.read_tidy(tiny_results / "metrics.csv")
    for column in (
        "method",
        "env",
        "link",
        "seed",
        "iteration",
        "queries",
        "trajectories",
        "judged_trajectories",
        "env_steps",
    ):
        np.testing.assert_array_equal(sharded[column], single[column])
    # Values agree to float32 round-off: XLA may order the exact-value reduction differently
    # in a partitioned program (seen: 1 ulp in the 7th digit).
    np.testing.assert_allclose(sharded["value"], single["value"], rtol=1e-5, atol=1e-6)


MONTE_CARLO = """
name = "mc"
seeds = 2
budget_queries = 240
policy = "mlp"
policy_params = { hidden_sizes = [8] }
[[envs]]
id = "gymnax/CartPole-v1"
horizon = 50
[[envs]]
id = "gridworld/open-5x5"
policy = "tabular"
[[links]]
name = "bradley-terry"
scale = 20.0
[evaluation]
points = 4
chunk_iterations = 100
episodes = 8
[methods.zpg]
algorithm = "zpg"
num_pairs = 2
num_queries = 5
r_max = 60.0
[methods.es]
algorithm = "es"
envs = ["gymnax/CartPole-v1"]
num_iterations = 6
population_size = 4
"""


# Slow (about 15 s): in make test, test_evaluation checks the Monte Carlo evaluator, the
# runner's Monte Carlo path runs in test_lm_methods, test_plots draws a Monte Carlo folder and
# test_resume_after_interruption_is_identical checks the resume; the per-env policy and
# per-method env lists of a CartPole run are checked in make test-all only.
@pytest.mark.slow
def test_monte_carlo_evaluation_per_env_policy_and_resume(tmp_path, monkeypatch):
    """Envs without an exact model get Monte Carlo returns at the logged iterations and of the
    initial policy; per-env policies and per-method env lists apply; a resumed run is
    identical."""
    skip_figures(monkeypatch)
    path = tmp_path / "mc.toml"
    path.write_text(MONTE_CARLO)
    out = tmp_path / "mc"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    columns = store.read_tidy(out / "metrics.csv")
    runs = set(zip(columns["method"], columns["env"], strict=True))
    # es runs on CartPole only; zpg on both (tabular policy on the GridWorld).
    assert runs == {
        ("zpg", "gymnax/CartPole-v1"),
        ("zpg", "gridworld/open-5x5"),
        ("es", "gymnax/CartPole-v1"),
    }
    cart = (columns["method"] == "zpg") & (columns["env"] == "gymnax/CartPole-v1")
    # 24 iterations (240 / (2 x 5)), 4 logged points spread evenly over 0..23.
    np.testing.assert_array_equal(np.unique(columns["iteration"][cart]), [-1, 0, 8, 15, 23])
    returns, stderr = columns["value"][cart], columns["value_se"][cart]
    # CartPole pays +1 per step until termination; horizon 50.
    assert np.all((returns >= 1) & (returns <= 50)) and np.all(stderr >= 0)
    assert np.all(np.isnan(columns["score"][cart]))
    grid = columns["env"] == "gridworld/open-5x5"
    assert np.all(np.isfinite(columns["score"][grid]))
    assert np.all(columns["value_se"][grid] == 0)  # exact
    summary = store.read_json(out / "summary.json")
    zpg_cart = next(
        r for r in summary["results"] if r["method"] == "zpg" and r["env"] == "gymnax/CartPole-v1"
    )
    assert zpg_cart["evaluation"] == "monte-carlo" and zpg_cart["score"]["mean"] is None
    assert 1 <= zpg_cart["initial_value"]["mean"] <= 50

    # Interrupted after the first saved chunk, then resumed: identical files.
    experiment = load_experiment(path)
    resumed = tmp_path / "resumed"
    real_save = store.save_checkpoint

    def dying_save(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "save_checkpoint", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(experiment, resumed, quiet=True)
    monkeypatch.setattr(store, "save_checkpoint", real_save)
    run_and_report(experiment, resumed, quiet=True)
    assert (resumed / "metrics.csv").read_text() == (out / "metrics.csv").read_text()


def test_logged_iterations():
    np.testing.assert_array_equal(logged_iterations(5, 10), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(logged_iterations(30, 4), [0, 10, 19, 29])
    kept = logged_iterations(1000, 10)
    assert kept[0] == 0 and kept[-1] == 999 and kept.size == 10


def test_list_names_everything(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("gridworld/cliff-4x6", "bradley-terry", "weibull", "mistake", "zbcpg"):
        assert word in out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"zopg {zopg.__version__}"


def test_cli_entry_point_is_installed():
    exe = Path(sys.executable).parent / "zopg"
    done = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "summarize" in done.stdout


def test_summarize_into_a_closed_pipe_is_quiet():
    """`zopg summarize DIR | head`: the reader leaves early; no traceback, exit code 0. `true`
    exits before zopg has imported jax, so every write meets a closed pipe."""
    exe = Path(sys.executable).parent / "zopg"
    results = Path(__file__).resolve().parent.parent / "results" / "paper_gridworld"
    done = subprocess.run(
        f"'{exe}' summarize '{results}' | true; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stderr == ""


def test_ctrl_c_exits_130_and_a_log_shows_progress_lines(tiny_file, tmp_path, monkeypatch, capsys):
    """Without a terminal (capsys is a plain stream, as SLURM's log is) progress comes as lines;
    Ctrl-C ends the command with the shell's 130 and says how to resume."""
    real_save = store.save_checkpoint

    def dying_save(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "save_checkpoint", dying_save)
    code = cli.main(["run", str(tiny_file), "--out", str(tmp_path / "out"), "--seeds", "2"])
    err = capsys.readouterr().err
    assert code == 130
    assert "interrupted; finished chunks are saved, run again to resume" in err
    assert "zpg__gridworld-open-5x5__bradley-terry: 0/" in err  # a plain line, no \r
    assert "\r" not in err


def test_list_an_algorithm_shows_every_field_with_its_default(capsys):
    assert cli.main(["list", "zpg"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  num_queries +10 +an integer in \[1, 2147483647\]", out, re.M)
    assert "budget_queries sets num_iterations" in out and "zopg tune searches:" in out
    assert cli.main(["list", "zpgg"]) == 2
    assert "did you mean 'zpg'" in capsys.readouterr().err


def test_show_prints_the_resolved_config_as_toml(tiny_file, capsys):
    """What a run will use: the file's fields, --set, the budget's field and the defaults."""
    assert cli.main(["show", str(tiny_file), "zpg", "--set", "methods.zpg.num_pairs=8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[methods.zpg]  # zpg:")
    assert "num_pairs = 8\n" in out and 'direction = "sphere"\n' in out
    assert "num_iterations = 50\n" in out  # 2000 queries / (8 pairs x 5 votes)
    assert "# link: not set\n" in out and "zbcpg" not in out
