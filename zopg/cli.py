"""The `zopg` command: run experiments, list what exists, plot and summarise results.

Exit codes: 0 success, 2 bad input (with a message), 1 failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from zopg.errors import ConfigError

EXPERIMENTS_DIR = Path("benchmarks")


def resolve_experiment(name: str) -> Path:
    """A path to a TOML file, or the name of one in ./benchmarks/."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return path
    candidate = EXPERIMENTS_DIR / f"{name}.toml"
    if candidate.exists():
        return candidate
    stems = [p.stem for p in sorted(EXPERIMENTS_DIR.glob("*.toml"))]
    known = ", ".join(s for s in stems if not s.startswith("rates_")) or "none found"
    raise ConfigError(f"unknown experiment {name!r}; experiments in {EXPERIMENTS_DIR}/: {known}")


def cmd_run(args) -> int:
    from zopg.analysis.report import format_summary, write_reports
    from zopg.experiments import load_experiment
    from zopg.experiments.runner import run_experiment

    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds = {args.seeds}: must be an integer >= 1")
    experiment = load_experiment(resolve_experiment(args.experiment), args.set, args.seeds)
    out = Path(args.out) if args.out else Path("results") / experiment.name
    run_experiment(experiment, out, quiet=args.quiet)
    print(format_summary(write_reports(out)))
    print(f"results in {out}/")
    return 0


def cmd_report(args) -> int:
    from zopg.analysis.report import format_summary, write_reports

    out = Path(args.dir)
    if not (out / "experiment.json").exists():
        raise ConfigError(f"{out}: not a results folder (no experiment.json); run `zopg run` first")
    print(format_summary(write_reports(out)))
    return 0


def cmd_list(args) -> int:
    import dataclasses

    from zopg.algorithms import registry
    from zopg.envs import registered_envs
    from zopg.preferences import LINKS, UTILITIES, Teacher

    print("environments: " + ", ".join(registered_envs()))
    print("links:        " + ", ".join(LINKS))
    print("utilities:    " + ", ".join(UTILITIES) + " ([teacher.utility])")
    print("teachers:     Teacher(" + ", ".join(f.name for f in dataclasses.fields(Teacher)) + ")")
    print("algorithms:   (assumed teacher link; budget)")
    for name, algo in registry.ALGORITHMS.items():
        kind = (
            "reference, never budget-matched"
            if algo.reference
            else (f"budget sets {algo.config.budget_field}")
        )
        print(f"  {name:14} {algo.description}")
        print(f"  {'':14} assumes: {algo.assumes or 'nothing'}; {kind}")
    tomls = sorted(EXPERIMENTS_DIR.glob("*.toml"))
    # rates_*.toml are rate sweeps for benchmarks/rates.py, not `zopg run` experiments.
    experiments = [p.stem for p in tomls if not p.stem.startswith("rates_")]
    sweeps = [p.stem for p in tomls if p.stem.startswith("rates_")]
    print("experiments:  " + (", ".join(experiments) or f"none in {EXPERIMENTS_DIR}/"))
    if sweeps:
        print("rate sweeps:  " + ", ".join(sweeps) + " (make rates)")
    return 0


def _results_dir(path: str) -> Path:
    out = Path(path)
    if not (out / "summary.json").exists():
        raise ConfigError(f"{out}: not a results folder (no summary.json); run `zopg run` first")
    return out


def cmd_plot(args) -> int:
    from zopg.analysis.plots import plot_results

    for path in plot_results(_results_dir(args.dir)):
        print(path)
    return 0


def cmd_summarize(args) -> int:
    from zopg.analysis.report import format_summary
    from zopg.experiments.store import read_json

    print(format_summary(read_json(_results_dir(args.dir) / "summary.json")))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from zopg import __version__

    parser = argparse.ArgumentParser(prog="zopg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"zopg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment (a TOML file or a name in benchmarks/)")
    run.add_argument("experiment")
    run.add_argument("--seeds", type=int, help="override the experiment's number of seeds")
    run.add_argument("--out", help="results folder (default results/<experiment name>)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a field, e.g. methods.zpg.num_pairs=100 (repeatable)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars or run log")
    run.set_defaults(func=cmd_run)
    sub.add_parser(
        "list", help="environments, links, teachers, algorithms, experiments"
    ).set_defaults(func=cmd_list)
    plot = sub.add_parser("plot", help="(re)draw the figures of a results folder")
    plot.add_argument("dir")
    plot.set_defaults(func=cmd_plot)
    report = sub.add_parser(
        "report", help="(re)write metrics.csv, summary.json, manifest.json and figures from runs/"
    )
    report.add_argument("dir")
    report.set_defaults(func=cmd_report)
    summ = sub.add_parser("summarize", help="print the summary table of a results folder")
    summ.add_argument("dir")
    summ.set_defaults(func=cmd_summarize)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits with 2 on bad usage
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not in the interpreter's exit
        return code
    except ConfigError as err:
        print(f"zopg: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zopg: interrupted; finished chunks are saved, run again to resume", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`zopg summarize DIR | head`): not an error of ours. Point stdout
        # at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
