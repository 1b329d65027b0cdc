"""Nothing lost, nothing executed: damaged checkpoints, failing writes, non-finite runs."""

import errno
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg import cli, store
from zopg.analysis import plots
from zopg.analysis.report import format_summary, write_reports
from zopg.experiments import load_experiment
from zopg.experiments.runner import run_experiment

ONE_RUN = """
name = "one"
seeds = 2
budget_queries = 800
[[envs]]
id = "gridworld/open-5x5"
[[links]]
name = "bradley-terry"
[evaluation]
points = 6
chunk_iterations = 20
[methods.zpg]
algorithm = "zpg"
num_pairs = 2
num_queries = 5
"""


@pytest.fixture(scope="module")
def one_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("exp") / "one.toml"
    path.write_text(ONE_RUN)
    return path


def skip_figures(monkeypatch):
    """Figures are not what this file checks, and drawing them costs 1-2 s a report:
    tests/test_plots.py and test_experiments.py's end-to-end test check them. (The non-finite
    test still draws its folder: NaN curves.)"""
    monkeypatch.setattr(plots, "plot_results", lambda out_dir: [])


@pytest.fixture(scope="module")
def uninterrupted(one_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "one"
    with pytest.MonkeyPatch.context() as monkeypatch:
        skip_figures(monkeypatch)
        assert cli.main(["run", str(one_file), "--out", str(out), "--quiet"]) == 0
    return out


class RunsCode:
    """Unpickling this would create the marker file: the attack a pickled checkpoint allows."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def damaged_checkpoints(good: bytes, marker) -> dict:
    rng = np.random.default_rng(0)
    return {
        "random bytes": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "pickle that runs code": pickle.dumps(RunsCode(marker)),
        "npz of another run": store._npz_bytes({"__payload__": np.array("{}")}),
    }


def test_damaged_checkpoints_are_refused_without_running_code(tmp_path):
    carry = {"theta": jnp.arange(3.0), "key": jax.random.key(1)}
    path = tmp_path / "r.ckpt"
    store.save_checkpoint(path, carry, {"run_key": "k", "start": 3}, {"m": np.ones((2, 1))})
    loaded, payload, _ = store.load_checkpoint(path, carry)
    assert payload["start"] == 3 and np.array_equal(loaded["theta"], carry["theta"])
    marker = tmp_path / "pwned"
    for name, data in damaged_checkpoints(path.read_bytes(), marker).items():
        path.write_bytes(data)
        with pytest.raises(store.CHECKPOINT_ERRORS):
            store.load_checkpoint(path, carry)
        assert not marker.exists(), name


def test_a_run_with_a_damaged_checkpoint_starts_over(
    one_file, uninterrupted, tmp_path, monkeypatch
):
    skip_figures(monkeypatch)
    experiment = load_experiment(one_file)
    marker = tmp_path / "pwned"
    real_save = store.save_checkpoint

    def dying_save(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    good = None
    for name in ("random bytes", "truncated", "pickle that runs code"):
        out = tmp_path / name.replace(" ", "_")
        monkeypatch.setattr(store, "save_checkpoint", dying_save)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(experiment, out, quiet=True)
        monkeypatch.setattr(store, "save_checkpoint", real_save)
        (ckpt,) = (out / "runs").glob("*.ckpt")
        good = good or ckpt.read_bytes()
        ckpt.write_bytes(damaged_checkpoints(good, marker)[name])
        messages = []
        run_experiment(experiment, out, quiet=True, log=messages.append)
        write_reports(out)
        unreadable = [m for m in messages if "unreadable" in m]
        assert len(unreadable) == 1 and "\n" not in unreadable[0], messages
        assert (out / "metrics.csv").read_bytes() == (uninterrupted / "metrics.csv").read_bytes()
        assert not marker.exists()


def test_a_failing_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = store.write_json_atomic(tmp_path / "summary.json", {"version": 1})

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.write_json_atomic(path, {"version": 2, "padding": "x" * 10_000})
    assert store.read_json(path) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    # A run whose arrays could not be written is not finished: no JSON, so it runs again.
    with pytest.raises(OSError):
        store.write_run(tmp_path / "runs", "r", {"run_hash": "h"}, [0], {"m": np.ones((1, 1))})
    assert store.finished_run_hash(tmp_path / "runs", "r") is None
    assert not list((tmp_path / "runs").iterdir())


def test_non_finite_runs_are_flagged_not_averaged(uninterrupted, tmp_path):
    out = tmp_path / "one"
    (out / "runs").mkdir(parents=True)
    for name in ("experiment.json",):
        (out / name).write_bytes((uninterrupted / name).read_bytes())
    (rid,) = {p.stem for p in (uninterrupted / "runs").glob("*.json")}
    run = store.load_run(uninterrupted / "runs", rid)
    metrics = dict(run.pop("metrics"))
    iterations = run.pop("iterations")
    value = np.array(metrics["eval/value"], dtype=np.float32)
    value[1, 3:] = np.nan  # seed 1 diverges at the fourth logged iteration
    metrics["eval/value"] = value
    store.write_run(out / "runs", rid, run, iterations, metrics)
    summary = write_reports(out)
    (result,) = summary["results"]
    assert result["non_finite"] == {
        "seeds": 1,
        "from_iteration": int(iterations[3]),
        "metrics": ["eval/value"],
    }
    assert result["score"]["mean"] is None and result["value"]["mean"] is None
    text = format_summary(summary)
    assert f"eval/value non-finite in 1 of 2 seeds from iteration {int(iterations[3])}" in text
    assert "its value statistics are n/a" in text
    assert "non_finite" not in store.read_json(uninterrupted / "summary.json")["results"][0]


def test_metrics_declared_nan_when_undefined_are_not_flagged(uninterrupted, tmp_path, monkeypatch):
    """An accuracy over a batch of ties is NaN by definition: declared by the algorithm (DPO's
    are), it is not taken for divergence; undeclared, or in another metric, it still is."""
    from zopg.algorithms import get

    skip_figures(monkeypatch)

    for name in ("dpo-online", "dpo-offline", "fedavg-dpo"):
        assert "dpo/label_accuracy" in get(name).nan_when_undefined
    (rid,) = {p.stem for p in (uninterrupted / "runs").glob("*.json")}
    run = store.load_run(uninterrupted / "runs", rid)
    metrics, iterations = dict(run.pop("metrics")), run.pop("iterations")
    assert run["nan_when_undefined"] == []  # written by the runner; ZPG declares none
    metrics["dpo/label_accuracy"] = np.full_like(metrics["eval/value"], np.nan)
    flagged = {}
    for declared in ([], ["dpo/label_accuracy"]):
        out = tmp_path / f"declared-{len(declared)}"
        (out / "runs").mkdir(parents=True)
        (out / "experiment.json").write_bytes((uninterrupted / "experiment.json").read_bytes())
        store.write_run(
            out / "runs", rid, {**run, "nan_when_undefined": declared}, iterations, metrics
        )
        (result,) = write_reports(out)["results"]
        flagged[len(declared)] = result.get("non_finite")
    assert flagged[0]["metrics"] == ["dpo/label_accuracy"]
    assert flagged[1] is None
