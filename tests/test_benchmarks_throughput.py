"""benchmarks/speed/throughput.py bookkeeping: `--only` merges into the existing report (the
merging lives in benchmarks/speed/sections.py), the CartPole section's budget-counter check, and
the token section's report at --quick sizes.

The bookkeeping tests time nothing: the real sections are swapped for a tiny fake one. The token
section runs for real, but only its report's structure and arithmetic are checked, never its
targets: timings on a shared CPU are not a test.
"""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
throughput = importlib.import_module("benchmarks.speed.throughput")
sections = importlib.import_module("benchmarks.speed.sections")
cartpole = importlib.import_module("benchmarks.speed.throughput_cartpole")
tokens = importlib.import_module("benchmarks.speed.throughput_tokens")

OLD_DEVICE = {"backend": "gpu", "platform": "gpu", "device_kind": "H100", "num_devices": 1}


@pytest.fixture
def fake_sections(monkeypatch):
    """Replace the real sections by one that records its calls and returns them as its result."""
    calls = []

    def measure(quick):
        calls.append(quick)
        return {"value": len(calls), "quick": quick}

    monkeypatch.setattr(throughput, "SECTIONS", {"tiny": (measure, lambda result: None)})
    return calls


@pytest.fixture
def old_report(tmp_path):
    """A report written before per-section run records, measured on another device."""
    path = tmp_path / "throughput.json"
    report = {
        "benchmark": "throughput",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "quick": False,
        "device": OLD_DEVICE,
        "host": {"cpu_count": 16},
        "versions": {"jax": "0.10.2"},
        "git": {"commit": "abc", "dirty": False},
        "sections": {"gridworld_rollouts": {"target": {"met": True}}, "tiny": {"value": -1}},
        "runtime_s": 12.0,
    }
    path.write_text(json.dumps(report))
    return path


def test_only_replaces_its_section_and_keeps_the_others(fake_sections, old_report):
    assert throughput.main(["--only", "tiny", "--out", str(old_report)]) == 0
    report = json.loads(old_report.read_text())
    assert fake_sections == [False]
    assert set(report["sections"]) == {"gridworld_rollouts", "tiny"}
    assert report["sections_run"] == ["tiny"]
    tiny = report["sections"]["tiny"]
    assert tiny["value"] == 1
    # The new section carries where and when it ran; the top level is the latest run.
    assert tiny["run"]["quick"] is False
    assert tiny["run"]["runtime_s"] >= 0.0
    assert tiny["run"]["device"] == report["device"] != OLD_DEVICE
    assert tiny["run"]["command"].endswith("--only tiny")
    # The kept section is attributed to the run that measured it, not to this one.
    kept = report["sections"]["gridworld_rollouts"]
    assert kept["target"] == {"met": True}
    assert kept["run"]["device"] == OLD_DEVICE
    assert kept["run"]["timestamp"] == "2026-01-01T00:00:00+00:00"
    assert kept["run"]["inherited"] is True
    assert report["mixed_environment"] == ["gridworld_rollouts"]
    assert report["quick_sections"] == []


def test_only_twice_keeps_run_records_of_earlier_merges(fake_sections, old_report):
    throughput.main(["--only", "tiny", "--quick", "--out", str(old_report)])
    first = json.loads(old_report.read_text())
    throughput.main(["--only", "tiny", "--out", str(old_report)])
    second = json.loads(old_report.read_text())
    assert fake_sections == [True, False]
    assert first["quick_sections"] == ["tiny"]
    assert second["quick_sections"] == []
    assert second["sections"]["tiny"]["value"] == 2
    assert second["sections"]["gridworld_rollouts"] == first["sections"]["gridworld_rollouts"]


def test_only_repeated_name_runs_once_and_creates_a_missing_file(fake_sections, tmp_path):
    path = tmp_path / "new" / "throughput.json"
    throughput.main(["--only", "tiny", "--only", "tiny", "--out", str(path)])
    report = json.loads(path.read_text())
    assert fake_sections == [False]
    assert list(report["sections"]) == ["tiny"]
    assert report["mixed_environment"] == []


def test_full_run_replaces_the_file(fake_sections, old_report):
    throughput.main(["--out", str(old_report)])
    report = json.loads(old_report.read_text())
    assert list(report["sections"]) == ["tiny"]
    assert report["sections_run"] == ["tiny"]


@pytest.mark.parametrize(
    "text, message",
    [("{not json", "not valid JSON"), ('{"benchmark": "rates"}', "not a throughput report")],
)
def test_only_refuses_a_bad_file_before_measuring(fake_sections, tmp_path, text, message):
    path = tmp_path / "throughput.json"
    path.write_text(text)
    with pytest.raises(SystemExit, match=message):
        throughput.main(["--only", "tiny", "--out", str(path)])
    assert fake_sections == []
    assert path.read_text() == text


def test_environment_differs_only_on_values_recorded_by_both():
    assert not sections.differs({"jax": "0.10.2"}, {"jax": "0.10.2", "zopg": "0.1.0"})
    assert sections.differs({"jax": "0.10.2"}, {"jax": "0.10.3"})
    assert sections.differs(OLD_DEVICE, {**OLD_DEVICE, "platform": "cpu"})


def cumulative_metrics(queries, trajectories, env_steps):
    return {
        f"budget/{name}": np.cumsum(values)
        for name, values in (
            ("queries", queries),
            ("trajectories", trajectories),
            ("env_steps", env_steps),
        )
    }


def test_budget_counters_per_iteration():
    n, m, horizon = 4, 5, 10
    good = cumulative_metrics([n * m] * 3, [2 * n] * 3, [2 * n, 2 * n * horizon, 37])
    result = cartpole.budget_counters(good, 3, n, m, horizon)
    assert result["agree"]
    assert (result["queries"], result["trajectories"], result["env_steps_valid"]) == (
        3 * n * m,
        3 * 2 * n,
        2 * n + 2 * n * horizon + 37,
    )
    # One iteration spending a query too many, a missing trajectory, or an impossible step count.
    for bad in (
        cumulative_metrics([n * m, n * m + 1, n * m], [2 * n] * 3, [20] * 3),
        cumulative_metrics([n * m] * 3, [2 * n, 2 * n - 1, 2 * n], [20] * 3),
        cumulative_metrics([n * m] * 3, [2 * n] * 3, [20, 2 * n * horizon + 1, 20]),
        cumulative_metrics([n * m] * 3, [2 * n] * 3, [20, 2 * n - 1, 20]),
    ):
        assert not cartpole.budget_counters(bad, 3, n, m, horizon)["agree"]


RATE_KEYS = ("sequences_per_s", "tokens_per_s", "median_s", "compile_s")


# About 14 s on a quiet 2-core CPU for both teachers, nearly all of it the golds' standardisation
# and compiling ZPG and its baselines (the timed rounds take well under 1 s).
@pytest.mark.slow  # a real measurement; the other sections' runs are not tested here
def test_tokens_section_at_quick_sizes_reports_rates_and_their_ratios(tmp_path):
    out = tmp_path / "throughput.json"
    assert throughput.main(["--only", "tokens_zpg", "--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["sections_run"] == ["tokens_zpg"] and report["quick_sections"] == ["tokens_zpg"]
    section = report["sections"]["tokens_zpg"]
    assert section["run"]["device"] == report["device"] and report["versions"]["jax"]
    config, size = section["config"], tokens.TOKENS_SIZES["quick"]
    assert config["env"] == "tokens/hmm-v16-l16" and config["sequence_length"] == 16
    assert (config["iterations"], config["rounds"]) == (size["iterations"], size["rounds"])
    assert config["two_sided"] is True and config["num_queries"] == 1
    # d: LoRA factors A [m, r], B [r, n] on the GRU's six gate kernels (input embed x hidden,
    # hidden x hidden) and the head (hidden x vocab), rank 4.
    embed, hidden, rank = 32, 64, 4
    assert config["d"] == rank * (3 * (embed + hidden) + 3 * (2 * hidden) + (hidden + 16))
    # Both teachers, the cheap one first: what ZPG adds, then what a costly human adds.
    assert config["teachers"] == list(section["teachers"]) == ["bigram-goodhart", "gold-gru"]
    assert set(section["targets"]) == {
        f"{gold}_{name}_batch_{b}"
        for gold in config["teachers"]
        for b in size["batches"]
        for name in ("zpg_over_bare_sampling", "zpg_over_bare_sampling_and_teacher")
    }
    measured = [
        (gold, key, result)
        for gold, teacher in section["teachers"].items()
        for key, result in teacher["batches"].items()
    ]
    assert [(gold, key) for gold, key, _ in measured] == [
        (gold, str(b)) for gold in config["teachers"] for b in size["batches"]
    ]
    for gold, key, result in measured:
        assert gold in section["teachers"][gold]["oracle"]
        batch, iterations = int(key), config["iterations"]
        # Two-sided ZPG rolls out N sequences on each side: N = B / 2 gives B per iteration.
        assert result["num_pairs"] == config["num_pairs"][key] == batch // 2
        assert result["sequences_per_iteration"] == batch
        counters = result["budget_counters"]
        assert counters["trajectories"] == iterations * batch
        assert counters["queries"] == iterations * batch // 2 and counters["agree"]
        zpg = result["zpg"]
        for name in ("zpg", "bare_sampling", "bare_sampling_and_teacher"):
            rates = result[name]
            assert all(rates[k] > 0 for k in RATE_KEYS), (name, rates)
            assert rates["sequences_per_repeat"] == iterations * batch
            assert len(rates["repeats_s"]) == config["rounds"]
            assert rates["sequences_per_s"] == pytest.approx(iterations * batch / rates["median_s"])
        for name in ("bare_sampling", "bare_sampling_and_teacher"):
            assert result[name]["sequences_per_call"] == batch
            assert result[name]["calls_per_repeat"] == iterations
        bare, teacher = result["bare_sampling"], result["bare_sampling_and_teacher"]
        ratio = zpg["sequences_per_s"] / bare["sequences_per_s"]
        assert result["ratio_zpg_over_bare"] == pytest.approx(ratio)
        assert result["zpg_overhead"] == pytest.approx(1 / ratio)
        ratio_teacher = zpg["sequences_per_s"] / teacher["sequences_per_s"]
        assert result["ratio_zpg_over_bare_and_teacher"] == pytest.approx(ratio_teacher)
        for name, value in (
            ("zpg_over_bare_sampling", ratio),
            ("zpg_over_bare_sampling_and_teacher", ratio_teacher),
        ):
            target = section["targets"][f"{gold}_{name}_batch_{key}"]
            assert target == result["targets"][name]
            assert target["value"] == pytest.approx(value)
            assert target["zpg_overhead"] == pytest.approx(1 / value)
            assert target["min_ratio"] == pytest.approx(1 / 1.25) and target["max_overhead"] == 1.25
            assert target["met"] == (target["value"] >= target["min_ratio"])
