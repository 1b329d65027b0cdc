"""Mutation score of the core (issue 26): mutmut on each module with only its tests.

The modules whose errors would silently change published numbers (exact values, the estimators,
the links and the oracle, the zeroth-order and sign methods, the DPO losses, the budget accounting
and the paired statistics) are mutated one at a time by mutmut, and each mutant runs only the
tests of `MODULES` that call the mutated function (mutmut maps tests to functions in a first
pass). Writes results/mutation.json: per module the mutants killed, survived, timed out, with no
tests and suspicious, the score killed / (mutants - equivalent), and each survivor with its diff.

Each module is mutated in its own scratch copy of the committed tree (`git archive HEAD`) under
mutants/ (git-ignored), so the working tree is never touched. mutmut records every verdict as it
comes, so an interrupted run (Ctrl-C, `--budget-minutes`) picks up where it stopped; a commit
that changes the module or its test files starts that module afresh. From the repository root:

    .venv/bin/python -m benchmarks.studies.mutation                     # every module, hours
    .venv/bin/python -m benchmarks.studies.mutation zopg/exact.py       # one module
    .venv/bin/python -m benchmarks.studies.mutation --budget-minutes 60  # stop after an hour
    .venv/bin/python -m benchmarks.studies.mutation --report            # rewrite the JSON only

A survivor that cannot change any result is marked equivalent in
benchmarks/studies/mutation_equivalent.toml (`"<mutant id>" = "<one-line reason>"`); the JSON
lists it apart and the score leaves it out. A survivor or timeout left alone on purpose, which a
test could tell apart only in a case no caller reaches, goes in the same file's `[explained]`
table: it still counts against the score, and the JSON carries its reason. The module also
serves as the pytest plugin of the mutant runs (`-p benchmarks.studies.mutation`, the hooks at
the end).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = ROOT / "mutants"
OUTPUT = ROOT / "results" / "mutation.json"
EQUIVALENT = Path(__file__).with_name("mutation_equivalent.toml")
TOOL = "mutmut"

# Module -> the test files that exercise it, in the order a full run takes them (the most
# consequential first). Within these files mutmut runs, for each mutant, only the tests that
# called the mutated function in its mapping pass.
MODULES: dict[str, tuple[str, ...]] = {
    "zopg/exact.py": (
        "tests/test_exact.py",
        "tests/test_normalized_score.py",
        "tests/test_utilities.py",
    ),
    "zopg/estimators.py": (
        "tests/test_estimators.py",
        "tests/test_zpg.py",
    ),
    "zopg/preferences/links.py": (
        "tests/test_preferences.py",
        # The link of a mistaken teacher; registering a link of one's own.
        "tests/test_utilities.py",
        "tests/test_extending.py",
    ),
    "zopg/preferences/oracle.py": (
        "tests/test_preferences.py",
        "tests/test_utilities.py",
        # The hidden-context teacher's votes (a mixture over annotator types).
        "tests/test_regimes_fail.py",
    ),
    "zopg/algorithms/zeroth_order.py": (
        "tests/test_zpg.py",
        "tests/test_common_random_numbers.py",
    ),
    "zopg/algorithms/sign_zo.py": (
        "tests/test_sign_methods.py",
        "tests/test_common_random_numbers.py",
    ),
    "zopg/algorithms/dpo_losses.py": (
        "tests/test_dpo.py",
        "tests/test_kl_to_reference.py",
    ),
    "zopg/algorithms/base.py": (
        "tests/test_contract.py",
        "tests/test_estimators.py",
    ),
    "zopg/analysis/stats.py": ("tests/test_analysis.py",),
    "zopg/analysis/paired.py": (
        "tests/test_paired.py",
        "tests/test_compare.py",
    ),
}

# What the tests read besides zopg/ and tests/ (benchmark files, the docs pages some of them run).
COPIED = ("zopg", "tests", "benchmarks", "docs", "pyproject.toml", "mkdocs.yml")

# Committed results some of a module's tests read (the regime design the hidden-context file is
# checked against), copied for that module only.
EXTRA_COPIED: dict[str, tuple[str, ...]] = {"zopg/preferences/oracle.py": ("results/regimes",)}

# Imported once by mutmut's fork server and inherited by every mutant's process. Only libraries:
# importing them starts no XLA backend (no threads to fork over) and reads no XLA flag, so
# tests/conftest.py still sets its flags before JAX's CPU backend starts; zopg itself is imported
# afresh by each mutant's process.
PRELOAD = (
    "numpy",
    "scipy.stats",
    "jax",
    "jax.numpy",
    "flax.struct",
    "optax",
    "chex",
    "pytest",
    # pytest's plugins of the dev install: hypothesis alone takes 0.6 s to import.
    "hypothesis",
    "xdist",
)

# mutmut's settings (pyproject.toml's [tool.mutmut] of each scratch copy). Its default isolation
# forks every mutant's process from the process that ran the mapping pass: JAX's threads are
# running there (a forked worker deadlocked) and its caches hold the traces of the unmutated
# functions (a mutated function called through a cached jit would never run). A fork server that
# has only imported the libraries avoids both. mutmut's timeout is (tests' time + constant) x
# multiplier; the constant covers a mutant process starting pytest and JAX (seconds here).
SETTINGS = {
    "source_paths": ["zopg"],
    "process_isolation": "forkserver",
    "forkserver_warmup": "import",
    "preload_modules_file": "mutmut-preload.txt",
    "timeout_constant": 10.0,
    "timeout_multiplier": 10.0,
    "also_copy": [path for path in COPIED if path not in ("zopg", "tests", "pyproject.toml")],
    # tests/conftest.py sets XLA's flags and the per-session compilation cache as always; the
    # plugin is this module (the hook below).
    "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "benchmarks.studies.mutation"],
}

# Settings that cannot change a verdict, left out of the stamp. The scratch copies lie inside this
# repository, so mutmut's git commands would compare the working tree (everyone's edits) with
# the commit of its first run and warn about hundreds of changed files; the stamp decides when a
# module's verdicts are stale instead.
UNHASHED = {"use_git_change_detection": False}
MUTMUT_SECTION = "\n[tool.mutmut]\n"

STATUSES = ("killed", "survived", "timeout", "no tests", "suspicious")


def mutant_processes() -> int:
    """One mutant per core: XLA compiles on one thread, and most of a mutant's time is compiling."""
    return max(1, os.cpu_count() or 1)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def _slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def _toml_value(value) -> str:
    # json.dumps writes TOML's strings, numbers and arrays of them as TOML reads them.
    return json.dumps(value)


def mutmut_settings(module: str) -> dict:
    return {
        **SETTINGS,
        "also_copy": [*SETTINGS["also_copy"], *EXTRA_COPIED.get(module, ())],
        "only_mutate": [module],
        "pytest_add_cli_args_test_selection": list(MODULES[module]),
    }


def _settings_key(module: str) -> dict:
    """The tool and the settings a module's verdicts were reached with."""
    settings = json.dumps(mutmut_settings(module), sort_keys=True)
    return {
        "settings": hashlib.sha256(settings.encode()).hexdigest()[:16],
        "tool": importlib.metadata.version(TOOL),
    }


def _inputs(module: str, commit: str, tests_commit: str | None = None) -> str:
    """The module at `commit` and its tests at `tests_commit` (default: the same), as git object
    ids: a commit that changes neither keeps the verdicts reached at an earlier one. Changes
    elsewhere (an environment the tests build, say) could still flip a verdict; deleting
    mutants/<module> starts it again."""
    tests = (*MODULES[module], "tests/conftest.py")
    return (
        _git("ls-tree", commit, "--", module)
        + "\n"
        + _git("ls-tree", tests_commit or commit, "--", *tests)
    )


def _stamp_inputs(module: str, stamp: dict) -> str:
    return _inputs(module, stamp["commit"], stamp.get("tests_commit"))


def _read_stamp(work: Path) -> dict | None:
    try:
        return json.loads((work / "stamp.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_stamp(work: Path, stamp: dict) -> None:
    temporary = work / "stamp.json.tmp"
    temporary.write_text(json.dumps(stamp, indent=2) + "\n")
    temporary.replace(work / "stamp.json")


def prepare(module: str) -> Path:
    """The scratch copy of `module` (mutants/<module>/): kept while its stamp matches, so a run
    resumes; otherwise rebuilt from the committed tree."""
    work = SCRATCH / _slug(module)
    key = _settings_key(module)
    stamp = _read_stamp(work)
    if not (
        stamp is not None
        and stamp.get("key", {}).get("settings") == key["settings"]
        and stamp["key"].get("tool") == key["tool"]
        and _stamp_inputs(module, stamp) == _inputs(module, "HEAD")
    ):
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", "HEAD", *COPIED, *EXTRA_COPIED.get(module, ())],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(work, filter="data")
        commit = _git("rev-parse", "HEAD")
        _write_stamp(work, {"key": key, "commit": commit, "wall_seconds": 0.0, "finished": None})
    _configure(work, module)
    return work


def _configure(work: Path, module: str) -> None:
    """mutmut's settings and the plugin, rewritten on every run (the settings that decide verdicts
    are those of the stamp; the others may change without starting over)."""
    # The plugin the mutant runs load is this file, committed or not.
    plugin = work / "benchmarks" / "studies" / "mutation.py"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__), plugin)
    pyproject = work / "pyproject.toml"
    text = pyproject.read_text().split(MUTMUT_SECTION, 1)[0]
    settings = {**mutmut_settings(module), **UNHASHED}
    lines = [f"{name} = {_toml_value(value)}" for name, value in settings.items()]
    pyproject.write_text(text + MUTMUT_SECTION + "\n".join(lines) + "\n")
    (work / "mutmut-preload.txt").write_text("\n".join(PRELOAD) + "\n")


def _stop(process: subprocess.Popen) -> None:
    """Ctrl-C for mutmut (it stops its fork server and the mutants' processes), then force."""
    for sig, grace in ((signal.SIGINT, 60), (signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_module(module: str, deadline: float | None, processes: int) -> bool:
    """mutmut on one module until it finishes or the deadline; True when every mutant has a
    verdict."""
    work = prepare(module)
    _mutmut(work, module, [], deadline, processes)
    verdicts = _verdicts(work, module)
    done = bool(verdicts) and all(code is not None for code in verdicts.values())
    stamp = _read_stamp(work)
    if done and stamp.get("finished") is None:
        stamp["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        _write_stamp(work, stamp)
    return done


def recheck(module: str, deadline: float | None, processes: int) -> None:
    """The survivors, timeouts and untested mutants of a module's run against the tests at HEAD;
    its killed mutants stay killed. For tests added since the run: a new test can kill a
    survivor, never revive a killed mutant. A change to the module itself needs a fresh run
    (refused here), and so does a test that was changed or deleted (not detected: delete
    mutants/<module>)."""
    work = SCRATCH / _slug(module)
    stamp = _read_stamp(work)
    if stamp is None:
        print(f"{module}: not run yet; nothing to recheck", flush=True)
        return
    if _git("ls-tree", stamp["commit"], "--", module) != _git("ls-tree", "HEAD", "--", module):
        print(f"{module}: changed since its run; run it afresh instead", flush=True)
        return
    verdicts = _verdicts(work, module)
    # "no tests" too: a test added since the run may now call the function.
    again = sorted(
        m for m, code in verdicts.items() if _status(code) in ("survived", "timeout", "no tests")
    )
    if not again:
        return
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD", "tests"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    # The copy's tests and mutmut's own copy of them (what the mutants' processes run).
    for folder in (work, work / "mutants"):
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
    _configure(work, module)
    # Map tests to functions afresh: new tests, changed ones, and the plugin's mapping rules.
    (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    print(f"{module}: {len(again)} survivors and timeouts against the tests at HEAD", flush=True)
    _mutmut(work, module, again, deadline, processes)
    stamp = _read_stamp(work)
    stamp["tests_commit"] = _git("rev-parse", "HEAD")
    _write_stamp(work, stamp)


def _mutmut(work: Path, module: str, mutants: list[str], deadline, processes: int) -> None:
    """`mutmut run` in the scratch copy (all its mutants, or those named) until it ends or the
    deadline; its wall time is added to the stamp."""
    stamp = _read_stamp(work)
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",
        # One XLA compilation cache for every mutant of every module (tests/conftest.py honours
        # it): a mutant's process would otherwise recompile the same unmutated programs from
        # scratch, two thirds of its time. A cached program is one whose HLO is identical, so a
        # mutated function (other HLO) still compiles and runs as mutated.
        "ZOPG_TEST_COMPILATION_CACHE": str(SCRATCH / "jax-cache"),
    }
    start = time.monotonic()
    print(f"{module}: mutmut in {work.relative_to(ROOT)} (log: mutmut.log there)", flush=True)
    with (work / "mutmut.log").open("ab") as log:
        process = subprocess.Popen(
            [str(mutmut), "run", "--max-children", str(processes), *mutants],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group, so that stopping it reaches the fork server and mutants.
            start_new_session=True,
        )
        try:
            timeout = None if deadline is None else max(1.0, deadline - time.monotonic())
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"{module}: time is up, stopping (the next run resumes here)", flush=True)
            _stop(process)
        except KeyboardInterrupt:
            _stop(process)
            raise
        finally:
            stamp["wall_seconds"] += time.monotonic() - start
            _write_stamp(work, stamp)
    if process.returncode not in (0, None):
        print(f"{module}: mutmut exited with {process.returncode}; see its log", flush=True)


# -- the report ---------------------------------------------------------------------------------


def _verdicts(work: Path, module: str) -> dict[str, int | None]:
    """mutmut's exit code per mutant id (None: not run yet), from its record beside the copy."""
    meta = work / "mutants" / f"{module}.meta"
    try:
        return json.loads(meta.read_text())["exit_code_by_key"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def _status(exit_code: int | None) -> str:
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[exit_code]


def _diff(work: Path, mutant: str) -> str:
    for attempt in range(3):
        done = subprocess.run(
            [str(Path(sys.executable).with_name("mutmut")), "show", mutant],
            cwd=work,
            capture_output=True,
            text=True,
        )
        if done.returncode == 0:
            break
        # A running mutmut rewrites its records now and then; a moment later they read fine.
        time.sleep(1.0 + attempt)
    else:
        return f"(mutmut show failed: {done.stderr.strip()[-300:]})"
    shown = done.stdout
    # mutmut's first line is "# <id>: <status>"; the rest is the unified diff.
    return shown.split("\n", 1)[1].strip("\n")


def _function(mutant: str) -> str:
    """zopg.exact.x_value_fn__mutmut_3 -> value_fn; methods are xǁClassǁname -> Class.name."""
    name = mutant.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
    if name.startswith("xǁ"):
        return ".".join(name.split("ǁ")[1:3])
    return name.removeprefix("x_")


def load_equivalent(table: str = "equivalent") -> dict[str, str]:
    """Mutant id -> its one-line reason: why it cannot change behaviour (`equivalent`), or why a
    survivor or timeout is left standing (`explained`)."""
    with EQUIVALENT.open("rb") as file:
        return {str(k): str(v) for k, v in tomllib.load(file).get(table, {}).items()}


def module_report(
    module: str, equivalent: dict[str, str], explained: dict[str, str] | None = None
) -> dict | None:
    """The counts, score and survivors of one module's scratch copy; None when it has none."""
    work = SCRATCH / _slug(module)
    stamp = _read_stamp(work)
    verdicts = _verdicts(work, module) if stamp else {}
    if not verdicts:
        return None
    explained = explained or {}
    statuses = {mutant: _status(code) for mutant, code in verdicts.items()}
    marked = {m: equivalent[m] for m in statuses if m in equivalent and statuses[m] == "survived"}
    counts = {status: 0 for status in (*STATUSES, "not checked")}
    other: dict[str, int] = {}
    for mutant, status in statuses.items():
        if mutant in marked:
            continue
        if status in counts:
            counts[status] += 1
        else:
            other[status] = other.get(status, 0) + 1
    total = len(statuses)
    ran = total - counts["not checked"] - counts["no tests"]
    considered = total - len(marked)
    no_tests: dict[str, int] = {}
    for mutant, status in statuses.items():
        if status == "no tests":
            no_tests[_function(mutant)] = no_tests.get(_function(mutant), 0) + 1
    return {
        "status": "complete" if counts["not checked"] == 0 else "partial",
        "tests": list(MODULES[module]),
        "commit": stamp["commit"],
        # The tests the survivors were last run against (`--recheck`), when newer.
        "tests_commit": stamp.get("tests_commit", stamp["commit"]),
        "settings": stamp["key"]["settings"],
        "finished": stamp.get("finished"),
        "wall_seconds": round(stamp["wall_seconds"], 1),
        # Wall time (mapping pass included) per mutant whose tests ran.
        "seconds_per_mutant": round(stamp["wall_seconds"] / ran, 1) if ran else None,
        "mutants": total,
        "killed": counts["killed"],
        "survived": counts["survived"],
        "timeout": counts["timeout"],
        "no_tests": counts["no tests"],
        "suspicious": counts["suspicious"],
        "not_checked": counts["not checked"],
        "other": other,
        "equivalent": len(marked),
        "score": round(counts["killed"] / considered, 4) if considered else None,
        # The same over the mutants judged so far; mutmut takes those with the fastest tests
        # first, so for a partial module this is a biased early look.
        "score_of_checked": (
            round(counts["killed"] / (considered - counts["not checked"]), 4)
            if considered > counts["not checked"]
            else None
        ),
        "survivors": [
            {"id": m, "diff": _diff(work, m)} | ({"why": explained[m]} if m in explained else {})
            for m in sorted(statuses)
            if statuses[m] == "survived" and m not in marked
        ],
        "equivalent_mutants": [
            {"id": m, "reason": reason, "diff": _diff(work, m)}
            for m, reason in sorted(marked.items())
        ],
        "timeouts": sorted(m for m, s in statuses.items() if s == "timeout"),
        # Why each survivor or timeout still standing was left so (mutation_equivalent.toml's
        # [explained]); they count against the score all the same.
        "explained": {
            m: explained[m]
            for m in sorted(statuses)
            if m in explained and statuses[m] in ("survived", "timeout") and m not in marked
        },
        "no_tests_by_function": dict(sorted(no_tests.items())),
    }


def _previous() -> dict:
    try:
        return json.loads(OUTPUT.read_text()).get("modules", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_report() -> dict:
    """results/mutation.json from every scratch copy; a module without one keeps its entry of the
    previous file if that was reached with the same settings (else it is listed as not run)."""
    from zopg.store import write_json_atomic

    equivalent = load_equivalent()
    explained = load_equivalent("explained")
    previous = _previous()
    modules = {}
    for module in MODULES:
        report = module_report(module, equivalent, explained)
        kept = previous.get(module, {})
        if report is None and kept.get("settings") == _settings_key(module)["settings"]:
            report = kept
        if report is None:
            report = {"status": "not run", "tests": list(MODULES[module])}
        modules[module] = report
    seen = {m["id"] for r in modules.values() for m in r.get("equivalent_mutants", [])}
    standing = {m for r in modules.values() for m in r.get("explained", {})}
    data = {
        "tool": TOOL,
        "version": importlib.metadata.version(TOOL),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        # Spent on the modules reported, resumed runs added up.
        "wall_seconds": round(sum(r.get("wall_seconds", 0.0) for r in modules.values()), 1),
        "mutant_processes": mutant_processes(),
        "score": "killed / (mutants - equivalent); timeouts, no tests and suspicious count as not "
        "killed",
        "modules": modules,
        # Marked equivalent but not a survivor (now killed, renumbered or gone): worth a look.
        "equivalent_not_surviving": sorted(set(equivalent) - seen),
        # Explained but no longer standing (killed, renumbered or gone).
        "explained_not_standing": sorted(set(explained) - standing),
    }
    write_json_atomic(OUTPUT, data)
    return data


def _summary(data: dict) -> str:
    rows = [
        f"{'module':34} {'mutants':>7} {'killed':>6} {'surv.':>5} {'t/o':>4} {'no t.':>5} score"
    ]
    for module, r in data["modules"].items():
        if r["status"] == "not run":
            rows.append(f"{module:34} not run")
            continue
        score = "-" if r["score"] is None else f"{r['score']:.3f}"
        rows.append(
            f"{module:34} {r['mutants']:7} {r['killed']:6} {r['survived']:5} {r['timeout']:4} "
            f"{r['no_tests']:5} {score}" + ("" if r["status"] == "complete" else " (partial)")
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"a subset of: {', '.join(MODULES)}")
    parser.add_argument(
        "--budget-minutes", type=float, help="stop after this long (a later run resumes)"
    )
    parser.add_argument("--processes", type=int, default=mutant_processes())
    parser.add_argument("--report", action="store_true", help="only rewrite results/mutation.json")
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="run the survivors and timeouts again against the tests at HEAD (after adding tests)",
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"not a mutated module: {', '.join(unknown)}")
    start = time.monotonic()
    deadline = None if args.budget_minutes is None else start + 60 * args.budget_minutes
    if not args.report:
        if _git("status", "--porcelain", "--", "zopg", "tests"):
            print("note: uncommitted changes in zopg/ or tests/ are not mutated (HEAD is)")
        for module in args.modules or list(MODULES):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if args.recheck:
                recheck(module, deadline, args.processes)
            else:
                run_module(module, deadline, args.processes)
    data = write_report()
    print(_summary(data))
    print(f"-> {OUTPUT.relative_to(ROOT)}")
    return 0


# -- the pytest plugin of the mutant runs -------------------------------------------------------


def pytest_runtest_teardown(item, nextitem):
    """While mutmut maps tests to functions (all the selected tests in one process), forget JAX's
    traces after each test: a later test calling a jitted function that an earlier one traced
    would hit the cache, never call the functions inside, and not be mapped to them."""
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        import chex
        import jax

        jax.clear_caches()
        # chex's trace counters too: with the caches gone, a test asserting one compilation
        # (chex.assert_max_traces) would count the traces of every earlier test of its function.
        chex.clear_trace_counter()
        # The same for zopg's own memoised functions (functools caches), e.g. the Weibull link's
        # table: only the first test to build it would be mapped to the quadrature behind it.
        for name, module in list(sys.modules.items()):
            if name == "zopg" or name.startswith("zopg."):
                for value in list(vars(module).values()):
                    if callable(getattr(value, "cache_clear", None)) and hasattr(
                        value, "cache_info"
                    ):
                        value.cache_clear()


def pytest_collectreport(report):
    """A mutant that breaks the import of a test file (one called at import time, e.g. to build
    a parametrisation) fails its collection; pytest would then report the test ids mutmut asked
    for as not found, a usage error (4) that mutmut counts as neither killed nor survived. The
    tests did fail, so stop with a failure (1). Only in a mutant's run: in the unmutated runs a
    broken collection stays the error it is."""
    if report.failed and "__mutmut_" in os.environ.get("MUTANT_UNDER_TEST", ""):
        import pytest

        pytest.exit(f"collecting {report.nodeid or 'the tests'} failed", returncode=1)


if __name__ == "__main__":
    sys.exit(main())
