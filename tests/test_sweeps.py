"""Sweeps as data: expansion into runs, the swept values as columns, runs reused across points
they do not depend on, the sweep figure, and bad sweeps refused before anything runs. Also the
experiment-file parts of the regimes: labels, per-env utilities, method link lists."""

import pytest

from zopg import ConfigError, cli, store
from zopg.experiments import load_experiment
from zopg.experiments.runner import plan_runs

SWEPT = """
name = "swept"
seeds = 2
budget_queries = 400
[[envs]]
id = "gridworld/open"
size = 3
[[links]]
name = "bradley-terry"
[evaluation]
points = 3
threshold = 0.2
[methods.zpg]
algorithm = "zpg"
num_pairs = 2
num_queries = 5
[methods.exact-pg]
algorithm = "exact-pg"
num_iterations = 10
[[sweep]]
field = "envs.0.size"
values = [3, 4]
[[sweep]]
field = "methods.zpg.mu"
values = [1.0, 2.0]
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("swept")
    path = folder / "swept.toml"
    path.write_text(SWEPT)
    out = folder / "out"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    return out


def test_every_point_is_run_and_labelled(swept):
    columns = store.read_tidy(swept / "metrics.csv")
    points = set(zip(columns["method"], columns["size"], columns["mu"], strict=True))
    assert points == {(m, s, mu) for m in ("zpg", "exact-pg") for s in (3, 4) for mu in (1, 2)}
    summary = store.read_json(swept / "summary.json")
    assert [s["label"] for s in summary["sweeps"]] == ["size", "mu"]
    assert len(summary["results"]) == 8
    for result in summary["results"]:
        assert set(result["sweep"]) == {"size", "mu"}
        assert result["to_threshold"]["threshold"] == 0.2
    assert (swept / "figures" / "sweep.png").stat().st_size > 1000


def test_runs_the_sweep_does_not_touch_are_reused(swept):
    """exact-pg does not depend on ZPG's mu: one run per size serves both mu points."""
    runs = sorted(p.stem for p in (swept / "runs").glob("*.json"))
    assert len([r for r in runs if r.startswith("exact-pg")]) == 2
    assert len([r for r in runs if r.startswith("zpg")]) == 4
    record = store.read_experiment(swept)
    exact = [e for e in record["runs"] if e["run_id"].startswith("exact-pg")]
    assert len(exact) == 4 and len({e["run_id"] for e in exact}) == 2


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda t: t.replace('field = "methods.zpg.mu"', 'field = "methods.zpg.muu"'),
            r"methods.zpg: muu = 1.0: unknown field of ZPGConfig.*\(at the sweep point",
        ),
        (
            lambda t: t.replace("values = [1.0, 2.0]", "values = []"),
            r"sweep\[1\].values = \[\]: must be a non-empty list",
        ),
        (
            lambda t: t.replace("values = [3, 4]", "values = [3, 40]"),
            r"size = 40: must be an integer in \[2, 20\].*sweep point size = 40",
        ),
        (
            lambda t: t + '[[sweep]]\nfield = "seeds"\nvalues = [1, 2]\n',
            r"sweep: must be at most 2",
        ),
        (
            lambda t: t.replace('field = "methods.zpg.mu"', 'field = "seeds"'),
            r"sweep\[1\].field = 'seeds': cannot be swept",
        ),
        (
            lambda t: t.replace('field = "methods.zpg.mu"', 'field = "envs.3.slip"'),
            r"sweep envs.3.slip: 'envs.3' must index 0..0",
        ),
        (
            lambda t: t.replace("threshold = 0.2", "threshold = 'high'"),
            r"evaluation.threshold = 'high': must be a number",
        ),
    ],
)
def test_bad_sweeps_are_refused_before_anything_runs(tmp_path, edit, match):
    path = tmp_path / "bad.toml"
    path.write_text(edit(SWEPT))
    with pytest.raises(ConfigError, match=match):
        load_experiment(path)


LABELLED = """
name = "labelled"
seeds = 2
budget_queries = 100
[[envs]]
id = "gridworld"
label = "corridor"
layout = [".....", "S...G"]
horizon = 10
utility = { name = "waypoint-goal", waypoint = [0, 2] }
[[envs]]
id = "gridworld"
label = "corridor-late"
layout = [".....", "S...G"]
horizon = 10
utility = { name = "deadline", k = 6 }
[[links]]
name = "bradley-terry"
[[links]]
name = "bradley-terry"
label = "sharp-bt"
scale = 0.1
[[links]]
name = "hard"
[methods.zpg-known]
algorithm = "zpg"
links = ["bradley-terry", "sharp-bt"]
num_pairs = 2
num_queries = 5
[methods.zpg-bt]
algorithm = "zpg"
link = "bradley-terry"
mistake_rate = 0.1
num_pairs = 2
num_queries = 5
"""


def test_labels_per_env_utilities_and_method_link_lists(tmp_path):
    """Planned, not run: the runner's own plan is what it would run (the swept fixture above runs
    an experiment end to end), and planning builds every run with its evaluator."""
    path = tmp_path / "labelled.toml"
    path.write_text(LABELLED)
    experiment = load_experiment(path)
    assert [e.name for e in experiment.envs] == ["corridor", "corridor-late"]
    assert [link.panel for link in experiment.links] == ["bradley-terry", "sharp-bt", "hard"]
    planned = plan_runs(experiment)[0]
    known = {
        (p.labels["env"], p.labels["link"]) for p in planned if p.labels["method"] == "zpg-known"
    }
    # The hard link is not invertible: zpg-known is restricted to the other two panels.
    assert known == {
        (e, l) for e in ("corridor", "corridor-late") for l in ("bradley-terry", "sharp-bt")
    }
    assert len([p for p in planned if p.labels["method"] == "zpg-bt"]) == 6
    # Each env is scored by its own utility, exactly: V* differs between the two.
    optimum = {p.labels["env"]: p.run.evaluator.bounds[1] for p in planned}
    assert optimum["corridor"] != optimum["corridor-late"]
    assert all(p.run.evaluator.kind == "exact" for p in planned)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda t: t.replace('links = ["bradley-terry", "sharp-bt"]', 'links = ["logit"]'),
            r"methods.zpg-known.links = \['logit'\]: must be a non-empty list of link names",
        ),
        (
            lambda t: t.replace('label = "sharp-bt"\n', ""),
            r"links: each link name \(or label\) may appear once",
        ),
        (
            lambda t: t.replace('label = "corridor"\n', "").replace(
                'label = "corridor-late"\n', ""
            ),
            r"envs: each env id \(or label\) may appear once",
        ),
        (
            lambda t: t.replace("waypoint = [0, 2]", "waypoint = [1, 4]"),
            r"envs \(corridor\): teacher.utility: waypoint-goal.waypoint = \[1, 4\]: must be",
        ),
        (
            lambda t: t.replace("k = 6", "k = 11"),
            r"envs \(corridor-late\): teacher.utility: deadline.k = 11: must be <= the horizon, 10",
        ),
        (
            lambda t: t.replace("mistake_rate = 0.1", "mistake_rate = 0.5"),
            r"methods.zpg-bt: mistake_rate = 0.5: must be in \[0, 0.5\)",
        ),
        (
            lambda t: t.replace('links = ["bradley-terry", "sharp-bt"]\n', ""),
            r"hard link is not invertible",
        ),
    ],
)
def test_bad_regime_files_are_refused(tmp_path, edit, match):
    path = tmp_path / "bad.toml"
    path.write_text(edit(LABELLED))
    with pytest.raises(ConfigError, match=match):
        load_experiment(path)
