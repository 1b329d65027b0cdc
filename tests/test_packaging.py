"""The installable product: the wheel holds the package, its experiment files and py.typed; a
core install (no gymnax, brax or submitit) runs a shipped experiment from an empty folder, passes
the GridWorld tests and refuses an experiment that needs an extra; one version string; every
subpackage listed."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import zopg
from zopg.errors import EXTRAS

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


def core_site(tmp_path: Path) -> Path:
    """This environment's packages less those of the extras (gymnax, brax, slurm), as a folder
    of links: a core install's dependencies, borrowed so that nothing is downloaded."""
    hidden = {module for modules in EXTRAS.values() for module in modules}
    farm = tmp_path / "core-site"
    farm.mkdir()
    for site in (Path(p) for p in sys.path if p.endswith("site-packages")):
        for entry in site.iterdir():
            top = entry.name.split("-")[0].split(".")[0]
            if top in hidden or top == "zopg" or (farm / entry.name).exists():
                continue
            (farm / entry.name).symlink_to(entry)
    return farm


@pytest.fixture(scope="module")
def core_python(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed and only the core's dependencies."""
    tmp_path = tmp_path_factory.mktemp("core")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "zz_dependencies.pth").write_text(f"{core_site(tmp_path)}\n")
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return python


def test_the_core_install_has_no_extra(core_python):
    script = "import importlib.util as u; print([m for m in {hidden!r} if u.find_spec(m)])"
    hidden = sorted(m for modules in EXTRAS.values() for m in modules)
    done = subprocess.run(
        [str(core_python), "-c", script.format(hidden=hidden)], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


def test_the_wheel_runs_a_shipped_experiment_from_an_empty_folder(core_python, tmp_path):
    """From an empty folder, where no benchmarks/ folder exists, with the core install only."""
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [str(core_python), "-m", "zopg", "run", "quick_gridworld", "--seeds", "2", "--quiet",
            "--set", "budget_queries=20000", "--set", "evaluation.points=5"]  # fmt: skip
    done = subprocess.run(argv, cwd=empty, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (out,) = (empty / "results").iterdir()
    assert out.name.startswith("quick_gridworld+") and (out / "summary.json").exists()
    listed = subprocess.run(
        [str(core_python), "-m", "zopg", "list"], cwd=empty, capture_output=True, text=True
    )
    (site,) = core_python.parent.parent.glob("lib/python3*/site-packages")
    assert "quick_gridworld" in listed.stdout and str(site) in listed.stdout


def test_the_core_install_refuses_an_experiment_of_an_extra(core_python, tmp_path):
    done = subprocess.run(
        [str(core_python), "-m", "zopg", "run", "control", "--dry-run", "--out", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "needs the gymnax extra: pip install" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_gridworld_tests_pass_without_the_extras(core_python):
    # From the clone, so the tests import the clone's zopg; the libraries are the core's only.
    done = subprocess.run(
        [
            str(core_python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_gridworld.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
