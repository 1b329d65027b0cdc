"""One GPU run of the throughput sections at GPU sizes, and `make bench-quick`'s wall time, to JSON.

Run by benchmarks/speed/gpu_check.sh on a lent GPU machine (see that file), or here with tiny
sizes, from the repository root:

    .venv/bin/python -m benchmarks.speed.gpu_check --quick --out /tmp/throughput_gpu.json

Each section runs in its own process under a time limit, so a section that hangs or crashes costs
only its own share of the device time, and the JSON is rewritten after every section. Processes
run one at a time and this driver never touches a device itself: JAX takes most of a GPU's
memory in the first process that uses it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.speed.sections import merge_report, section_run
from zopg import store
from zopg.provenance import REPO_ROOT, environment, timestamp

BENCHMARK = "throughput_gpu"
MODULE = "benchmarks.speed.gpu_check"
DEFAULT_OUT = REPO_ROOT / "results/throughput_gpu.json"

# Sizes for an H200 (arguments of the throughput_*.py measuring functions). Each timed call is
# large enough that launch overheads are amortised at the goal rates, and small enough that a
# section still ends inside its time limit when it runs ten times below its goal.
GPU_SIZES = {
    # ZPG_SETTINGS' N = 1000 pairs per seed; 512 vmapped seeds make 1M trajectories (24M env
    # steps) per iteration, about 25 ms at the 1e9 goal.
    "zpg_training": {
        "size": {
            "seeds": 512,
            "iterations": 30,
            "rounds": 5,
            "bare_calls": 5,
            "numpy_iterations": 2,
            "check_pairs": 20000,
        }
    },
    # One seed; N = 16384 pairs gives 32768 parallel envs per rollout step (1024 at the CPU size),
    # 16M env steps per iteration, about 0.16 s at the 1e8 goal.
    "cartpole_zpg": {
        "size": {"iterations": 4, "rounds": 3, "check_iterations": 1},
        "settings": {"num_pairs": 16384},
    },
    # 2^19 trajectories x 24 steps per call; the NumPy baselines are timed on the host CPU as on
    # the CPU machine (the vectorised one at the same batch, about 1 s a call).
    "gridworld_rollouts": {
        "size": {
            "batch": 1 << 19,
            "jax_repeats": 20,
            "loop_repeats": 3,
            "loop_seconds_per_repeat": 0.5,
            "vectorised_repeats": 3,
        }
    },
    # Sequences of 16 tokens from the SFT GRU (LoRA r 4), B = 2N per ZPG iteration: batches 16
    # and 256 times the CPU's 256; ZPG compiles once per batch.
    "tokens_zpg": {"size": {"batches": [4096, 65536], "iterations": 10, "rounds": 5}},
}

# Seconds each section may run (start-up and compiling included), in the order they run: the
# goals first, so a run cut short by the total budget still answers them.
TIMEOUTS_S = {
    "zpg_training": 120,
    "cartpole_zpg": 140,
    "gridworld_rollouts": 80,
    # The SFT reference, and per teacher (two) two ZPG compiles (one per batch) and four bare ones.
    "tokens_zpg": 200,
    "bench_quick": 150,  # per command: the default device, then the CPU baseline
}
PROBE_TIMEOUT_S = 120
# Below this many seconds of budget a section is skipped rather than started and killed.
MIN_SECTION_S = 20

GOALS = {
    "zpg_gridworld_env_steps_per_s": {
        "section": "zpg_training",
        "path": ["jax_zpg", "steps_per_s"],
        "min": 1e9,
    },
    "zpg_cartpole_env_steps_per_s": {
        "section": "cartpole_zpg",
        "path": ["zpg", "steps_per_s"],
        "min": 1e8,
    },
}

# `make bench-quick` at --quick sizes: one env and one method, to check the command path only.
TINY_EXPERIMENT = """\
name = "gpu_check_tiny"
description = "ZPG on one GridWorld with a small budget: gpu_check.py --quick's bench_quick"
seeds = 2
budget_queries = 20_000
policy = "tabular"

[[envs]]
id = "gridworld/open-5x5"

[[links]]
name = "bradley-terry"

[evaluation]
points = 5
chunk_iterations = 100

[methods.zpg]
algorithm = "zpg"
"""


# -- in a section's own process ----------------------------------------------------------------


# Section name -> (module, measuring function, printing function) in benchmarks/speed/.
MEASURES = {
    "zpg_training": ("throughput_zpg", "zpg_training", "print_zpg"),
    "cartpole_zpg": ("throughput_cartpole", "cartpole_zpg", "print_cartpole"),
    "gridworld_rollouts": ("throughput_gridworld", "gridworld_rollouts", "print_gridworld"),
    "tokens_zpg": ("throughput_tokens", "tokens_zpg", "print_tokens"),
}


def measure_section(name: str, quick: bool) -> dict:
    """One throughput section at GPU sizes (at the module's own --quick sizes with `quick`)."""
    module_name, measure_name, show_name = MEASURES[name]
    # Imported only here: they import zopg and JAX, which the driver never uses.
    module = importlib.import_module(f"benchmarks.speed.{module_name}")
    measure, show = getattr(module, measure_name), getattr(module, show_name)
    result = measure(True) if quick else measure(False, **GPU_SIZES[name])
    show(result)
    return result


def child(name: str, quick: bool, part: Path) -> int:
    """Measure one section (or, for "probe", only describe the machine) into `part`."""
    try:
        out = {"env": environment()}
        if name != "probe":
            out["result"] = measure_section(name, quick)
    except Exception:
        traceback.print_exc()
        out = {"error": traceback.format_exc()[-4000:]}
    store.write_json_atomic(part, out)
    return 0 if "error" not in out else 1


# -- the driver --------------------------------------------------------------------------------


def child_env(**extra: str) -> dict:
    """The environment of a section's process: ours, with the repository importable."""
    env = {**os.environ, **extra}
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO_ROOT)])
    return env


def run_child(name: str, quick: bool, timeout_s: float, workdir: Path) -> dict:
    """Run `child` in a fresh process; its part file, or why there is none."""
    part = workdir / f"{name}.json"
    command = [sys.executable, "-m", MODULE, "--child", name, "--part", str(part)]
    if quick:
        command.append("--quick")
    start = time.perf_counter()
    try:
        code = subprocess.run(command, env=child_env(), timeout=timeout_s, check=False).returncode
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.3g} s", "timed_out": True}
    elapsed = time.perf_counter() - start
    if not part.exists():
        return {"error": f"exit code {code} after {elapsed:.1f} s, no result written"}
    out = json.loads(part.read_text())
    out["process_s"] = elapsed
    return out


def cli_command(experiment: str, out_dir: Path) -> list[str]:
    return [sys.executable, "-m", "zopg.cli", "run", experiment, "--out", str(out_dir), "--quiet"]


def bench_quick(quick: bool, deadline: float, platform: str | None, workdir: Path) -> dict:
    """Wall time of `zopg run quick_gridworld` on the default device and, as its baseline, on the
    host CPU (JAX_PLATFORMS=cpu) of the same machine; each with an empty compilation cache."""
    experiment = "quick_gridworld"
    if quick:
        experiment = str(workdir / "gpu_check_tiny.toml")
        Path(experiment).write_text(TINY_EXPERIMENT)
    runs = {}
    for name in ("default", "cpu"):
        if name == "cpu" and platform == "cpu":
            runs[name] = {"skipped": "the default device is already the CPU"}
            continue
        timeout_s = min(TIMEOUTS_S["bench_quick"], deadline - time.monotonic())
        if timeout_s < MIN_SECTION_S:
            runs[name] = {"skipped": "the run's time budget is spent"}
            continue
        # A fresh cache folder: the first `make bench-quick` on a machine compiles everything.
        env = child_env(ZOPG_CACHE_DIR=str(workdir / f"cache_{name}"))
        if name == "cpu":
            env["JAX_PLATFORMS"] = "cpu"
        command = cli_command(experiment, workdir / f"out_{name}")
        run = {
            "command": " ".join(["python", *command[1:]]),
            "jax_platforms": env.get("JAX_PLATFORMS"),
        }
        print(f"$ {run['command']}  (JAX_PLATFORMS={run['jax_platforms']})", flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                command, env=env, timeout=timeout_s, capture_output=True, text=True, check=False
            )
            run.update(wall_s=time.perf_counter() - start, returncode=proc.returncode)
            if proc.returncode != 0:
                run["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
        except subprocess.TimeoutExpired:
            run.update(wall_s=time.perf_counter() - start, timed_out=True)
        print(json.dumps({k: v for k, v in run.items() if k != "output_tail"}), flush=True)
        if "output_tail" in run:
            print(run["output_tail"], file=sys.stderr)
        runs[name] = run
    result = {
        "description": "wall time of one `zopg run` of the experiment (make bench-quick) in a "
        "fresh process with an empty compilation cache, imports and compiling included; the "
        "baseline is the same command on the host CPU (JAX_PLATFORMS=cpu)",
        "experiment": "quick_gridworld"
        if not quick
        else "a one-env, one-method experiment (--quick: checks the command path only)",
        "runs": runs,
    }
    ok = [runs[n].get("returncode") == 0 for n in ("default", "cpu")]
    if ok[0] and (ok[1] or runs["cpu"].get("timed_out")):
        # A CPU run cut off by its limit still bounds the ratio from below.
        key = "ratio_cpu_over_default_wall" + ("_at_least" if not ok[1] else "")
        result[key] = runs["cpu"]["wall_s"] / runs["default"]["wall_s"]
    return result


def goals(sections: dict) -> dict:
    out = {}
    for name, goal in GOALS.items():
        value = sections.get(goal["section"])
        for key in goal["path"]:
            value = value.get(key) if isinstance(value, dict) else None
        out[name] = {
            "metric": f"{goal['section']}.{'.'.join(goal['path'])}",
            "min": goal["min"],
            "value": value,
            "met": value is not None and value >= goal["min"],
        }
    return out


def write(report: dict, path: Path, start: float) -> None:
    report["runtime_s"] = time.perf_counter() - start
    report["goals"] = goals(report["sections"])
    if report.get("device") is not None:
        report.update(merge_report(None, report))
    store.write_json_atomic(path, report)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="the throughput scripts' --quick sizes"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--only", action="append", choices=list(TIMEOUTS_S), help="run only this section"
    )
    parser.add_argument(
        "--budget-s", type=float, default=360.0, help="seconds for all sections together"
    )
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run the GPU sizes even when JAX sees no GPU"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--part", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.quick, args.part)

    start, deadline = time.perf_counter(), time.monotonic() + args.budget_s
    names = list(dict.fromkeys(args.only or TIMEOUTS_S))
    report = {
        "benchmark": BENCHMARK,
        "timestamp": timestamp(),
        "quick": args.quick,
        "runtime_s": 0.0,
        "goals": goals({}),
        "device": None,
        "sections_run": names,
        "budget_s": args.budget_s,
        "timeouts_s": TIMEOUTS_S,
        "gpu_sizes": GPU_SIZES,
        "sections": {},
        "sections_failed": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        workdir = Path(tmp)
        probe = run_child("probe", args.quick, PROBE_TIMEOUT_S, workdir)
        if "env" not in probe:
            report["sections_failed"]["probe"] = probe.get("error")
            write(report, args.out, start)
            print(f"error: no JAX device could be described: {probe.get('error')}")
            return 1
        env = probe["env"]
        report.update(env)
        device = env["device"]
        print(
            f"device: {device['platform']} ({device['device_kind']}) x{device['num_devices']}, "
            f"jax {env['versions']['jax']}, python {env['versions']['python']}",
            flush=True,
        )
        write(report, args.out, start)
        if device["platform"] == "cpu" and not (args.quick or args.allow_cpu):
            report["aborted"] = (
                "JAX sees no GPU; the GPU sizes would take far too long on a CPU "
                "(use --quick, or --allow-cpu)"
            )
            write(report, args.out, start)
            print(f"error: {report['aborted']}")
            return 2

        for name in names:
            left = deadline - time.monotonic()
            if left < MIN_SECTION_S:
                report["sections_failed"][name] = "skipped: the run's time budget is spent"
                write(report, args.out, start)
                continue
            print(f"\n== {name} ==", flush=True)
            section_start, load_before = time.perf_counter(), os.getloadavg()[0]
            if name == "bench_quick":  # runs its own processes; measured on the probe's machine
                result = bench_quick(args.quick, deadline, device["platform"], workdir)
                section_env = env
            else:
                out = run_child(name, args.quick, min(TIMEOUTS_S[name], left), workdir)
                result, section_env = out.get("result"), out.get("env", env)
                if result is None:
                    report["sections_failed"][name] = out["error"]
                    print(f"{name} failed: {out['error']}", flush=True)
                    write(report, args.out, start)
                    continue
            runtime_s = time.perf_counter() - section_start
            run = section_run(MODULE, name, args.quick, runtime_s, load_before, section_env)
            run["command"] = f"python3 -m {MODULE} --only {name}" + (
                " --quick" if args.quick else ""
            )
            report["sections"][name] = {**result, "run": run}
            write(report, args.out, start)

    write(report, args.out, start)
    print(f"\nwrote {args.out} in {report['runtime_s']:.1f} s")
    for name, goal in report["goals"].items():
        value = "not measured" if goal["value"] is None else f"{goal['value']:.3e}"
        print(f"goal {name} >= {goal['min']:.0e}: {value} ({'met' if goal['met'] else 'NOT met'})")
    for name, why in report["sections_failed"].items():
        print(f"section {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
