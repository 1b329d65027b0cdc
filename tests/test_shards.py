"""Past one process: shards, run locks, submitit job arrays, `zopg report` of a partial folder."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

# Imported here, not first inside a test: submitit points its log handlers at whatever
# sys.stdout and sys.stderr are when it is imported, and capsys's streams close after a test.
import submitit  # noqa: F401

from zopg import ConfigError, cli
from zopg.analysis import plots
from zopg.experiments import load_experiment
from zopg.experiments.runner import plan_runs, run_experiment
from zopg.experiments.shards import RunLock, Shard, parse_shard

# Three distinct runs, small enough to compile and run in seconds.
SMALL = """
name = "small"
seeds = 2
budget_queries = 600
[[envs]]
id = "gridworld/open-5x5"
[[links]]
name = "bradley-terry"
[[links]]
name = "linear"
[evaluation]
points = 4
chunk_iterations = 10
[methods.zpg]
algorithm = "zpg"
num_pairs = 2
num_queries = 5
"""


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("exp") / "small.toml"
    path.write_text(SMALL)
    return path


@pytest.fixture(scope="module")
def single(small_file, tmp_path_factory):
    """The experiment run by one process, as `zopg run` does (but drawing no figures: no test
    here reads them)."""
    out = tmp_path_factory.mktemp("single") / "small"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(plots, "plot_results", lambda out_dir: [])
        assert cli.main(["run", str(small_file), "--out", str(out), "--quiet"]) == 0
    return out


def test_parse_shard_and_bad_shards():
    assert parse_shard("1/3") == Shard(1, 3)
    for text, match in [
        ("3/3", r"--shard 3/3: i = 3 must be in 0..2"),
        ("0/0", r"N = 0 must be an integer >= 1"),
        ("a/2", r"must be i/N with integers"),
        ("1", r"must be i/N"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_shard(text)


def test_shards_partition_the_runs_stably():
    ids = [f"method{i}__env__link__x={i % 7}" for i in range(200)]
    counts = (1, 2, 5)
    for count in counts:
        owners = [[s for s in range(count) if Shard(s, count).owns(rid)] for rid in ids]
        assert all(len(o) == 1 for o in owners)
    # The assignment depends on the id alone: another process computes the same one (one
    # process for every count: each start imports zopg and JAX).
    code = (
        "from zopg.experiments.shards import Shard; import sys; ids = sys.stdin.read().split(); "
        f"[print(''.join(str(int(Shard(1, n).owns(i))) for i in ids)) for n in {counts}]"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], input="\n".join(ids), capture_output=True, text=True
    ).stdout.split()
    assert other == ["".join(str(int(Shard(1, n).owns(r))) for r in ids) for n in counts]


HOLD = textwrap.dedent(
    """
    import sys, time
    from zopg.experiments.shards import RunLock
    lock = RunLock(sys.argv[1])
    assert lock.acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


def test_a_held_lock_is_respected_and_a_dead_holders_lock_is_taken_over(tmp_path):
    path = tmp_path / "runs" / "r.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        lock = RunLock(path)
        assert not lock.acquire()
        assert f"pid {holder.pid}" in lock.holder
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: no chance to clean up its lock file
        holder.wait()
    assert path.exists()
    with RunLock(path) as held:
        assert held
    assert not path.exists()


def test_a_run_held_by_another_process_is_left_to_it(small_file, single, tmp_path, monkeypatch):
    # Its reports are compared as metrics.csv and summary.json: no figures (1-2 s each);
    # tests/test_integrity.py's reports of partial folders still draw theirs.
    monkeypatch.setattr(plots, "plot_results", lambda out_dir: [])
    experiment = load_experiment(small_file)
    out = tmp_path / "small"
    first = plan_runs(experiment)[0][0].run_id
    lock = RunLock(out / "runs" / f"{first}.lock")
    assert lock.acquire()
    try:
        done = run_experiment(experiment, out, quiet=True)["done"]
    finally:
        lock.release()
    assert done["held_elsewhere"] == [first] and first not in done["ran"]
    assert len(done["ran"]) == len(plan_runs(experiment)[0]) - 1
    # Reported as missing until it has run; then the folder equals a single process's.
    assert cli.main(["report", str(out)]) == 0
    summary = (out / "summary.json").read_text()
    assert first in summary and '"missing_runs"' in summary
    done = run_experiment(experiment, out, quiet=True)["done"]
    assert done["ran"] == [first]
    assert cli.main(["report", str(out)]) == 0
    for name in ("metrics.csv", "summary.json"):
        assert (out / name).read_bytes() == (single / name).read_bytes(), name


def test_dry_run_marks_the_runs_finished_in_the_folder(small_file, single, tmp_path, capsys):
    """A run counts as finished only with the same run hash, as a real run would decide."""
    total = len(plan_runs(load_experiment(small_file))[0])
    assert cli.main(["run", str(small_file), "--out", str(single), "--dry-run"]) == 0
    assert f"{total} of {total} finished in {single}/, 0 to run" in capsys.readouterr().out
    argv = ["run", str(small_file), "--out", str(single), "--dry-run", "--set", "seeds=3"]
    assert cli.main(argv) == 0
    assert f"0 of {total} finished in {single}/, {total} to run" in capsys.readouterr().out


def test_report_before_any_run_has_finished_is_a_clear_error(small_file, tmp_path, capsys):
    out = tmp_path / "small"
    assert cli.main(["run", str(small_file), "--out", str(out), "--shard", "0/1", "--dry-run"]) == 0
    run_experiment(load_experiment(small_file), out, quiet=True, shard=Shard(0, 10**6))
    assert cli.main(["report", str(out)]) == 2
    assert "none of the experiment's" in capsys.readouterr().err


@pytest.mark.slow  # submitit's local executor; the merge itself is tested without it
def test_submitit_local_shards_merge_to_the_single_process_result(
    small_file, single, tmp_path, monkeypatch
):
    """Two shards as a submitit job array of local processes, running at the same time into one
    folder; `zopg report` then gives byte for byte what one process gives."""
    out = tmp_path / "small"
    argv = ["submit", str(small_file), "--shards", "2", "--cluster", "local", "--out", str(out)]
    argv += ["--logs", str(tmp_path / "logs"), "--option", "timeout_min=20", "--wait"]
    monkeypatch.setenv("ZOPG_CACHE_DIR", str(tmp_path / "cache"))  # not the user's cache
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the jobs must not depend on the submitting process's folder
    try:
        assert cli.main(argv) == 0  # waits for both jobs, then writes the reports
    finally:
        os.chdir(cwd)
    assert len(list((tmp_path / "logs").glob("*_log.out"))) == 2
    assert not list((out / "runs").glob("*.lock"))
    assert not list(out.rglob("*.pkl"))  # submitit's pickles stay in its own folder
    for name in ("metrics.csv", "summary.json"):
        assert (out / name).read_bytes() == (single / name).read_bytes(), name


def test_bad_submit_options_exit_2_before_anything_is_queued(small_file, tmp_path, capsys):
    base = ["submit", str(small_file), "--cluster", "local", "--logs", str(tmp_path / "logs")]
    cases = [
        (["--shards", "0"], "--shards = 0: must be an integer >= 1"),
        (["--shards", "2", "--option", "no_such_option=1"], "--option: "),
        (["--shards", "2", "--option", "timeout_min"], "must be NAME=VALUE"),
        (["--shards", "2", "--cluster", "pbs"], "--cluster 'pbs': must be one of"),
    ]
    for extra, message in cases:
        assert cli.main([*base, *extra]) == 2, extra
        assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("logs/*.pkl"))


def test_a_shard_counts_runs_as_the_dry_run_does(tmp_path, capsys):
    """A reference run serves every link panel: it is one run, though listed once per panel."""
    path = tmp_path / "ref.toml"
    path.write_text(SMALL + '[methods.exact]\nalgorithm = "exact-pg"\nnum_iterations = 5\n')
    out = str(tmp_path / "out")
    total = len(plan_runs(load_experiment(path))[0])
    assert cli.main(["run", str(path), "--out", out, "--dry-run"]) == 0
    assert f"small: {total} runs x 2 seeds" in capsys.readouterr().out
    assert total == 3  # zpg under each link, exact-pg once
    assert cli.main(["run", str(path), "--out", out, "--shard", "0/1", "--quiet"]) == 0
    assert f"(of {total} runs in the experiment)" in capsys.readouterr().out
