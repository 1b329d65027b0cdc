"""Figures (zopg.analysis.plots) from small results folders: score curves, display names, offline
methods as points, seeds over bars, no interval below 5 seeds, and the initial metrics.csv row."""

import importlib
import shutil
import sys
from pathlib import Path

import matplotlib.lines
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from zopg import cli, store
from zopg.analysis import plots
from zopg.analysis.compare import read_final_values
from zopg.analysis.names import DISPLAY_NAMES, display_name
from zopg.analysis.report import format_summary, normaliser, summarise_run

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed; it is read from the checkout
    sys.path.insert(0, str(ROOT))

ENV, LINK = "gridworld/open-5x5", "bradley-terry"
UNIFORM, OPTIMAL = 0.1, 0.9
ITERATIONS = np.array([0, 5, 9])
# method -> (algorithm, reference, queries at the logged iterations)
METHODS = {
    "zpg": ("zpg", False, [10.0, 60.0, 100.0]),
    "dpo-offline": ("dpo-offline", False, [100.0, 100.0, 100.0]),
    "exact-pg": ("exact-pg", True, [0.0, 0.0, 0.0]),
    "rm-ppo-obs": ("rm-ppo", False, [20.0, 60.0, 100.0]),
}


def make_folder(
    path: Path,
    seeds: int,
    initial_rows: bool = True,
    initial: float = UNIFORM,
    monte_carlo: bool = False,
):
    """metrics.csv, summary.json and experiment.json of one exact panel, every value between the
    uniform policy's and the optimum, as the report writes them (initial rows optional: the
    committed folders predate them). monte_carlo: no exact model (no uniform and optimal values,
    so no score), and a KL to the reference logged as the token family's runs log it."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seeds)
    tidy, results, entries = [], [], []
    for method, (algorithm, reference, queries) in METHODS.items():
        value = UNIFORM + (OPTIMAL - UNIFORM) * np.sort(rng.uniform(0.2, 0.9, (seeds, 3)), 1)
        run = {
            "method": method,
            "algorithm": algorithm,
            "reference": reference,
            "env": ENV,
            "link": LINK,
            "sweep": {},
            "iterations": ITERATIONS,
            "num_iterations": 10,
            "seeds": seeds,
            "evaluation": "monte-carlo" if monte_carlo else "exact",
            "metrics": {
                "eval/value": value,
                "budget/queries": np.tile(queries, (seeds, 1)),
                "budget/trajectories": np.tile(queries, (seeds, 1)),
                "budget/judged_trajectories": np.tile(queries, (seeds, 1)),
                "budget/env_steps": np.tile(queries, (seeds, 1)),
            },
            "initial_value": [initial] * seeds,
            "uniform_value": None if monte_carlo else UNIFORM,
            "optimal_value": None if monte_carlo else OPTIMAL,
        }
        if monte_carlo:
            run["metrics"]["eval/kl_to_reference"] = np.tile([0.5, 2.0, 4.0], (seeds, 1))
        row = {k: run[k] for k in ("method", "algorithm", "reference", "env", "link", "sweep")}
        row |= {"iterations": ITERATIONS, "metrics": run["metrics"], "normalise": normaliser(run)}
        if initial_rows:
            row |= {"initial_value": run["initial_value"], "initial_value_se": [0.0] * seeds}
        tidy.append(row)
        results.append(summarise_run(run))
        entries.append({"run_id": f"{method}__{ENV.replace('/', '-')}__{LINK}", "link": LINK})
    store.write_tidy(path / "metrics.csv", tidy)
    summary = {
        "experiment": "plots",
        "budget_queries": 100,
        "budget_unit": "queries",
        "seeds": seeds,
        "score": "(V - V_uniform) / (V* - V_uniform)",
        "sweeps": [],
        "results": results,
    }
    store.write_json_atomic(path / "summary.json", summary)
    store.write_experiment(path, {"name": "plots", "seeds": seeds, "sweeps": [], "runs": entries})
    return path


def unwrapped(title: str) -> str:
    """A title as one line (figures wrap long titles to their width)."""
    return " ".join(title.split())


def legend_texts(fig) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


def curve(ax, label: str) -> matplotlib.lines.Line2D:
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return line


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "plots", seeds=6)


def test_score_curves_run_from_the_initial_policy_and_the_value_figure_exists(folder):
    paths = {p.name for p in plots.plot_results(folder)}
    assert {"convergence_queries.png", "convergence_queries_value.png"} <= paths
    assert "final_scores.png" in paths and "final_values.png" not in paths
    columns = store.read_tidy(folder / "metrics.csv")
    summary = store.read_json(folder / "summary.json")
    fig = plots.plot_convergence(columns, summary, "queries", folder / "score.png")
    ax = fig.axes[0]
    zpg = curve(ax, "ZPG")
    x, y = zpg.get_data()
    # From the initial policy (score 0, nothing spent) to the optimum's 1 at most.
    assert x[0] == 0 and y[0] == pytest.approx(0.0)
    assert np.all((y >= 0) & (y <= 1))
    assert "normalised score" in ax.get_ylabel()
    assert curve(ax, "optimum (score 1)").get_ydata()[0] == 1.0
    assert curve(ax, "uniform policy (score 0)").get_ydata()[0] == 0.0
    fig = plots.plot_convergence(columns, summary, "queries", folder / "v.png", statistic="value")
    ax = fig.axes[0]
    assert curve(ax, "ZPG").get_ydata()[0] == pytest.approx(UNIFORM)
    assert curve(ax, "optimum V*").get_ydata()[0] == OPTIMAL
    # Iterations done: the initial policy at 0, the last logged iteration (9) at 10.
    fig = plots.plot_convergence(columns, summary, "iteration", folder / "i.png")
    x = curve(fig.axes[0], "ZPG").get_xdata()
    assert x[0] == 0 and x[-1] == 10


def test_files_without_initial_rows_start_from_the_summary(tmp_path):
    """The committed metrics.csv files have no initial rows: curves still start at 0 queries,
    from summary.json's initial value."""
    folder = make_folder(tmp_path / "old", seeds=6, initial_rows=False)
    columns = store.read_tidy(folder / "metrics.csv")
    assert columns["iteration"].min() == 0
    fig = plots.plot_convergence(
        columns, store.read_json(folder / "summary.json"), "queries", folder / "q.png"
    )
    x, y = curve(fig.axes[0], "ZPG").get_data()
    assert x[0] == 0 and y[0] == pytest.approx(0.0) and x.size == ITERATIONS.size + 1


def test_legends_use_display_names_outside_the_data(folder):
    columns = store.read_tidy(folder / "metrics.csv")
    summary = store.read_json(folder / "summary.json")
    fig = plots.plot_convergence(columns, summary, "queries", folder / "q.png")
    texts = legend_texts(fig)
    assert "ZPG" in texts and "exact PG (reward access, final)" in texts
    assert "offline DPO (budget up front, final)" in texts
    assert "rm-ppo-obs" in texts  # a label that is no algorithm's name keeps it
    assert not {"zpg", "dpo-offline", "exact-pg"} & set(texts)
    assert all(ax.get_legend() is None for ax in fig.axes)  # the figure's, below the panels
    fig = plots.plot_final(summary, folder / "bars.png", columns)
    texts = legend_texts(fig)
    assert {"ZPG", "offline DPO", "exact PG (reward access)", "rm-ppo-obs"} <= set(texts)
    assert fig.axes[0].get_legend() is None
    legend = fig.legends[0].get_window_extent()
    assert legend.y1 <= fig.axes[0].get_window_extent().y0  # under the axes, not over the bars


def test_every_algorithm_has_one_display_name_shared_with_the_tables():
    from zopg.algorithms.registry import names

    assert set(names()) <= set(DISPLAY_NAMES)
    readme_tables = importlib.import_module("benchmarks.reports.readme_tables")
    assert readme_tables.NAMES["zpg"] == display_name("zpg") == "ZPG"
    assert readme_tables.NAMES["ppo"] == display_name("ppo") + " †"
    assert set(readme_tables.NAMES) == set(DISPLAY_NAMES)
    assert display_name("rm-ppo-obs") == "rm-ppo-obs"
    # One legend entry a name: methods that share a display name keep their labels beside it.
    assert plots.method_names(["ppo", "ppo-gaussian", "zpg"]) == {
        "ppo": "PPO (ppo)",
        "ppo-gaussian": "PPO (ppo-gaussian)",
        "zpg": "ZPG",
    }


def test_a_method_that_spends_its_budget_up_front_is_a_point_not_a_line(folder):
    columns = store.read_tidy(folder / "metrics.csv")
    summary = store.read_json(folder / "summary.json")
    for x_axis in ("queries", "trajectories"):
        ax = plots.plot_convergence(columns, summary, x_axis, folder / "q.png").axes[0]
        label = "offline DPO (budget up front, final)"
        assert not [line for line in ax.get_lines() if line.get_label().startswith("offline")]
        (point,) = [c for c in ax.containers if c.get_label() == label]
        assert isinstance(point, ErrorbarContainer) and point.has_yerr
        data = point.lines[0]
        assert data.get_linestyle() == "None" and data.get_marker() == "o"
        assert list(data.get_xdata()) == [100.0]
    # Over iterations it does have a curve.
    ax = plots.plot_convergence(columns, summary, "iteration", folder / "i.png").axes[0]
    assert curve(ax, "offline DPO").get_xdata().size == ITERATIONS.size + 1


def seed_points(fig) -> list[int]:
    return [
        len(c.get_offsets()) for ax in fig.axes for c in ax.collections if c.get_gid() == "seeds"
    ]


def test_bars_show_every_seed(folder):
    columns = store.read_tidy(folder / "metrics.csv")
    summary = store.read_json(folder / "summary.json")
    fig = plots.plot_final(summary, folder / "bars.png", columns)
    assert seed_points(fig) == [6] * len(METHODS)
    # The dots are the final scores, not the initial rows'.
    finals = plots.final_per_seed(columns, [])[((ENV, LINK), "zpg")]["score"]
    zpg = next(r for r in summary["results"] if r["method"] == "zpg")
    assert finals.mean() == pytest.approx(zpg["score"]["mean"], abs=1e-5)


def test_value_bars_show_every_seed(tmp_path):
    """Monte Carlo experiments (the committed control folder): final_values.png, a dot a seed."""
    folder = tmp_path / "control"
    folder.mkdir()
    for name in ("metrics.csv", "summary.json"):
        shutil.copy(ROOT / "results" / "control" / name, folder / name)
    (folder / "figures").mkdir()
    (folder / "figures" / "final_scores.png").write_bytes(b"stale")
    summary = store.read_json(folder / "summary.json")
    assert plots.final_figure_name(summary) == "final_values.png"
    fig = plots.plot_final(
        summary, folder / "figures" / "final_values.png", store.read_tidy(folder / "metrics.csv")
    )
    assert seed_points(fig) == [r["seeds"] for r in summary["results"]]
    paths = {p.name for p in plots.plot_results(folder)}
    assert "final_values.png" in paths and not (folder / "figures" / "final_scores.png").exists()
    # No exact model, no score: the value figure is the only one.
    assert "convergence_queries_value.png" not in paths


def test_gold_against_kl_without_an_exact_model_plots_the_value(tmp_path):
    """The token family has no exact model, so no normalised score: the gold-against-√KL figure
    draws the Monte Carlo value (it was empty before), each method from its initial value."""
    folder = make_folder(tmp_path / "mc", seeds=5, monte_carlo=True)
    columns = store.read_tidy(folder / "metrics.csv")
    summary = store.read_json(folder / "summary.json")
    assert plots.has_kl(columns)
    fig = plots.plot_gold_against_kl(columns, summary, folder / "kl.png")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "value (Monte Carlo)"
    line = curve(ax, display_name("zpg"))
    rows = (columns["method"] == "zpg") & (columns["iteration"] >= 0)
    values = columns["value"][rows].reshape(5, 3).mean(axis=0)
    np.testing.assert_allclose(line.get_xdata(), np.sqrt([0.0, 0.5, 2.0, 4.0]))
    np.testing.assert_allclose(line.get_ydata(), np.concatenate([[UNIFORM], values]), rtol=1e-5)
    assert "gold_vs_sqrt_kl.png" in {p.name for p in plots.plot_results(folder)}


def test_below_five_seeds_no_interval_is_drawn_and_the_reader_is_warned(tmp_path):
    for seeds, warned in ((3, True), (5, False)):
        folder = make_folder(tmp_path / str(seeds), seeds=seeds)
        columns = store.read_tidy(folder / "metrics.csv")
        summary = store.read_json(folder / "summary.json")
        fig = plots.plot_convergence(columns, summary, "queries", folder / "q.png")
        bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
        assert (plots.FEW_SEEDS in unwrapped(fig.get_suptitle())) is warned
        assert bool(bands) is not warned
        (point,) = fig.axes[0].containers
        assert point.has_yerr is not warned
        fig = plots.plot_final(summary, folder / "bars.png", columns)
        assert (plots.FEW_SEEDS in unwrapped(fig.axes[0].get_title())) is warned
        whiskers = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
        assert bool(whiskers) is not warned
        assert seed_points(fig) == [seeds] * len(METHODS)
        text = format_summary(summary)
        assert ("WARNING n < 5 seeds" in text) is warned
        # The summary's numbers are as computed, intervals included.
        assert all(r["score"]["ci95"][0] is not None for r in summary["results"])


def test_crossings_read_the_logged_iterations_only(tmp_path, monkeypatch):
    """An initial policy above the threshold does not make a crossing at 0 queries: crossings
    and final values are read at the logged iterations, with or without initial rows."""
    folder = make_folder(tmp_path / "high", seeds=6, initial=OPTIMAL)
    old = make_folder(tmp_path / "old", seeds=6, initial=OPTIMAL, initial_rows=False)
    assert store.read_tidy(folder / "metrics.csv")["queries"].min() == 0
    sample_efficiency = importlib.import_module("benchmarks.reports.sample_efficiency")
    readme_tables = importlib.import_module("benchmarks.reports.readme_tables")
    monkeypatch.setattr(readme_tables, "RESULTS", tmp_path)
    records = []
    for path in (folder, old):
        out = path / "efficiency.json"
        assert sample_efficiency.main(["--results", str(path), "--out", str(out)]) == 0
        result = store.read_json(out)["results"][f"zpg/{ENV}"]
        assert result["logged_points"] == ITERATIONS.size
        assert result["queries_to_50pct"]["median"] != 0
        records.append(result)
        assert "| 10 [" in readme_tables.crossings_block(path.name, {ENV: 0.1})
    assert records[0] == records[1]
    finals = [
        {g["method"]: g["value"] for g in read_final_values(path)[1]} for path in (folder, old)
    ]
    for method in METHODS:
        np.testing.assert_array_equal(finals[0][method], finals[1][method])


TINY = """
name = "tiny_plots"
seeds = 2
budget_queries = 400
[[envs]]
id = "gridworld/open-5x5"
[[links]]
name = "bradley-terry"
[evaluation]
points = 4
[methods.zpg]
algorithm = "zpg"
num_pairs = 4
num_queries = 5
"""


def test_a_fresh_run_has_an_initial_row_and_unchanged_final_values(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    out = tmp_path / "tiny"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert "WARNING n < 5 seeds" in capsys.readouterr().out
    columns = store.read_tidy(out / "metrics.csv")
    initial = columns["iteration"] == store.INITIAL_ITERATION
    assert initial.sum() == 2  # one per seed, the first of its rows
    assert np.flatnonzero(initial).tolist() == [0, 5]
    for column in ("queries", "trajectories", "judged_trajectories", "env_steps"):
        assert np.all(columns[column][initial] == 0)
    (rid,) = {p.stem for p in (out / "runs").glob("*.json")}
    run = store.load_run(out / "runs", rid)
    np.testing.assert_allclose(columns["value"][initial], run["initial_value"], rtol=1e-5)
    assert np.all(columns["kl_to_reference"][initial] == 0)
    # The initial policy is the uniform one: score 0.
    np.testing.assert_allclose(columns["score"][initial], 0.0, atol=1e-5)
    # Final values: each seed's last logged iteration, as the run file and the summary have them.
    _, (group,) = read_final_values(out)
    np.testing.assert_allclose(group["value"], run["metrics"]["eval/value"][:, -1], rtol=1e-5)
    (result,) = store.read_json(out / "summary.json")["results"]
    assert result["value"]["mean"] == pytest.approx(group["value"].mean(), rel=1e-5)
    assert (out / "figures" / "convergence_queries_value.png").stat().st_size > 1000
