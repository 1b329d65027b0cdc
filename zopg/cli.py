"""The `zopg` command: run experiments, list what exists, plot and summarise results.

Exit codes: 0 success, 2 bad input (with a message), 1 failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import traceback
from pathlib import Path

from zopg.errors import ConfigError, did_you_mean


def resolve_experiment(name: str) -> Path:
    """A path to a TOML file, or a shipped experiment's name, found from any folder."""
    from zopg.experiments.library import resolve_experiment as resolve  # a light import

    return resolve(name)


def cmd_run(args) -> int:
    from zopg.analysis.report import write_reports
    from zopg.experiments import load_experiment
    from zopg.experiments.runner import plan_runs, run_experiment
    from zopg.experiments.shards import parse_shard

    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds = {args.seeds}: must be an integer >= 1")
    shard = None if args.shard is None else parse_shard(args.shard)
    experiment = load_experiment(resolve_experiment(args.experiment), args.set, args.seeds)
    out = Path(args.out) if args.out else default_out(experiment.name, args.set, args.seeds)
    check_out(out)
    if args.dry_run:
        return print_plan(experiment, plan_runs(experiment)[0], shard, out)
    use_compilation_cache(not args.no_compilation_cache)
    record = run_experiment(
        experiment, out, quiet=args.quiet, shard=shard, overwrite=args.overwrite
    )
    if shard is None:
        print_report(write_reports(out), record["done"]["held_elsewhere"])
        print(f"results in {out}/")
        return 0
    done = record["done"]
    print(
        f"shard {shard}: ran {len(done['ran'])}, finished earlier "
        f"{len(done['finished_earlier'])}, held by another process {len(done['held_elsewhere'])}"
        # Distinct runs: the entries list a reference run once per link panel it serves.
        f" (of {len({e['run_id'] for e in record['runs']})} runs in the experiment); merge with "
        f"`zopg report {out}`"
    )
    return 0


def check_out(out: Path) -> None:
    """A results folder must be a folder (or not exist yet), checked before anything runs."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out = {str(out)!r}: is a file; name a folder (created if missing)")


def default_out(name: str, sets=(), seeds=None) -> Path:
    """results/NAME, or for a run changed by --set or --seeds a folder of its own named from the
    changes (results/NAME+num_pairs=100+seeds=4), so that an override never lands in, or is
    refused by, the folder of the experiment as written."""
    changes = [item.strip() for item in sets]
    if seeds is not None:
        changes.append(f"seeds={seeds}")
    if not changes:
        return Path("results") / name
    parts = []
    for item in changes:
        path, _, value = item.partition("=")
        parts.append(f"{path.rsplit('.', 1)[-1]}={value}")
    suffix = "+".join(parts)
    safe = re.sub(r"[^A-Za-z0-9_.=+-]", "_", suffix)
    if safe != suffix or len(safe) > 80:
        digest = hashlib.sha256("\n".join(changes).encode()).hexdigest()[:8]
        safe = f"set-{digest}"
    return Path("results") / f"{name}+{safe}"


def print_plan(experiment, planned, shard, out: Path) -> int:
    """`zopg run --dry-run`: the runs the experiment (or the shard) would run, each marked
    "finished" when OUT already holds it with the same run hash (a real run would skip it);
    nothing runs."""
    from zopg.experiments.memory import check_fits
    from zopg.experiments.runner import is_finished

    mine = [p for p in planned if shard is None or shard.owns(p.run_id)]
    check_fits([(p.run_id, p.run) for p in mine], experiment.seeds, experiment.evaluation.points)
    finished = {p.run_id for p in mine if is_finished(out / "runs", p)}
    print(f"{experiment.name}: {len(planned)} runs x {experiment.seeds} seeds")
    if shard is not None:
        print(f"shard {shard} owns {len(mine)} of them")
    for p in mine:
        mark = ", finished" if p.run_id in finished else ""
        print(f"  {p.run_id}  ({p.run.training.num_iterations} iterations{mark})")
    print(f"{len(finished)} of {len(mine)} finished in {out}/, {len(mine) - len(finished)} to run")
    return 0


def use_compilation_cache(enabled: bool) -> None:
    """JAX's persistent compilation cache in the user's cache folder ($ZOPG_CACHE_DIR, else
    $XDG_CACHE_HOME/zopg/jax, else ~/.cache/zopg/jax), so a second `zopg run` of the same
    programs skips XLA's compiling. Left alone when a cache folder is already configured."""
    import jax

    if not enabled or jax.config.jax_compilation_cache_dir:
        return
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.environ.get("ZOPG_CACHE_DIR") or os.path.join(base, "zopg", "jax")
    jax.config.update("jax_compilation_cache_dir", folder)
    # Most of our programs compile in 0.5-20 s on a CPU; cache all that take a noticeable time.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def cmd_submit(args) -> int:
    from zopg.analysis.report import write_reports
    from zopg.experiments import load_experiment
    from zopg.experiments.memory import check_fits
    from zopg.experiments.overrides import parse_value
    from zopg.experiments.runner import plan_runs
    from zopg.experiments.submit import submit

    path = resolve_experiment(args.experiment)
    # Everything a job would refuse is refused here, before a job is queued.
    experiment = load_experiment(path, args.set, args.seeds)
    check_fits(
        [(p.run_id, p.run) for p in plan_runs(experiment)[0]],
        experiment.seeds,
        experiment.evaluation.points,
    )
    options = {}
    for item in args.option:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {item!r}: must be NAME=VALUE, e.g. timeout_min=60")
        options[key.strip()] = parse_value(text)
    out = Path(args.out) if args.out else default_out(experiment.name, args.set, args.seeds)
    check_out(out)
    jobs = submit(
        str(path), out, args.shards, args.cluster, options, args.logs, args.set, args.seeds
    )
    print(f"submitted {len(jobs)} shards of {experiment.name}: jobs {jobs[0].job_id} ...")
    if not args.wait:
        print(f"when they have finished: zopg report {out}")
        return 0
    failed = [job.job_id for job in jobs if job.exception() is not None]
    if failed:
        print(f"jobs {', '.join(failed)} failed; their logs: {args.logs or '.submitit'}/")
    print_report(write_reports(out))
    return 1 if failed else 0


def cmd_tune(args) -> int:
    from zopg.tuning.tune import tune

    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials = {args.trials}: must be an integer >= 1")
    methods = None if args.methods is None else [m for m in args.methods.split(",") if m]
    use_compilation_cache(not args.no_compilation_cache)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    record = tune(
        resolve_experiment(args.experiment),
        args.out,
        args.trials,
        methods,
        vmapped=not args.trial_by_trial,
        log=log,
    )
    print(f"{record['experiment']}: {record['trials_per_method']} trials per method")
    for label, chosen in record["chosen"].items():
        low, high = chosen["ci95"]
        print(
            f"  {label:14} score {chosen['score']:.3f} [{low:.3f}, {high:.3f}]  {chosen['values']}"
        )
    print(f"trials in {record['out_dir']}/, chosen settings in {record['fragment']}")
    return 0


def cmd_report(args) -> int:
    from zopg.analysis.report import write_reports

    out = Path(args.dir)
    if not (out / "experiment.json").exists():
        raise ConfigError(f"{out}: not a results folder (no experiment.json); run `zopg run` first")
    print_report(write_reports(out))
    return 0


def print_report(summary, held=()) -> None:
    """The summary table, then every run it leaves out and why: a table that silently lacks a
    run reads as complete."""
    from zopg.analysis.report import format_summary

    print(format_summary(summary))
    held = set(held)
    missing = [run for run in summary.get("missing_runs", []) if run not in held]
    if held:
        print(
            f"{len(held)} runs held by another process (left out above; `zopg report` once it "
            "has finished): " + ", ".join(sorted(held))
        )
    if missing:
        print(f"{len(missing)} runs not finished yet (left out above): " + ", ".join(missing))
    stale = summary.get("stale_runs", [])
    if stale:
        print(
            f"{len(stale)} run files made with other settings (left out above; rerun them with "
            "`zopg run ... --overwrite`): " + ", ".join(stale)
        )


def print_fields(rows) -> None:
    """Config fields as an aligned table: path, default, what is allowed, meaning."""
    width = max(len(r.path) for r in rows)
    for r in rows:
        default = "" if r.default == "" else repr(r.default)
        print(f"  {r.path:{width}}  {default:16} {r.allowed}" + (f"  ({r.doc})" if r.doc else ""))


def cmd_list(args) -> int:
    import dataclasses

    from zopg.algorithms import registry
    from zopg.envs import registered_envs
    from zopg.preferences import Teacher, link_names, utility_names

    if args.algorithm is not None:
        algo = registry.get(args.algorithm)
        print(f"{algo.name}: {algo.description}")
        print(f"assumes: {algo.assumes or 'nothing'}; config {algo.config.__qualname__}")
        if not algo.reference:
            print(f"budget_queries sets {algo.config.budget_field}")
        print("fields (default, allowed, meaning):")
        print_fields(algo.config.field_docs())
        if algo.search_space is not None:
            print("zopg tune searches:")
            for dim in algo.search_space.dimensions:
                print(f"  {dim.describe()}")
        return 0

    print("environments: " + ", ".join(registered_envs()))
    print("links:        " + ", ".join(link_names()))
    print("utilities:    " + ", ".join(utility_names()) + " ([teacher.utility])")
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
        if algo.search_space is not None:
            print(f"  {'':14} tunes: {algo.search_space.describe()}")
    from zopg.experiments.library import experiment_names, library_dir, sweep_names

    print(f"experiments:  {', '.join(experiment_names()) or 'none'}")
    print(f"  {'':12} shipped with zopg, in {library_dir()}; `zopg run NAME`, or a path to a file")
    if sweep_names():
        print("rate sweeps:  " + ", ".join(sweep_names()) + " (python -m zopg.rates)")
    return 0


def _toml_line(key: str, value) -> str:
    """`key = value` as TOML writes it; a field left unset (None) as a comment."""
    if value is None:
        return f"# {key}: not set"
    return f"{key} = {_toml_value(value)}"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def cmd_show(args) -> int:
    """Every method's config as the runs will use it: the file, its includes and --set applied,
    the budget's field derived (the first env and link stand for all; they share configs)."""
    from zopg.experiments import load_experiment
    from zopg.experiments.build import build_run

    experiment = load_experiment(resolve_experiment(args.experiment), args.set)
    labels = [m.label for m in experiment.methods]
    for wanted in args.methods:
        if wanted not in labels:
            raise ConfigError(
                f"method {wanted!r}{did_you_mean(wanted, labels)}: not in {experiment.name} "
                f"({', '.join(labels)})"
            )
    for method in experiment.methods:
        if args.methods and method.label not in args.methods:
            continue
        env = next(e for e in experiment.envs if method.envs is None or e.name in method.envs)
        link = next(x for x in experiment.links if method.links is None or x.panel in method.links)
        run = build_run(experiment, env, link, method)
        print(f"[methods.{method.label}]  # {run.algorithm.name}: {run.algorithm.description}")
        for key, value in run.config.to_data().items():
            print(_toml_line(key, value))
        print()
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
    from zopg.store import read_json

    print(format_summary(read_json(_results_dir(args.dir) / "summary.json")))
    return 0


def cmd_compare(args) -> int:
    from zopg.analysis.compare import (
        COMPARISONS_FILE,
        compare_folder,
        format_comparisons,
        write_comparisons,
    )

    out = Path(args.dir)
    result = compare_folder(
        out, args.baseline, args.metric, test_references=args.test_references, family=args.family
    )
    path = write_comparisons(Path(args.out) if args.out else out / COMPARISONS_FILE, result)
    print(format_comparisons(result))
    print(f"comparisons in {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from zopg import __version__

    parser = argparse.ArgumentParser(prog="zopg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"zopg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment (a TOML file or a name in benchmarks/)")
    run.add_argument("experiment")
    run.add_argument("--seeds", type=int, help="override the experiment's number of seeds")
    run.add_argument(
        "--out",
        help="results folder (default results/<experiment name>, or results/<name>+<changes> "
        "with --set or --seeds)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a field, e.g. methods.zpg.num_pairs=100 (repeatable)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars or run log")
    run.add_argument(
        "--shard",
        metavar="i/N",
        help="run only the i-th of N disjoint shares of the runs (0 <= i < N); merge the "
        "shards' results with `zopg report DIR`",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="validate and list the runs; run nothing"
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="run into OUT even when it holds results of another configuration",
    )
    run.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache (~/.cache/zopg/jax)",
    )
    run.set_defaults(func=cmd_run)
    listing = sub.add_parser(
        "list",
        help="environments, links, teachers, algorithms, experiments; with an algorithm's name, "
        "every field of its config",
    )
    listing.add_argument("algorithm", nargs="?", help="an algorithm: its fields and search space")
    listing.set_defaults(func=cmd_list)
    show = sub.add_parser(
        "show", help="the resolved config of an experiment's methods (after includes and --set)"
    )
    show.add_argument("experiment")
    show.add_argument("methods", nargs="*", help="method labels (default: every method)")
    show.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    show.set_defaults(func=cmd_show)
    plot = sub.add_parser("plot", help="(re)draw the figures of a results folder")
    plot.add_argument("dir")
    plot.set_defaults(func=cmd_plot)
    sub_ = sub.add_parser(
        "submit", help="run an experiment's shards as a submitit job array (SLURM or local)"
    )
    sub_.add_argument("experiment")
    sub_.add_argument("--shards", type=int, required=True, help="number of shards (jobs)")
    sub_.add_argument(
        "--cluster",
        default="auto",
        help="auto (SLURM when it is there), slurm, local (processes here) or debug",
    )
    sub_.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a submitit executor parameter, e.g. timeout_min=120, slurm_partition=gpu, "
        "gpus_per_node=1 (repeatable)",
    )
    sub_.add_argument("--logs", help="submitit's folder (default .submitit/<results folder>)")
    sub_.add_argument("--out", help="results folder (default as for zopg run)")
    sub_.add_argument("--seeds", type=int, help="override the experiment's number of seeds")
    sub_.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    sub_.add_argument(
        "--wait", action="store_true", help="wait for the jobs, then write the reports"
    )
    sub_.set_defaults(func=cmd_submit)
    tune = sub.add_parser(
        "tune", help="tune every budget-matched method alike ([tune] in the experiment file)"
    )
    tune.add_argument("experiment")
    tune.add_argument("--trials", type=int, help="trials per method (default: [tune] trials)")
    tune.add_argument("--methods", help="comma-separated method labels (default: [tune] methods)")
    tune.add_argument("--out", help="tuning folder (default results/tune/<experiment name>)")
    tune.add_argument(
        "--trial-by-trial",
        action="store_true",
        help="one compiled call per trial instead of a vmapped batch (slower; same scores)",
    )
    tune.add_argument("--quiet", action="store_true", help="no progress lines")
    tune.add_argument("--no-compilation-cache", action="store_true")
    tune.set_defaults(func=cmd_tune)
    report = sub.add_parser(
        "report", help="(re)write metrics.csv, summary.json, manifest.json and figures from runs/"
    )
    report.add_argument("dir")
    report.set_defaults(func=cmd_report)
    summ = sub.add_parser("summarize", help="print the summary table of a results folder")
    summ.add_argument("dir")
    summ.set_defaults(func=cmd_summarize)
    comp = sub.add_parser(
        "compare",
        help="paired comparisons of a results folder's methods over shared seeds (CI, "
        "sign-flip p, Holm); writes comparisons.json",
    )
    comp.add_argument("dir", metavar="RESULTS")
    comp.add_argument(
        "--baseline",
        metavar="METHOD",
        help="compare every method with this one (default: each panel's best budget-matched "
        "method by mean)",
    )
    comp.add_argument(
        "--metric",
        choices=("score", "value"),
        help="normalised score or value (default: score where the panel has one, else value)",
    )
    comp.add_argument(
        "--out", metavar="FILE", help="where to write the JSON (default RESULTS/comparisons.json)"
    )
    comp.add_argument(
        "--test-references",
        action="store_true",
        help="also test reward-access reference methods (they join the Holm family)",
    )
    comp.add_argument(
        "--family",
        choices=("folder", "panel", "auto"),
        default="folder",
        help="what one Holm adjustment covers: every comparison of the folder (default), each "
        "panel's own, or auto: the folder where its seeds could pass Holm over it, else panels",
    )
    comp.set_defaults(func=cmd_compare)
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
        return 130  # the shell's code for a command ended by SIGINT (128 + 2)
    except BrokenPipeError:
        # The reader went away (`zopg summarize DIR | head`): not an error of ours. Point stdout
        # at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        # A full disk, a read-only folder, a file that vanished: the store names the path.
        print(f"zopg: error: {err}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
