"""Run every rate sweep in benchmarks/rates/*.toml; write results/rates/rates.json and figures.

    python -m zopg.rates                  # the full run (committed results)
    python -m zopg.rates --quick          # small grids and few seeds, to results/rates/quick/
    python -m zopg.rates --only bias_vs_mu/exact --resume   # one sweep, the rest kept

Each sweep's record holds its slope, 95% seed-bootstrap CI, the §8 prediction (and our own
expected slope where it differs), the window, seeds and a config hash; see zopg.rates.analysis.
A record is reused (--resume) or kept (--only) by its sweep's name or, for a renamed sweep, by
its config hash; its name, note and figure group are refreshed from the sweep file, since they
do not change the numbers.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

from zopg import provenance
from zopg.errors import ConfigError
from zopg.experiments.library import library_dir
from zopg.rates import plots as rate_plots
from zopg.rates import sweeps as rates
from zopg.rates.analysis import analyse, analyse_family
from zopg.store import read_json, write_json_atomic

# The sweep files ship with the experiments (benchmarks/rates/ in a clone); results go under the
# current folder, as every zopg command's do.
SWEEPS = library_dir() / "rates"
RESULTS = Path("results") / "rates"


# Files in the order of science.md §8; any other sweep file follows alphabetically.
ORDER = ("m", "mu", "n", "d", "t", "blocks", "sign")


def rate_files() -> list[Path]:
    def position(path: Path):
        stem = path.stem.removeprefix("rates_")
        return (ORDER.index(stem) if stem in ORDER else len(ORDER), stem)

    return sorted(SWEEPS.glob("*.toml"), key=position)


def load_all(quick: bool):
    """(specs, families) over every sweep file, in ORDER."""
    specs, families = [], []
    for path in rate_files():
        file_specs, file_families = rates.load_specs(path, quick=quick)
        specs += file_specs
        families += file_families
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep names must be unique across the sweep files: {names}")
    return specs, families


def previous_record(spec, existing: dict) -> dict | None:
    """This sweep's record in existing: by name, else (a renamed sweep) the one with its hash."""
    if spec.name in existing:
        return existing[spec.name]
    same = [r for r in existing.values() if r.get("config_hash") == spec.config_hash()]
    return same[0] if len(same) == 1 else None


def relabelled(record: dict, spec) -> dict:
    """record with the fields that do not change its numbers taken from the sweep file."""
    return {**record, "name": spec.name, "note": spec.note, "group": spec.group}


def selector(only: str | None, names) -> Callable[[str], bool]:
    """Which sweeps --only runs: the one so named, else every sweep whose name contains it."""
    if only is None:
        return lambda name: True
    if only in names:
        return lambda name: name == only
    return lambda name: only in name


def run_spec(spec, **code_only) -> dict:
    """Measure one sweep and fit it: its record, with the measuring time."""
    start = time.perf_counter()
    record = analyse(spec, rates.measure(spec, **code_only))
    record["runtime_s"] = time.perf_counter() - start
    return record


def summary_line(record: dict) -> str:
    if record.get("slope") is None and record.get("floor_fit") is None:
        points = ", ".join(
            f"{x:g}: {y:.3g}" for x, y in zip(record["grid"], record["curve"], strict=True)
        )
        return f"{record['name']:40} curve only ({points})"
    if record.get("slope") is None:
        floor = record["floor_fit"]
        low, high = floor.get("floor_ci", (math.nan, math.nan))
        theory = [f"{k} {v:.3e}" for k, v in record["theory"].items() if k.endswith("floor")]
        return (
            f"{record['name']:40} floor {floor.get('floor', math.nan):.3e} [{low:.3e}, "
            f"{high:.3e}]  theory: {', '.join(theory)}"
        )
    low, high = record["slope_ci"]
    target = record["expected"] if record.get("expected") is not None else record["prediction"]
    inside = "in CI" if target is not None and low <= target <= high else "NOT in CI"
    pred = "" if target is None else f"  target {target:+.2f} {inside}"
    return f"{record['name']:40} slope {record['slope']:+.3f} [{low:+.3f}, {high:+.3f}]{pred}"


def write_report(path: Path, records: dict, families: dict, quick: bool, started: float) -> None:
    summary = []
    for record in records.values():
        keys = ("name", "x", "slope", "slope_ci", "prediction", "prediction_in_ci", "expected")
        keys += ("expected_in_ci", "window", "seeds", "config_hash")
        entry = {k: record.get(k) for k in keys}
        if "floor_fit" in record:
            entry["floor"] = record["floor_fit"]["floor"]
            entry["floor_ci"] = record["floor_fit"]["floor_ci"]
            theory = {k: v for k, v in record["theory"].items() if k.endswith("floor")}
            entry["theory_floor"] = theory
        summary.append(entry)
    report = {
        "benchmark": "rates",
        "description": "log-log slopes of §8's rates on tabular GridWorld with exact V and ∇V; "
        "95% percentile bootstrap CIs over seeds (whole seeds resampled, never grid points)",
        "quick": quick,
        **provenance.environment(),
        "summary": summary,
        "families": families,
        "sweeps": records,
        # Wall time of this invocation (sweeps reused by --resume cost nothing here) and the
        # sum of every sweep's own measurement time, wherever it was measured.
        "total_s": time.perf_counter() - started,
        "measured_s": sum(r.get("runtime_s", 0.0) for r in records.values()),
    }
    write_json_atomic(path, report)


def plot_all(out: Path, records: dict, specs) -> None:
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in figures.glob("*.png"):  # figures of sweeps that no longer exist
        stale.unlink()
    for record in records.values():
        rate_plots.plot_sweep(record, figures / f"{record['name'].replace('/', '__')}.png")
    groups: dict[str, list] = {}
    for spec in specs:
        if spec.name in records:
            groups.setdefault(spec.group or spec.quantity, []).append(records[spec.name])
    for name, group in groups.items():
        if len(group) > 1:
            labels = [r["name"].split("/", 1)[-1] for r in group]
            rate_plots.plot_group(group, figures / f"{name.replace('/', '__')}.png", name, labels)
    rate_plots.plot_overview(list(records.values()), out / "rates.png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grids and seeds (development)")
    parser.add_argument(
        "--only", help="run only the sweep of this name, or those whose name contains this text"
    )
    parser.add_argument("--out", type=Path, help="output folder (default results/rates[/quick])")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse sweeps already in the output's rates.json with the same config hash",
    )
    args = parser.parse_args(argv)
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    path = out / "rates.json"
    try:
        specs, families = load_all(args.quick)
    except ConfigError as err:
        parser.error(str(err))
    existing = read_json(path).get("sweeps", {}) if path.exists() else {}
    for record in existing.values():  # records written before "reduce" was stored
        if record.get("quantity") in rates.QUANTITIES:
            record.setdefault("reduce", rates.QUANTITIES[record["quantity"]].reduce)
    started = time.perf_counter()
    selected = selector(args.only, {s.name for s in specs})
    # With --only the other sweeps keep what the file has, so --only updates it in place.
    records = {}
    if args.only:
        for spec in specs:
            old = previous_record(spec, existing)
            if old is not None:
                records[spec.name] = relabelled(old, spec)
    for spec in specs:
        if not selected(spec.name):
            continue
        old = previous_record(spec, existing)
        if args.resume and old is not None and old.get("config_hash") == spec.config_hash():
            records[spec.name] = relabelled(old, spec)
            print(f"{summary_line(records[spec.name])}  (reused)", flush=True)
            continue
        records[spec.name] = run_spec(spec)
        print(
            f"{summary_line(records[spec.name])}  ({records[spec.name]['runtime_s']:.0f} s)",
            flush=True,
        )
        # Written after every sweep, so an interrupted run can --resume.
        write_report(path, records, {}, args.quick, started)
    by_name = {s.name: s for s in specs}
    family_records = {}
    for family in families:
        if not set(family.members) <= set(records):
            continue
        family_records[family.name] = analyse_family(family, by_name, records)
        f = family_records[family.name]
        print(
            f"{family.name:40} floor slope {f['slope']:+.3f} "
            f"[{f['slope_ci'][0]:+.3f}, {f['slope_ci'][1]:+.3f}]  prediction {f['prediction']}"
        )
    write_report(path, records, family_records, args.quick, started)
    plot_all(out, records, specs)
    print(f"wrote {path} in {time.perf_counter() - started:.0f} s")
    return 0
