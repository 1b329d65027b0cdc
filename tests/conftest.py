"""Shared fixtures: built-in environments and policies, built once per test session."""

import os
import re
import sys
from pathlib import Path

# The suite compiles far more XLA programs than it runs long ones, so it asks LLVM for -O1
# instead of XLA's default -O2: about a quarter less time for compile-bound tests and a fifth for
# the longest statistical ones (tests/test_zpg.py 61 s -> 45 s, the second-order rate 24 s ->
# 19 s on the 2-core CPU). The optimisation level changes how fast the code is, not what it
# computes; `zopg run` and the benchmarks keep XLA's default. A level already in XLA_FLAGS wins.
# Set before jax is imported, since the CPU backend reads the flags when it starts.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1"
    os.environ["XLA_FLAGS"] = flags.strip()

import jax
import pytest

from zopg.envs import make
from zopg.policies import make_policy

BUILTIN = ("gridworld/open-5x5", "gridworld/cliff-4x6")
EXTENDING = Path(__file__).resolve().parent.parent / "docs" / "extending.md"
FILE_BLOCK = re.compile(r"^```\w+\n# file: (\S+)\n(.*?)^```", re.S | re.M)


def extending_files() -> dict[str, str]:
    """file name -> contents of every block of docs/extending.md that starts `# file: NAME`: the
    page's package `myext` and its experiment, the only copy of the plugin code tests run."""
    return dict(FILE_BLOCK.findall(EXTENDING.read_text()))


@pytest.fixture
def recipes(tmp_path, monkeypatch):
    """docs/extending.md's files written into tmp_path, which is on sys.path as a user's folder
    would be; `myext` is forgotten afterwards so that every test imports its own copy."""
    for name, code in extending_files().items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
    (tmp_path / "myext" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m == "myext" or m.startswith("myext.")]:
        del sys.modules[name]


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent XLA compilation cache for this run of the suite only.

    Many tests compile the same program more than once (a run, then the same run interrupted and
    resumed; the same default config in several files; a new closure of the same function), and
    compiling dominates them on a 2-core CPU. The cache starts empty in every run, so it never
    carries anything between runs of the suite and CI measures a cold start; the numbers are the
    same with or without it. Under pytest-xdist the workers of one run share it (its folder is
    the run's base temporary folder), so a program one worker compiled the other reuses.
    Caching every program, however quick to compile, and sharing it: 11% off the suite's time.
    """
    # A caller may name a folder to share between runs (the mutation runs do: every mutant
    # recompiles the same unmutated programs); the suite itself never sets it.
    shared = os.environ.get("ZOPG_TEST_COMPILATION_CACHE")
    if shared:
        cache_dir = Path(shared)
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        # Workers' base folders are <run>/popen-gw0, <run>/popen-gw1, ...: the run's folder.
        cache_dir = tmp_path_factory.getbasetemp().parent / "jax-compilation-cache"
        cache_dir.mkdir(exist_ok=True)
    else:
        cache_dir = tmp_path_factory.mktemp("jax-compilation-cache")
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return cache_dir


@pytest.fixture(scope="session", params=BUILTIN)
def builtin_env(request):
    env, params = make(request.param)
    return request.param, env, params


@pytest.fixture(scope="session")
def random_tabular(builtin_env):
    """A tabular policy with random (non-uniform) logits on each built-in layout."""
    _, env, params = builtin_env
    policy = make_policy("tabular", env, params, init_scale=1.0)
    return policy, policy.init(jax.random.key(7))
