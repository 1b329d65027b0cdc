"""Equal tuning effort: seeded sampler, vmapped trials = trial by trial, held-out envs, errors."""

import json
import math

import numpy as np
import pytest

from zopg import ConfigError, cli
from zopg.algorithms import registry
from zopg.algorithms.search_space import SearchSpace, log_range, one_of
from zopg.envs import make
from zopg.experiments import load_experiment
from zopg.experiments.build import built_runs
from zopg.tuning import trials as trial_runs
from zopg.tuning.tune import (
    fixed_by_experiment,
    method_fingerprint,
    method_space,
    parse_tune,
    trial_points,
    tune,
    tuning_experiment,
)

TUNED = """
name = "tuned"
seeds = 2
budget_queries = 1200
[[envs]]
id = "gridworld/open-5x5"
[[links]]
name = "bradley-terry"
[evaluation]
points = 3
[methods.zpg]
algorithm = "zpg"
num_queries = 4
[methods.dpo-online]
algorithm = "dpo-online"
num_queries = 4
num_eval_pairs = 16
[methods.es]
algorithm = "es"
num_iterations = 5
[tune]
trials = 4
seeds = 2
[[tune.envs]]
id = "gridworld/random"
seed = 3
"""


def write(tmp_path, text, name="tuned.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_sampler_is_reproducible_and_stratified():
    space = SearchSpace(
        log_range("step_size", 1e-3, 1.0),
        log_range("mu", 0.1, 10.0),
        one_of("optimizer", "sgd", "adam"),
    )
    a, b, c = space.sample(16, 0), space.sample(16, 0), space.sample(16, 1)
    assert a == b and a != c
    # One trial in each sixteenth of each log range (Latin hypercube), and equal shares of the
    # choices.
    for field, low, high in (("step_size", 1e-3, 1.0), ("mu", 0.1, 10.0)):
        u = (np.log([t[field] for t in a]) - np.log(low)) / (np.log(high) - np.log(low))
        strata = np.floor(np.clip(u, 0, 1 - 1e-9) * 16).astype(int)
        assert sorted(strata) == list(range(16)), field
    assert sorted(t["optimizer"] for t in a).count("adam") == 8


def test_every_declared_space_fits_its_config():
    """Registration checks each space against the config's field rules; every budget-matched
    method declares one."""
    for name, algorithm in registry.ALGORITHMS.items():
        if not algorithm.reference:
            assert algorithm.search_space is not None, name
        if algorithm.search_space is not None:
            algorithm.search_space.check(algorithm.config, name)


@pytest.mark.parametrize(
    "space, match",
    [
        (SearchSpace(log_range("step_size", -1.0, 1.0)), r"log range needs low > 0"),
        (
            SearchSpace(one_of("optimizer", "sgd", "lion")),
            r"optimizer.*lion.*allowed|must be one of",
        ),
        (SearchSpace(log_range("no_such_field", 0.1, 1.0)), r"unknown field 'no_such_field'"),
        (SearchSpace(one_of("num_pairs", 0, 4)), r"num_pairs"),
    ],
)
def test_bad_search_spaces(space, match):
    with pytest.raises(ConfigError, match=match):
        space.check(registry.get("zpg").config, "zpg")


def test_vmapped_trials_equal_trial_by_trial(tmp_path):
    experiment = load_experiment(write(tmp_path, TUNED), include=False)
    spec = parse_tune(experiment)
    space = registry.get("zpg").search_space
    points = [dict(p, num_pairs=25, optimizer="sgd", num_queries=4) for p in space.sample(4, 5)]
    variant = tuning_experiment(experiment, spec, "zpg", points[0])
    ((*_, run),) = built_runs(variant)
    keys = trial_runs.seed_keys(0, 2)
    batch = trial_runs.score_group(run, points, space.traced_fields, keys, vmapped=True)
    one_by_one = trial_runs.score_group(run, points, space.traced_fields, keys, vmapped=False)
    assert batch.shape == (4, 2)
    # The same program with and without the trial axis: equal up to float32 rounding.
    np.testing.assert_allclose(batch, one_by_one, rtol=0, atol=1e-5)
    assert len(np.unique(np.round(batch[:, 0], 6))) > 1  # the trials differ


def test_zopg_tune_gives_every_method_the_same_trials_and_a_fragment(tmp_path, capsys):
    path = write(tmp_path, TUNED)
    out = tmp_path / "tune"
    assert cli.main(["tune", str(path), "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "trials.json").read_text())
    counts = {m: sum(t["method"] == m for t in record["trials"]) for m in ("zpg", "dpo-online")}
    assert counts == {"zpg": 4, "dpo-online": 4}  # es is a reference: not tuned by default
    assert record["tuning_envs"] == [{"id": "gridworld/random", "seed": 3}]
    for trial in record["trials"]:
        assert set(trial["envs"]) == {"tune-0:gridworld/random"}
        assert len(trial["per_seed"]) == 2
    # Run again: every method's trials are reused, not rerun, and the choice is the same.
    messages = []
    again = tune(path, out, log=messages.append)
    assert sum("reused" in m for m in messages) == 2
    assert again["chosen"] == record["chosen"]
    fragment = tmp_path / "tuned" / "tuned.toml"
    assert fragment.exists() and (out / "chosen.toml").read_text() == fragment.read_text()
    # The experiment sets zpg's num_queries, a searched field: every trial keeps its value, the
    # provenance says so, and the fragment leaves it to the experiment.
    assert {t["values"]["num_queries"] for t in record["trials"] if t["method"] == "zpg"} == {4}
    assert record["spaces"]["zpg"].endswith("fixed by the experiment: num_queries = 4")
    assert "num_queries" not in fragment.read_text().split("[methods.zpg]")[1].split("[")[0]
    # An experiment that includes the fragment runs the chosen values.
    included = write(tmp_path, 'include = ["tuned/tuned.toml"]\n' + TUNED, "with.toml")
    experiment = load_experiment(included)
    zpg = next(m for m in experiment.methods if m.label == "zpg")
    assert zpg.params["step_size"] == record["chosen"]["zpg"]["values"]["step_size"]
    assert "provenance" in experiment.raw and experiment.raw["provenance"]["zpg"]["trials"] == 4
    # Another budget is another tuning: trials are reused only under the same fingerprint.
    other_budget = TUNED.replace("budget_queries = 1200", "budget_queries = 2400")
    budget_experiment = load_experiment(write(tmp_path, other_budget, "budget.toml"), include=False)
    budget_zpg = next(m for m in budget_experiment.methods if m.label == "zpg")
    fingerprint = method_fingerprint(budget_experiment, parse_tune(budget_experiment), budget_zpg)
    assert fingerprint != record["fingerprints"]["zpg"]
    # So are other evaluation settings (run here: they change no compiled program, so the
    # retune reuses the compilations). And `--methods zpg` retunes zpg alone: dpo-online's
    # trials and its fragment sections stay.
    dpo_section = fragment.read_text().split("[methods.dpo-online]")[1].split("[")[0]
    changed = write(tmp_path, TUNED.replace("points = 3", "points = 3\nthreshold = 0.5"))
    messages = []
    third = tune(changed, out, methods=["zpg"], log=messages.append)
    assert not any("reused" in m for m in messages)
    assert third["fingerprints"]["zpg"] != record["fingerprints"]["zpg"]
    assert third["chosen"]["dpo-online"] == record["chosen"]["dpo-online"]
    old_dpo = [t for t in record["trials"] if t["method"] == "dpo-online"]
    assert [t for t in third["trials"] if t["method"] == "dpo-online"] == old_dpo
    text = fragment.read_text()
    assert text.split("[methods.dpo-online]")[1].split("[")[0] == dpo_section
    assert "[provenance.dpo-online]" in text and "[provenance.zpg]" in text


def test_sizes_that_trade_against_iterations_are_searched(tmp_path):
    """ZPG's votes per pair and RM+PPO's pairs per round are structural dimensions: each value
    is its own compiled group, and with the budget it sets the number of iterations."""
    zo = registry.get("zpg").search_space
    assert {"num_pairs", "num_queries"} <= set(zo.fields) - set(zo.traced_fields)
    assert registry.get("zbcpg").search_space == zo
    rm = registry.get("rm-ppo").search_space
    assert "num_pairs" in set(rm.fields) - set(rm.traced_fields)
    # Unfixed (the experiment no longer sets it), M is drawn and sets the iterations.
    text = TUNED.replace("num_queries = 4\n[methods.dpo-online]", "[methods.dpo-online]")
    experiment = load_experiment(write(tmp_path, text), include=False)
    spec = parse_tune(experiment, trials=6)
    points = zo.sample(6, spec.seed)
    assert {p["num_queries"] for p in points} == {1, 3, 10}
    for point in points:
        ((*_, run),) = built_runs(tuning_experiment(experiment, spec, "zpg", point))
        assert run.config.num_queries == point["num_queries"]
        per_iteration = point["num_pairs"] * point["num_queries"]
        assert run.config.num_iterations == 1200 // per_iteration


def test_searched_fields_the_experiment_sets_are_held_fixed(tmp_path):
    """Found through nested tables too; every trial keeps them, the rest is drawn as always."""
    text = TUNED + '[methods.rm-ppo]\nalgorithm = "rm-ppo"\nnum_pairs = 20\n'
    text += "[methods.rm-ppo.ppo]\nnum_iterations = 3\n"
    experiment = load_experiment(write(tmp_path, text), include=False)
    spec = parse_tune(experiment, methods=["rm-ppo"])
    method = next(m for m in experiment.methods if m.label == "rm-ppo")
    space = registry.get("rm-ppo").search_space
    assert fixed_by_experiment(method, space) == {"ppo.num_iterations": 3, "num_pairs": 20}
    points = trial_points(method, space, spec)
    drawn = space.sample(spec.trials, spec.seed)
    for point, free in zip(points, drawn, strict=True):
        assert point == {**free, "ppo.num_iterations": 3, "num_pairs": 20}


def test_an_experiment_may_search_other_choices_of_a_structural_dimension(tmp_path):
    """[tune.choices.METHOD]: at a budget the declared choices do not fit (RM+PPO's 100-1000
    pairs per round at a few thousand queries), the experiment names the choices to search;
    the trials draw from them and the provenance records them."""
    text = TUNED + '[methods.rm-ppo]\nalgorithm = "rm-ppo"\n'
    text += "[tune.choices.rm-ppo]\nnum_pairs = [10, 20, 40]\n"
    experiment = load_experiment(write(tmp_path, text), include=False)
    spec = parse_tune(experiment, trials=6, methods=["rm-ppo"])
    method = next(m for m in experiment.methods if m.label == "rm-ppo")
    space = method_space(method, spec)
    assert {p["num_pairs"] for p in trial_points(method, space, spec)} == {10, 20, 40}
    assert "num_pairs in {10, 20, 40}" in space.describe()
    # The other dimensions are the declared ones, drawn as always.
    declared = registry.get("rm-ppo").search_space
    assert [d for d in space.dimensions if d.field != "num_pairs"] == [
        d for d in declared.dimensions if d.field != "num_pairs"
    ]
    for bad, match in (
        ("[tune.choices.es]\nnum_pairs = [5]\n", r"tune.choices.es: 'es' is not a tuned"),
        ("[tune.choices.rm-ppo]\nppo.learning_rate = [0.1]\n", r"not a dimension with choices"),
        ("[tune.choices.rm-ppo]\nnum_pairs = []\n", r"must be a list of distinct values"),
        ("[tune.choices.rm-ppo]\nnum_pairs = [0, 10]\n", r"num_pairs"),
    ):
        text = TUNED + '[methods.rm-ppo]\nalgorithm = "rm-ppo"\n' + bad
        with pytest.raises(ConfigError, match=match):
            parse_tune(load_experiment(write(tmp_path, text), include=False), methods=["rm-ppo"])


def test_an_experiment_may_search_another_range_of_a_continuous_dimension(tmp_path):
    """[tune.ranges.METHOD]: a problem whose scale the declared range misses (LoRA adapters of
    a trained GRU want step sizes far below 1e-3) names the range; every trial's value lies in
    it, spread over its strata on the declared scale, and it stays traced."""
    text = TUNED + "[tune.ranges.zpg]\nstep_size = [1e-6, 1e-2]\n"
    experiment = load_experiment(write(tmp_path, text), include=False)
    spec = parse_tune(experiment, trials=8, methods=["zpg"])
    method = next(m for m in experiment.methods if m.label == "zpg")
    space = method_space(method, spec)
    steps = sorted(p["step_size"] for p in trial_points(method, space, spec))
    assert all(1e-6 <= s <= 1e-2 for s in steps)
    # Latin hypercube on the log scale: one trial in each of the 8 half-decades.
    strata = [int((math.log10(s) + 6) / 0.5) for s in steps]
    assert strata == list(range(8))
    assert "step_size log [1e-06, 0.01] (traced)" in space.describe()
    declared = registry.get("zpg").search_space
    assert [d for d in space.dimensions if d.field != "step_size"] == [
        d for d in declared.dimensions if d.field != "step_size"
    ]
    # A nested field, written as TOML writes it (a dotted key is a nested table).
    text = TUNED + '[methods.rm-ppo]\nalgorithm = "rm-ppo"\nnum_pairs = 20\n'
    text += "[tune.ranges.rm-ppo]\nppo.learning_rate = [1e-5, 1e-1]\n"
    experiment = load_experiment(write(tmp_path, text), include=False)
    spec = parse_tune(experiment, trials=4, methods=["rm-ppo"])
    method = next(m for m in experiment.methods if m.label == "rm-ppo")
    assert "ppo.learning_rate log [1e-05, 0.1] (traced)" in method_space(method, spec).describe()
    # Tuning a subset (`zopg tune --methods`) still reads ranges set for the other methods.
    both = TUNED + "[tune.ranges.zpg]\nstep_size = [1e-6, 1e-2]\n"
    both += "[tune.ranges.dpo-online]\nlearning_rate = [1e-5, 0.3]\n"
    spec = parse_tune(load_experiment(write(tmp_path, both), include=False), methods=["zpg"])
    assert spec.methods == ("zpg",) and set(spec.ranges) == {"zpg", "dpo-online"}
    for bad, match in (
        ("[tune.ranges.es]\nstep_size = [1e-6, 1e-2]\n", r"'es' is not a tuned method"),
        ("[tune.ranges.zpg]\nnum_pairs = [5, 50]\n", r"not a dimension with a range"),
        ("[tune.ranges.zpg]\nstep_size = [1e-6]\n", r"must be \[low, high\], two numbers"),
        ("[tune.ranges.zpg]\nstep_size = [1e-2, 1e-6]\n", r"is empty"),
        ("[tune.ranges.zpg]\nstep_size = [0.0, 1e-2]\n", r"log range needs low > 0"),
        ("[tune.ranges.zpg]\nstep_size = ['a', 1e-2]\n", r"two numbers"),
    ):
        with pytest.raises(ConfigError, match=match):
            parse_tune(load_experiment(write(tmp_path, TUNED + bad), include=False))


def test_tuning_envs_never_equal_evaluation_envs(tmp_path):
    same = TUNED.replace('id = "gridworld/random"\nseed = 3', 'id = "gridworld/open-5x5"')
    with pytest.raises(
        ConfigError, match=r"tune.envs\[0\]: gridworld/open-5x5 is the evaluation env"
    ):
        parse_tune(load_experiment(write(tmp_path, same), include=False))
    # The same layout under another name is caught too (its built parameters are compared).
    layout = '["S....", ".....", ".....", ".....", "....G"]'
    disguised = TUNED.replace(
        'id = "gridworld/random"\nseed = 3',
        f'id = "gridworld"\nlayout = {layout}\nhorizon = 16\nslip = 0.1\ntrap_reward = -1.0',
    )
    with pytest.raises(ConfigError, match=r"is the evaluation env gridworld/open-5x5"):
        parse_tune(load_experiment(write(tmp_path, disguised), include=False))
    # Random layouts are never the built-in evaluation layouts.
    built_in = {make(i)[1].layout for i in ("gridworld/open-5x5", "gridworld/cliff-4x6")}
    for seed in range(200):
        for height, width in ((5, 5), (4, 6)):
            assert (
                make("gridworld/random", seed=seed, height=height, width=width)[1].layout
                not in built_in
            )


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda t: t.replace("trials = 4", "trials = 0"),
            r"tune.trials = 0: must be an integer >= 1",
        ),
        (lambda t: t.replace("seeds = 2\n[[tune", "seeds = 0\n[[tune"), r"tune.seeds"),
        (
            lambda t: t.replace("[tune]", '[tune]\nmethods = ["nope"]'),
            r"tune.methods: 'nope' is not a method",
        ),
        (lambda t: t.replace("[tune]", '[tune]\nlink = "linear"'), r"tune.link = 'linear'"),
        (lambda t: t.replace("[tune]", "[tune]\nbudget = 3"), r"tune.budget: unknown key"),
        (
            lambda t: t.replace('[[tune.envs]]\nid = "gridworld/random"\nseed = 3\n', ""),
            r"tune.envs",
        ),
    ],
)
def test_bad_tune_tables(tmp_path, edit, match):
    with pytest.raises(ConfigError, match=match):
        parse_tune(load_experiment(write(tmp_path, edit(TUNED)), include=False))


def test_bad_tune_input_exits_2_before_anything_runs(tmp_path, capsys):
    path = write(tmp_path, TUNED)
    assert cli.main(["tune", str(path), "--trials", "0"]) == 2
    assert "--trials = 0" in capsys.readouterr().err
    assert cli.main(["tune", str(path), "--methods", "nope", "--out", str(tmp_path / "t")]) == 2
    assert not (tmp_path / "tuned").exists()


def test_an_included_fragment_may_not_set_what_the_experiment_sets(tmp_path):
    (tmp_path / "frag.toml").write_text("[methods.zpg]\nnum_queries = 7\n")
    path = write(tmp_path, 'include = ["frag.toml"]\n' + TUNED)
    with pytest.raises(
        ConfigError, match=r"methods.zpg.num_queries: is set here and in the included"
    ):
        load_experiment(path)
    (tmp_path / "frag.toml").write_text("[methods.ppo]\nnum_iterations = 7\n")
    with pytest.raises(ConfigError, match=r"sets methods.ppo, which this experiment does not have"):
        load_experiment(path)
