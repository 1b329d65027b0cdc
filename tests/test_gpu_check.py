"""benchmarks/speed/gpu_check.py at --quick sizes on the CPU: the report it writes, its goals and
its budget.

One real section (GridWorld rollouts, about 10 s here) checks the whole path: probe process,
section process, merged run records and the JSON; the rest needs no measuring.
"""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
gpu_check = importlib.import_module("benchmarks.speed.gpu_check")

GOAL_KEYS = {"metric", "min", "value", "met"}


@pytest.mark.slow  # the GPU check's own run; the sections it calls have their own tests
def test_quick_section_writes_a_report_with_device_versions_and_goals(tmp_path):
    out = tmp_path / "throughput_gpu.json"
    args = ["--quick", "--only", "gridworld_rollouts", "--out", str(out)]
    assert gpu_check.main(args) == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "throughput_gpu" and report["quick"] is True
    assert report["device"]["platform"] == "cpu"
    assert report["versions"]["jax"] and report["versions"]["python"]
    assert set(report["goals"]) == set(gpu_check.GOALS)
    assert all(set(goal) == GOAL_KEYS for goal in report["goals"].values())
    assert report["sections_failed"] == {}
    section = report["sections"]["gridworld_rollouts"]
    assert section["target"]["value"] > 0 and section["checks_agree"]
    assert section["run"]["quick"] is True and section["run"]["device"] == report["device"]
    assert report["quick_sections"] == ["gridworld_rollouts"]


def test_a_spent_budget_skips_every_section_and_still_writes(tmp_path):
    out = tmp_path / "throughput_gpu.json"
    assert gpu_check.main(["--quick", "--budget-s", "0", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["sections"] == {}
    assert set(report["sections_failed"]) == set(gpu_check.TIMEOUTS_S)
    assert all(goal["value"] is None and not goal["met"] for goal in report["goals"].values())


def test_a_section_past_its_time_limit_is_recorded_as_timed_out(tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_check.TIMEOUTS_S, "gridworld_rollouts", 0.5)
    monkeypatch.setattr(gpu_check, "MIN_SECTION_S", 0.1)
    out = tmp_path / "throughput_gpu.json"
    args = ["--quick", "--only", "gridworld_rollouts", "--out", str(out)]
    assert gpu_check.main(args) == 0
    report = json.loads(out.read_text())
    assert report["sections"] == {}
    assert report["sections_failed"]["gridworld_rollouts"].startswith("timed out")


def test_goals_read_their_sections():
    goals = gpu_check.goals(
        {"zpg_training": {"jax_zpg": {"steps_per_s": 2e9}}, "cartpole_zpg": {"zpg": {}}}
    )
    assert goals["zpg_gridworld_env_steps_per_s"]["met"]
    cartpole = goals["zpg_cartpole_env_steps_per_s"]
    assert cartpole["value"] is None and not cartpole["met"]


def test_shell_wrapper_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks/speed/gpu_check.sh")], check=True)
