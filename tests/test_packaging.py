"""The installable product: the wheel holds the package, its experiment files and py.typed, and
runs a shipped experiment from an empty folder; one version string; every subpackage listed."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import zopg

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_of_zopg_is_in_the_wheel_list():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "zopg").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_one_version_string():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "zopg.__version__"}
    assert zopg.__version__.count(".") == 2


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (path,) = out.glob("zopg-*.whl")
    return path


def test_the_wheel_holds_the_experiments_and_no_scripts(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "zopg/py.typed" in names and "zopg/cli.py" in names
    shipped = {f"zopg/library/{p.name}" for p in (ROOT / "benchmarks").glob("*.toml")}
    shipped |= {f"zopg/library/tuned/{p.name}" for p in (ROOT / "benchmarks/tuned").glob("*.toml")}
    shipped |= {f"zopg/library/rates/{p.name}" for p in (ROOT / "benchmarks/rates").glob("*.toml")}
    assert shipped <= names
    # The speed, study and report scripts stay in the clone.
    assert not [n for n in names if n.startswith(("zopg/library/speed", "zopg/library/reports"))]


def test_the_wheel_runs_a_shipped_experiment_from_an_empty_folder(wheel, tmp_path):
    """A fresh virtual environment with the wheel installed (its dependencies are borrowed from
    this environment through a path file, so nothing is downloaded); run from an empty folder,
    where no benchmarks/ folder exists."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "zz_dependencies.pth").write_text("\n".join(deps) + "\n")
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [str(python), "-m", "zopg", "run", "quick_gridworld", "--seeds", "2", "--quiet",
            "--set", "budget_queries=20000", "--set", "evaluation.points=5"]  # fmt: skip
    done = subprocess.run(argv, cwd=empty, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (out,) = (empty / "results").iterdir()
    assert out.name.startswith("quick_gridworld+") and (out / "summary.json").exists()
    listed = subprocess.run(
        [str(python), "-m", "zopg", "list"], cwd=empty, capture_output=True, text=True
    )
    assert "quick_gridworld" in listed.stdout and str(site) in listed.stdout
