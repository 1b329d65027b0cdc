"""`zopg compare` (zopg.analysis.compare) on small results folders written with the store's own
metrics.csv writer: final values, baselines, Holm over the folder, best, sweeps, bad input."""

import json

import numpy as np
import pytest

from zopg import cli, store
from zopg.analysis.compare import compare_folder, read_final_values

SEEDS = 10


def make_folder(path, runs, sweeps=(), score=True, shared=()):
    """A results folder with experiment.json and metrics.csv. runs: (method, env, link, sweep
    point, reference, final values [seeds]); each run is logged twice, the first time with
    values the comparison must ignore. `shared`: methods whose one run serves every sweep
    point (as the runner does when the swept field does not touch them)."""
    path.mkdir(parents=True, exist_ok=True)
    tidy, entries = [], []
    for method, env, link, point, reference, finals in runs:
        finals = np.asarray(finals, dtype=float)
        early = np.full(SEEDS, -5.0)
        tidy.append(
            {
                "method": method,
                "algorithm": method,
                "reference": reference,
                "env": env,
                "link": link,
                "sweep": point,
                "iterations": np.array([0, 9]),
                "metrics": {
                    "eval/value": np.stack([early, finals], axis=1),
                    "budget/queries": np.tile([10.0, 100.0], (SEEDS, 1)),
                },
                "normalise": (lambda v: v) if score else (lambda v: np.full_like(v, np.nan)),
            }
        )
        swept = "".join(f"__{k}={v}" for k, v in point.items())
        first = "".join(f"__{k}={sweeps[0]['values'][0]}" for k in point) if sweeps else ""
        run_id = f"{method}__{env.replace('/', '-')}__{link}" + (
            first if method in shared else swept
        )
        entries.append({"run_id": run_id, "link": link, "sweep": point})
    store.write_tidy(path / "metrics.csv", tidy, [s["label"] for s in sweeps])
    store.write_experiment(
        path, {"name": path.name, "seeds": SEEDS, "sweeps": list(sweeps), "runs": entries}
    )
    return path


def noise(seed, scale=0.01):
    return np.random.default_rng(seed).normal(0.0, scale, SEEDS)


@pytest.fixture
def folder(tmp_path):
    """Panel "clear": alpha beats beta and gamma on every seed, an untested reference above
    all. Panel "close": alpha and beta differ by noise only."""
    base = 0.9 + noise(0)
    runs = [
        ("alpha", "grid", "clear", {}, False, base),
        ("beta", "grid", "clear", {}, False, base - 0.2 + noise(1)),
        ("gamma", "grid", "clear", {}, False, base - 0.5 + noise(2)),
        ("oracle", "grid", "clear", {}, True, base + 0.05 + noise(3)),
        ("alpha", "grid", "close", {}, False, base),
        ("beta", "grid", "close", {}, False, base + noise(4, 0.05)),
        ("gamma", "grid", "close", {}, False, base - 0.5 + noise(5)),
    ]
    return make_folder(tmp_path / "tiny", runs)


def panel(result, link):
    return next(p for p in result["panels"] if p["link"] == link)


def comparison(result, link, method):
    return next(c for c in panel(result, link)["comparisons"] if c["method"] == method)


def test_reads_each_seeds_last_logged_iteration(folder):
    _, groups = read_final_values(folder)
    alpha = next(g for g in groups if g["method"] == "alpha" and g["link"] == "clear")
    np.testing.assert_allclose(alpha["value"], 0.9 + noise(0), atol=1e-5)  # not the -5s
    np.testing.assert_allclose(alpha["score"], alpha["value"])


def test_best_is_called_only_when_every_other_method_is_significantly_worse(folder):
    result = compare_folder(folder)
    clear, close = panel(result, "clear"), panel(result, "close")
    assert clear["baseline"] == "alpha" and clear["metric"] == "score"
    assert clear["best"]["status"] == "best" and clear["best"]["method"] == "alpha"
    assert close["best"]["status"] == "not resolved"
    assert close["best"]["tied"][0] == close["top"]  # the top first, then those tied with it
    assert set(close["best"]["tied"]) == {"alpha", "beta"}
    # The family: every budget-matched comparison of both panels; the reference is shown only.
    assert result["statistics"]["family_size"] == 4
    oracle = comparison(result, "clear", "oracle")
    assert not oracle["tested"] and oracle["verdict"] == "not tested" and oracle["p_holm"] is None
    beta = comparison(result, "clear", "beta")
    assert beta["n"] == SEEDS and beta["p"] == 2 / 2**SEEDS and beta["p_method"] == "exact"
    assert beta["verdict"] == "worse" and beta["mean_difference"] == pytest.approx(-0.2, abs=0.02)
    low, high = beta["ci"]
    assert low <= beta["mean_difference"] <= high < 0
    # Holm over the family of 4: the smallest p times 4.
    assert beta["p_holm"] == pytest.approx(4 * 2 / 2**SEEDS)


def test_a_named_baseline_is_compared_with_everything(folder):
    result = compare_folder(folder, baseline="gamma")
    clear = panel(result, "clear")
    assert clear["baseline"] == "gamma" and clear["baseline_rule"] == "requested"
    assert comparison(result, "clear", "alpha")["verdict"] == "better"
    # The best decision needs the comparisons with the top method, which were not made.
    assert clear["best"]["status"] == "not decided"
    # A reference named as the baseline is tested against every method.
    result = compare_folder(folder, baseline="oracle")
    assert comparison(result, "clear", "alpha")["tested"]


def test_cli_prints_and_writes_the_same_deterministic_record(folder, capsys):
    assert cli.main(["compare", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "best: alpha" in printed and "not tested" in printed
    first = (folder / "comparisons.json").read_text()
    record = json.loads(first)
    assert record["statistics"]["ci_method"] == "symmetric-t-range"
    assert record["statistics"]["resamples"] == 10_000
    assert cli.main(["compare", str(folder), "--out", str(folder / "again.json")]) == 0
    assert (folder / "again.json").read_text() == first


def test_bad_input_is_one_line_and_exit_code_2(folder, tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path / "nowhere")]) == 2
    assert "not a results folder" in capsys.readouterr().err
    assert cli.main(["compare", str(folder), "--baseline", "delta"]) == 2
    err = capsys.readouterr().err
    assert "unknown baseline method 'delta'" in err and "alpha, beta, gamma, oracle" in err
    assert len(err.strip().splitlines()) == 1
    lonely = make_folder(tmp_path / "lonely", [("alpha", "grid", "bt", {}, False, noise(0))])
    assert cli.main(["compare", str(lonely)]) == 2
    assert "nothing to compare" in capsys.readouterr().err
    mc = make_folder(
        tmp_path / "mc",
        [("a", "cart", "bt", {}, False, noise(0)), ("b", "cart", "bt", {}, False, noise(1))],
        score=False,
    )
    assert cli.main(["compare", str(mc), "--metric", "score"]) == 2
    assert "has no normalised score" in capsys.readouterr().err
    assert panel(compare_folder(mc), "bt")["metric"] == "value"


def test_seeds_without_a_finite_value_are_left_out_and_named(tmp_path):
    broken = 0.5 + noise(1)
    broken[3] = np.nan  # an empty cell in metrics.csv
    path = make_folder(
        tmp_path / "nan",
        [("a", "grid", "bt", {}, False, 0.9 + noise(0)), ("b", "grid", "bt", {}, False, broken)],
    )
    c = comparison(compare_folder(path), "bt", "b")
    assert c["n"] == SEEDS - 1 and c["seeds_dropped"] == [3]
    assert "seeds 3 left out" in c["notes"][0]


def test_sweeps_compare_each_method_with_its_own_best_point(tmp_path):
    sweeps = [{"field": "methods.s.num_blocks", "values": [1, 8], "label": "K"}]
    base = 0.8 + noise(0)
    runs = [
        ("s", "grid", "bt", {"K": 1}, False, base),
        ("fixed", "grid", "bt", {"K": 1}, False, base - 0.3),
        ("s", "grid", "bt", {"K": 8}, False, base - 0.4 + noise(1)),
        ("fixed", "grid", "bt", {"K": 8}, False, base - 0.3),
    ]
    path = make_folder(tmp_path / "swept", runs, sweeps, shared=("fixed",))
    result = compare_folder(path)
    assert [p["sweep"] for p in result["panels"]] == [{"K": 1}, {"K": 8}]  # ints, as swept
    (across,) = result["sweep_comparisons"]  # none for the one run serving both points
    assert across["method"] == "s" and across["sweep"] == {"K": 8}
    assert across["baseline_sweep"] == {"K": 1} and across["verdict"] == "worse"
    assert across["swept"] == "K"
    assert result["statistics"]["family_size"] == 3
    # A sweep of the env is a different task at each point, not a setting of the method.
    sweeps = [{"field": "envs.0.size", "values": [1, 8], "label": "K"}]
    path = make_folder(tmp_path / "env_swept", runs, sweeps, shared=("fixed",))
    assert compare_folder(path)["sweep_comparisons"] == []


def test_swept_method_is_the_longest_label_prefixing_the_field():
    from zopg.analysis.compare import _swept_method

    methods = {"dpo", "dpo-b0.01", "zpg"}
    assert _swept_method("methods.dpo-b0.01.beta", methods) == "dpo-b0.01"
    assert _swept_method("methods.dpo.beta", methods) == "dpo"
    assert _swept_method("envs.0.slip", methods) is None


def test_a_family_too_large_for_ten_seeds_resolves_nothing(tmp_path):
    """The smallest exact sign-flip p with 10 seeds is 2/1024; Holm over 26 or more comparisons
    needs the strongest below 0.05/26 < 2/1024, so no outcome could be significant."""
    base = 0.9 + noise(0)
    runs = [("top", "grid", "bt", {}, False, base)]
    runs += [(f"m{i:02d}", "grid", "bt", {}, False, base - 0.5 + noise(i)) for i in range(26)]
    result = compare_folder(make_folder(tmp_path / "wide", runs))
    verdicts = {c["verdict"] for c in panel(result, "bt")["comparisons"]}
    assert verdicts == {"not resolvable"}
    assert "can reject none" in result["notes"][0]
    assert panel(result, "bt")["best"]["status"] == "not resolved"


def test_panel_families_adjust_within_each_panel(tmp_path):
    """Twelve panels of three methods: Holm over the folder's 24 comparisons needs p < 0.05/24,
    out of reach of 2/1024 only beyond 25; with family="panel" each panel's two p-values are
    adjusted alone, so its p_holm is at most twice its p and its best can be called."""
    runs = []
    for k in range(12):
        base = 0.9 + noise(k)
        runs += [
            ("alpha", "grid", f"l{k:02d}", {}, False, base),
            ("beta", "grid", f"l{k:02d}", {}, False, base - 0.3 + noise(100 + k)),
            ("gamma", "grid", f"l{k:02d}", {}, False, base - 0.5 + noise(200 + k)),
        ]
    path = make_folder(tmp_path / "many", runs)
    whole = compare_folder(path)
    each = compare_folder(path, family="panel")
    assert whole["statistics"]["family_size"] == 24
    assert each["statistics"]["family_size"] == 2
    for link in (f"l{k:02d}" for k in range(12)):
        for method in ("beta", "gamma"):
            c_whole = comparison(whole, link, method)
            c_each = comparison(each, link, method)
            assert c_whole["p"] == c_each["p"] == 2 / 2**SEEDS
            assert c_each["p_holm"] == pytest.approx(2 * c_each["p"])
            assert c_whole["p_holm"] == pytest.approx(24 * c_whole["p"])
        assert panel(each, link)["best"] == {
            "status": "best",
            "method": "alpha",
            "tied": [],
            "reason": "every other budget-matched method is significantly worse",
        }
    with pytest.raises(Exception, match="--family"):
        compare_folder(path, family="seed")


def test_auto_family_is_the_folder_only_where_its_seeds_could_resolve_it(tmp_path):
    runs = [("alpha", "grid", "a", {}, False, 0.9 + noise(0))]
    runs += [("beta", "grid", "a", {}, False, 0.5 + noise(1))]
    small = compare_folder(make_folder(tmp_path / "small", runs), family="auto")
    assert small["statistics"]["family"] == "folder"
    runs += [(f"m{i:02d}", "grid", "a", {}, False, 0.4 + noise(i)) for i in range(2, 30)]
    wide = compare_folder(make_folder(tmp_path / "wide", runs), family="auto")
    assert wide["statistics"]["family"] == "panel"
