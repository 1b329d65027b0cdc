"""Throughput of zopg's rollouts and ZPG training against NumPy baselines and bare rollouts.

Sections (one module each, benchmarks/speed/throughput_*.py): GridWorld rollouts and ZPG training
against plain NumPy, ZPG on gymnax CartPole against bare rollouts of the same policy, and brax
rollouts per physics backend. Writes results/throughput.json; `--only NAME` runs one section and
merges it into the existing file, keeping the other sections. From the repository root:

    .venv/bin/python -m benchmarks.speed.throughput                      # every section, fresh file
    .venv/bin/python -m benchmarks.speed.throughput --only cartpole_zpg  # one section, merged
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from benchmarks.speed import (
    sections,
    throughput_brax,
    throughput_cartpole,
    throughput_gridworld,
    throughput_tokens,
    throughput_zpg,
)
from zopg import store
from zopg.provenance import REPO_ROOT, environment, timestamp

BENCHMARK = "throughput"
MODULE = "benchmarks.speed.throughput"

# A new section is a module with a (measure, print) pair added here; `--only NAME` runs just it.
SECTIONS = {
    "gridworld_rollouts": (
        throughput_gridworld.gridworld_rollouts,
        throughput_gridworld.print_gridworld,
    ),
    "zpg_training": (throughput_zpg.zpg_training, throughput_zpg.print_zpg),
    "cartpole_zpg": (throughput_cartpole.cartpole_zpg, throughput_cartpole.print_cartpole),
    "brax_backends": (throughput_brax.brax_backends, throughput_brax.print_brax),
    "tokens_zpg": (throughput_tokens.tokens_zpg, throughput_tokens.print_tokens),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, about 90 s in all")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results/throughput.json")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SECTIONS),
        help="run only this section (repeatable); the others already in --out are kept",
    )
    args = parser.parse_args(argv)
    # A full run replaces the file; --only replaces just its sections (read first, so a bad file
    # fails before minutes of measuring).
    old = sections.read_previous(args.out, BENCHMARK) if args.only else None
    start = time.perf_counter()
    env = environment()
    report = {
        "benchmark": BENCHMARK,
        "timestamp": timestamp(),
        "quick": args.quick,
        **env,
        "sections_run": list(dict.fromkeys(args.only or SECTIONS)),
        "sections": {},
    }
    device = report["device"]
    print(
        f"device: {device['platform']} ({device['device_kind']}) x{device['num_devices']}, "
        f"jax {report['versions']['jax']}, {report['host']['cpu_count']} CPUs"
    )
    for name in report["sections_run"]:
        measure, show = SECTIONS[name]
        print(f"\n== {name} ==")
        section_start, load_before = time.perf_counter(), os.getloadavg()[0]
        result = measure(args.quick)
        runtime_s = time.perf_counter() - section_start
        result["run"] = sections.section_run(MODULE, name, args.quick, runtime_s, load_before, env)
        report["sections"][name] = result
        show(result)
    report["runtime_s"] = time.perf_counter() - start
    report = sections.merge_report(old, report)
    path = store.write_json_atomic(args.out, report)
    print(f"\nwrote {path} in {report['runtime_s']:.1f} s")
    if report["mixed_environment"]:
        print(
            f"note: sections {report['mixed_environment']} were measured on another device, "
            "host or versions; see each section's `run`"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
