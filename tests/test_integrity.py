"""Hostile or unlucky input cannot lose results or write outside the results folder: colliding
run ids, planted links, escaping fragment paths, size bombs (issue 24's probes)."""

import os
import time
from pathlib import Path

import pytest

from zopg import ConfigError, cli
from zopg.analysis import plots
from zopg.experiments import load_experiment
from zopg.experiments.runner import plan_runs
from zopg.experiments.shards import RunLock
from zopg.experiments.tomlfile import read_toml

BASE = """
name = "probe"
seeds = 2
budget_queries = 400
[[envs]]
id = "gridworld/open-5x5"
[[links]]
name = "bradley-terry"
[evaluation]
points = 2
[methods.zpg]
algorithm = "zpg"
num_pairs = 2
num_queries = 5
"""


def write(tmp_path, text, name="probe.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def skip_figures(monkeypatch):
    """Where figures are not what a test checks: drawing them costs 1-2 s a report.
    tests/test_plots.py and test_experiments.py's end-to-end test check them; the damaged-file
    reports below still draw theirs (a folder with a run left out)."""
    monkeypatch.setattr(plots, "plot_results", lambda out_dir: [])


def test_two_runs_that_would_share_a_file_are_refused(tmp_path):
    """Labels open/a and open-a both became the file name open-a: one run's results were lost."""
    text = BASE.replace(
        '[[envs]]\nid = "gridworld/open-5x5"',
        '[[envs]]\nid = "gridworld/open-5x5"\nlabel = "open/a"\nslip = 0.0\n'
        '[[envs]]\nid = "gridworld/open-5x5"\nlabel = "open-a"\nslip = 0.3',
    )
    with pytest.raises(ConfigError, match=r"would share the file runs/zpg__open-a__bradley-terry"):
        plan_runs(load_experiment(write(tmp_path, text)))


def test_a_lock_planted_as_a_link_is_not_followed(tmp_path, capsys):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    path = write(tmp_path, BASE)
    rid = plan_runs(load_experiment(path))[0][0].run_id
    (out / "runs" / f"{rid}.lock").symlink_to(victim)
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    assert "is a symbolic link, not a lock file" in capsys.readouterr().err
    assert victim.read_text() == "keep me"


def test_a_lock_that_is_a_folder_is_a_clear_error(tmp_path):
    (tmp_path / "x.lock").mkdir()
    with pytest.raises(ConfigError, match="is a folder, not a lock file"):
        RunLock(tmp_path / "x.lock").acquire()


@pytest.mark.parametrize(
    ("fragment", "match"),
    [
        ("../outside.toml", "must be a path inside"),
        ("/tmp/absolute.toml", "must be a path inside"),
        ("probe.toml", "must be in a subfolder"),
        ("other.toml", "must be in a subfolder"),
    ],
)
def test_a_tuned_fragment_is_written_only_in_a_subfolder(tmp_path, fragment, match):
    from zopg.tuning.tune import parse_tune

    text = BASE + f'\n[tune]\nfragment = "{fragment}"\n[[tune.envs]]\nid = "gridworld/random"\n'
    experiment = load_experiment(write(tmp_path, text))
    with pytest.raises(ConfigError, match=match):
        parse_tune(experiment)


def test_size_bombs_are_refused_before_parsing(tmp_path):
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="larger than 256 KiB"):
        read_toml(write(tmp_path, BASE + "#" * 300_000))
    if os.path.exists("/dev/zero"):
        with pytest.raises(ConfigError, match="larger than 256 KiB"):
            read_toml("/dev/zero")
    dotted = "a" + ".a" * 50_000 + " = 1\n"  # tomllib is quadratic in the parts of one key
    with pytest.raises(ConfigError, match="more than 32 dotted parts"):
        read_toml(write(tmp_path, dotted))
    nested = "x = " + "[" * 100_000 + "]" * 100_000 + "\n"
    with pytest.raises(ConfigError, match="nested more than 32 deep"):
        read_toml(write(tmp_path, nested))
    assert time.perf_counter() - started < 5.0
    inline = "x = { " + "a." * 40 + "b = 1 }\n"  # a dotted key inside an inline table counts too
    with pytest.raises(ConfigError, match="more than 32 dotted parts"):
        read_toml(write(tmp_path, inline))


def test_dots_and_brackets_in_values_are_not_keys(tmp_path):
    # A GridWorld layout of long rows written one row per line, and a long array of floats:
    # neither is a dotted key, whatever the count of dots.
    rows = ["S" + "." * 59] + ["." * 60] * 3 + ["." * 59 + "G"]
    layout = "layout = [\n" + "".join(f'  "{row}",\n' for row in rows) + "]\n"
    floats = "values = [" + ", ".join(["0.5"] * 100) + "]  # a.b.c\n"
    brackets = 'note = "' + "[" * 40 + '"\n'
    data = read_toml(write(tmp_path, layout + floats + brackets))
    assert data["layout"] == rows and len(data["values"]) == 100


def test_too_many_runs_are_refused_before_the_methods_are_parsed(tmp_path):
    values = ", ".join(str(i / 1000) for i in range(150))
    sweeps = "".join(
        f'[[sweep]]\nfield = "{field}"\nvalues = [{values}]\n'
        for field in ("envs.0.slip", "methods.zpg.mu")
    )
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"22500 runs .* more than 10000"):
        load_experiment(write(tmp_path, BASE + sweeps))
    assert time.perf_counter() - started < 10.0


def folder_bytes(folder) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_of_another_configuration_is_refused_untouched(tmp_path, capsys, monkeypatch):
    """A 40k-query rerun silently replaced a 20k one; now it is refused, byte for byte."""
    skip_figures(monkeypatch)
    path, out = write(tmp_path, BASE), tmp_path / "out"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    before = folder_bytes(out)
    argv = ["run", str(path), "--out", str(out), "--quiet", "--set", "budget_queries=800"]
    assert cli.main(argv) == 2
    assert "holds results of another configuration: 1 finished run" in capsys.readouterr().err
    assert folder_bytes(out) == before
    # The same configuration resumes (nothing to do); --overwrite replaces.
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert cli.main([*argv, "--overwrite"]) == 0
    assert '"budget_queries": 800' in (out / "experiment.json").read_text()


def test_overrides_without_out_get_a_folder_of_their_own():
    from pathlib import Path

    assert cli.default_out("exp") == Path("results/exp")
    assert cli.default_out("exp", ["methods.zpg.num_pairs=100"], 4) == Path(
        "results/exp+num_pairs=100+seeds=4"
    )
    odd = cli.default_out("exp", ['links.0.name="thurstone"'])
    assert odd.parent == Path("results") and odd.name.startswith("exp+set-")
    assert odd != cli.default_out("exp", ['links.0.name="weibull"'])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """BASE run once into a folder (two methods), shared by the report probes below."""
    folder = tmp_path_factory.mktemp("finished")
    text = BASE + '[methods.zbcpg]\nalgorithm = "zbcpg"\nnum_pairs = 2\nnum_queries = 5\n'
    text += "block_size = 20\nnum_blocks = 2\n"
    path = write(folder, text)
    out = folder / "out"
    with pytest.MonkeyPatch.context() as monkeypatch:
        skip_figures(monkeypatch)
        assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    return out


def copy_of(folder, tmp_path):
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_report_leaves_out_and_names_a_run_made_with_other_settings(finished, tmp_path, capsys):
    import json

    out = copy_of(finished, tmp_path)
    record = json.loads((out / "experiment.json").read_text())
    stale_id = record["runs"][0]["run_id"]
    record["runs"][0]["run_hash"] = "0" * 16  # the experiment now plans other settings for it
    (out / "experiment.json").write_text(json.dumps(record))
    assert cli.main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 run files made with other settings (left out above; rerun them" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stale_runs"] == [stale_id]
    assert stale_id.split("__")[0] not in {r["method"] for r in summary["results"]}


def test_a_run_id_that_leaves_runs_is_refused(finished, tmp_path, capsys):
    import json

    out = copy_of(finished, tmp_path)
    record = json.loads((out / "experiment.json").read_text())
    record["runs"][0]["run_id"] = "../../other/runs/x"
    (out / "experiment.json").write_text(json.dumps(record))
    assert cli.main(["report", str(out)]) == 2
    assert "run id '../../other/runs/x' is not a file name" in capsys.readouterr().err


def test_a_figure_is_written_whole_or_not_at_all(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zopg import store

    path = tmp_path / "f.png"
    fig = plt.figure()
    store.save_figure(fig, path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")

    def dying(*args, **kwargs):
        args[0].write(b"\x89PNG half")
        raise KeyboardInterrupt  # killed while drawing

    fig.savefig = dying
    with pytest.raises(KeyboardInterrupt):
        store.save_figure(fig, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["f.png"]
    plt.close(fig)


def test_a_full_disk_names_the_file_in_one_line(finished, tmp_path, monkeypatch, capsys):
    import errno

    from zopg import store

    out = copy_of(finished, tmp_path)

    def full(fd, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "fdopen", full)
    assert cli.main(["report", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot write" in err and str(out) in err and "No space left on device" in err


RUN = "zpg__gridworld-open-5x5__bradley-terry"


def _object_array(path):
    import numpy as np

    np.savez(path, __iterations__=np.arange(2), x=np.array([object()], dtype=object))


@pytest.mark.parametrize(
    ("damage", "command", "code", "named"),
    [
        (lambda t: (t / "experiment.json").write_text('{"runs": 5, "name": 3}'), "compare", 2,
         "experiment.json: damaged (not an experiment record)"),
        (lambda t: (t / "experiment.json").write_text('{"name": "probe", "ru'), "report", 2,
         "experiment.json: damaged (Unterminated string"),
        (lambda t: (t / "summary.json").write_text('{"experiment": '), "summarize", 2,
         "summary.json: damaged"),
        (lambda t: (t / "metrics.csv").write_text("a,b\n1\n"), "plot", 2,
         "metrics.csv: damaged (line 2 has not 2 cells)"),
        (lambda t: (t / "runs" / f"{RUN}.json").write_text("[1, 2]"), "report", 0, None),
        (lambda t: (t / "runs" / f"{RUN}.json").write_text("[" * 10**5 + "]" * 10**5),
         "report", 0, None),
        (lambda t: _object_array(t / "runs" / f"{RUN}.npz"), "report", 0, None),
    ],
)  # fmt: skip
def test_a_damaged_file_is_one_line_or_a_clear_skip(
    finished, tmp_path, capsys, damage, command, code, named
):
    """A damaged run file counts as unfinished (a run redoes it; a report leaves it out and
    still reports the others); a damaged record of the folder is one line naming it."""
    out = copy_of(finished, tmp_path)
    damage(out)
    assert cli.main([command, str(out)]) == code
    err = capsys.readouterr().err.strip()
    if named is None:
        assert RUN in (out / "summary.json").read_text()  # listed as not finished
        assert "Traceback" not in err
    else:
        assert len(err.splitlines()) == 1 and named in err, err


def test_out_naming_a_file_is_refused_before_anything_runs(tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("keep me")
    assert cli.main(["run", str(write(tmp_path, BASE)), "--out", str(target), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--out = {str(target)!r}: is a file; name a folder (created if missing)" in err
    assert target.read_text() == "keep me"


def test_a_run_held_by_another_process_is_named_under_the_table(tmp_path, capsys):
    path = write(tmp_path, BASE + '[methods.other]\nalgorithm = "zpg"\nnum_pairs = 3\n')
    out = tmp_path / "out"
    held = plan_runs(load_experiment(path))[0][1].run_id
    # flock locks belong to the open file, so this process's own lock blocks its run.
    with RunLock(out / "runs" / f"{held}.lock") as owned:
        assert owned
        assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "1 runs held by another process (left out above; `zopg report` once it has " in printed
    assert printed.rstrip().splitlines()[-2].endswith(held)
