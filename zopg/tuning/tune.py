"""`zopg tune EXP`: the same number of trials for every budget-matched method, scored on tuning
envs that are not the evaluation envs, and the chosen configuration written as a TOML fragment.

An experiment's `[tune]` table says how:

    [tune]
    trials = 16            # per method, the same for every method
    seed = 0               # the sampler's and the tuning seeds' root
    seeds = 3              # training seeds per trial and tuning env
    link = "bradley-terry" # the teacher panel to tune under (default: the experiment's first)
    methods = ["zpg"]      # default: every budget-matched method of the experiment
    fragment = "tuned/NAME.toml"   # where the choice goes, beside the experiment file
    [tune.choices.rm-ppo]  # optional: other choices for a structural dimension of a method's
    num_pairs = [10, 20, 50]       # space, for a budget its declared choices do not fit
    [tune.ranges.zpg]      # optional: another range for a continuous dimension, for a problem
    step_size = [1e-6, 1e-2]       # whose scale the declared range misses (the token family)
    [[tune.envs]]          # tuning envs, written like [[envs]]; none may equal an evaluation env
    id = "gridworld/random"
    seed = 1

A trial's score is the benchmark's statistic: the final normalised score (the final value where
the env has no exact model), averaged over the tuning envs, mean over seeds, with a 95% seed
bootstrap CI. Trials and choices go to results/tune/NAME/.

A searched field that the experiment's own method table sets (control.toml's RM+PPO pairs per
round, sized for its small budget) is held at that value in every trial, logged, recorded in the
provenance and left out of the fragment (which may not set what the experiment sets). The other
dimensions keep the values the seeded sampler draws for the full space.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import time
from pathlib import Path

import jax
import numpy as np

from zopg import store
from zopg.algorithms import registry
from zopg.algorithms.search_space import SearchSpace
from zopg.analysis.stats import bootstrap_ci
from zopg.errors import ConfigError
from zopg.exact import normalized_score
from zopg.experiments.build import build_run, built_runs
from zopg.experiments.loading import load_experiment
from zopg.experiments.schema import parse_experiment
from zopg.experiments.tomlfile import check_keys, fail, positive_int, table_list
from zopg.tuning import trials as trial_runs

TUNE_KEYS = {
    "trials",
    "seed",
    "seeds",
    "link",
    "methods",
    "fragment",
    "envs",
    "choices",
    "ranges",
}


@dataclasses.dataclass(frozen=True)
class TuneSpec:
    trials: int
    seed: int
    seeds: int
    link: str
    methods: tuple[str, ...]
    fragment: Path
    envs: tuple[dict, ...]
    # method label -> {field: choices} replacing a structural dimension's declared choices.
    choices: dict = dataclasses.field(default_factory=dict)
    # method label -> {field: (low, high)} replacing a continuous dimension's declared range.
    ranges: dict = dataclasses.field(default_factory=dict)


def check_fragment_path(source: str, fragment: str) -> None:
    """The fragment is written inside the experiment's folder (a subfolder such as tuned/), never
    over an experiment file: `zopg tune` may only write where tuned settings live."""
    folder = Path(source).resolve().parent
    target = (folder / fragment).resolve()
    if Path(fragment).is_absolute() or not target.is_relative_to(folder):
        raise fail(source, "tune.fragment", f"= {fragment!r}: must be a path inside {folder.name}/")
    if target == Path(source).resolve() or target.parent == folder:
        # A fragment beside the experiments could overwrite one (or be taken for one).
        raise fail(
            source,
            "tune.fragment",
            f"= {fragment!r}: must be in a subfolder (e.g. tuned/), not beside the experiments",
        )


def parse_tune(experiment, trials: int | None = None, methods=None) -> TuneSpec:
    """The experiment's [tune] table, checked (every error names the key)."""
    source, raw = experiment.source, experiment.raw
    table = raw.get("tune")
    if table is None:
        raise fail(source, "tune", "no [tune] table: say how to tune (see `zopg tune --help`)")
    check_keys(source, "tune", table, TUNE_KEYS)
    count = positive_int(
        source, "tune.trials", table.get("trials", 16) if trials is None else trials
    )
    seed = positive_int(source, "tune.seed", table.get("seed", 0), low=0)
    seeds = positive_int(source, "tune.seeds", table.get("seeds", 3))
    panels = [link.panel for link in experiment.links]
    link = table.get("link", panels[0])
    if link not in panels:
        raise fail(
            source, "tune.link", f"= {link!r}: must be one of this experiment's links: {panels}"
        )
    matched = [m.label for m in experiment.methods if not registry.get(m.algorithm).reference]
    chosen = table.get("methods", matched) if methods is None else methods
    if not isinstance(chosen, list | tuple) or not chosen:
        raise fail(source, "tune.methods", f"= {chosen!r}: must be a non-empty list of methods")
    by_label = {m.label: m for m in experiment.methods}
    for label in chosen:
        if label not in by_label:
            raise fail(
                source,
                "tune.methods",
                f"{label!r} is not a method of this experiment: {sorted(by_label)}",
            )
        algorithm = registry.get(by_label[label].algorithm)
        if algorithm.search_space is None:
            raise fail(
                source, "tune.methods", f"{label!r}: {algorithm.name} declares no search space"
            )
    fragment = table.get("fragment", f"tuned/{experiment.name}.toml")
    if not isinstance(fragment, str) or not fragment.endswith(".toml"):
        raise fail(source, "tune.fragment", f"= {fragment!r}: must be a path ending in .toml")
    check_fragment_path(source, fragment)
    envs = tuple(table_list(source, "tune.envs", table.get("envs"), "id"))
    # Choices and ranges may name any method the [tune] table tunes, so `--methods A` (a
    # subset) still reads a file that sets them for B as well.
    declared = table.get("methods", matched)
    declared = declared if isinstance(declared, list | tuple) else []
    tunable = list(chosen) + [
        m
        for m in declared
        if m not in chosen
        and m in by_label
        and registry.get(by_label[m].algorithm).search_space is not None
    ]
    choices = parse_choices(experiment, table.get("choices", {}), tunable, by_label)
    ranges = parse_choices(experiment, table.get("ranges", {}), tunable, by_label, "ranges")
    spec = TuneSpec(
        count,
        seed,
        seeds,
        link,
        tuple(chosen),
        Path(source).parent / fragment,
        envs,
        choices,
        ranges,
    )
    check_held_out(experiment, spec)
    # Everything a trial could refuse, refused now: each method's every structural choice,
    # built on the tuning envs (abstractly; nothing compiles).
    for label in spec.methods:
        space = method_space(by_label[label], spec)
        structural = [d.field for d in space.dimensions if not d.traced]
        seen = set()
        for point in trial_points(by_label[label], space, spec):
            shape = tuple(point[f] for f in structural)
            if shape not in seen:  # traced values are range-checked by the space itself
                seen.add(shape)
                built_runs(tuning_experiment(experiment, spec, label, point))
    return spec


def parse_choices(experiment, table, tuned, by_label, kind: str = "choices") -> dict:
    """[tune.choices.METHOD] tables (kind "choices"): for a structural dimension of a tuned
    method's space, the choices this experiment searches instead of the declared ones (e.g.
    RM+PPO's pairs per round at a budget of a few thousand queries, where the declared 100-1000
    do not fit). [tune.ranges.METHOD] tables (kind "ranges"): for a continuous dimension, the
    range [low, high] searched instead (its scale and tracing kept), for a problem whose scale
    the declared range misses."""
    source = experiment.source
    if not isinstance(table, dict):
        raise fail(source, f"tune.{kind}", f"must be a table of [tune.{kind}.METHOD] tables")
    result = {}
    for label, fields in table.items():
        where = f"tune.{kind}.{label}"
        if isinstance(fields, dict):
            # `ppo.learning_rate = [...]` arrives as a nested table; a dimension names it dotted.
            fields = _dotted(fields)
        if label not in tuned:
            raise fail(source, where, f"{label!r} is not a tuned method: {sorted(tuned)}")
        space = registry.get(by_label[label].algorithm).search_space
        wanted = "with choices" if kind == "choices" else "with a range"
        allowed = {d.field: d for d in space.dimensions if bool(d.choices) == (kind == "choices")}
        if not isinstance(fields, dict) or not fields:
            what = "[choices]" if kind == "choices" else "[low, high]"
            raise fail(source, where, f"must be a table of field = {what}")
        for field, values in fields.items():
            if field not in allowed:
                raise fail(
                    source,
                    f"{where}.{field}",
                    f"is not a dimension {wanted} in {label}'s search space: "
                    f"{', '.join(sorted(allowed)) or 'none'}",
                )
            if kind == "ranges":
                if not (
                    isinstance(values, list)
                    and len(values) == 2
                    and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
                ):
                    raise fail(
                        source,
                        f"{where}.{field}",
                        f"= {values!r}: must be [low, high], two numbers",
                    )
            elif (
                not isinstance(values, list)
                or not values
                or len({repr(v) for v in values}) != len(values)
            ):
                raise fail(
                    source, f"{where}.{field}", f"= {values!r}: must be a list of distinct values"
                )
        result[label] = {
            field: tuple(float(v) for v in values) if kind == "ranges" else tuple(values)
            for field, values in fields.items()
        }
        try:
            choices, ranges = (result[label], {}) if kind == "choices" else ({}, result[label])
            replaced_space(space, choices, ranges).check(
                registry.get(by_label[label].algorithm).config, where
            )
        except ConfigError as err:
            raise fail(source, where, str(err)) from None
    return result


def _dotted(table: dict, prefix: str = "") -> dict:
    """{"ppo": {"learning_rate": x}} -> {"ppo.learning_rate": x}."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict) and value:
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def replaced_space(space: SearchSpace, choices: dict, ranges: dict | None = None) -> SearchSpace:
    """The space with the given dimensions' choices, or (low, high) ranges, replaced."""
    ranges = ranges or {}

    def replaced(d):
        if d.field in choices:
            return dataclasses.replace(d, choices=choices[d.field])
        if d.field in ranges:
            low, high = ranges[d.field]
            return dataclasses.replace(d, low=low, high=high)
        return d

    return SearchSpace(*(replaced(d) for d in space.dimensions))


def method_space(method, spec: TuneSpec) -> SearchSpace:
    """The space a method's trials are drawn from: its algorithm's, with the experiment's
    [tune.choices] and [tune.ranges] for it."""
    space = registry.get(method.algorithm).search_space
    return replaced_space(
        space, spec.choices.get(method.label, {}), spec.ranges.get(method.label, {})
    )


def fixed_by_experiment(method, space) -> dict:
    """{field: value} of the searched fields that the method's own table sets (dotted fields
    through nested tables): the experiment fixed them, so trials keep them."""
    fixed = {}
    for dim in space.dimensions:
        table = method.params
        *heads, last = dim.field.split(".")
        for head in heads:
            table = table.get(head) if isinstance(table, dict) else None
        if isinstance(table, dict) and last in table:
            fixed[dim.field] = table[last]
    return fixed


def trial_points(method, space, spec: TuneSpec) -> list[dict]:
    """The method's trials: the seeded sample of its full space, with the fields the experiment
    fixes set to the experiment's values (so every other dimension is drawn as for a method
    whose experiment fixes nothing)."""
    fixed = fixed_by_experiment(method, space)
    return [{**point, **fixed} for point in space.sample(spec.trials, spec.seed)]


def space_record(method, space) -> str:
    """The space as trials.json and the provenance record it, with any fields held fixed."""
    fixed = fixed_by_experiment(method, space)
    held = "; ".join(f"{f} = {_toml_value(v)}" for f, v in fixed.items())
    return space.describe() + (f"; fixed by the experiment: {held}" if held else "")


def check_held_out(experiment, spec: TuneSpec) -> None:
    """No tuning env may be an evaluation env (same built parameters: the same layout, horizon,
    slip and rewards, or the same physics), however it is named."""
    from zopg.envs import make

    evaluation = []
    for env in experiment.envs:
        evaluation.append((env.name, _fingerprint(*make(env.id, **env.overrides))))
    for i, table in enumerate(spec.envs):
        overrides = {
            k: v
            for k, v in table.items()
            if k not in ("id", "label", "policy", "policy_params", "utility")
        }
        try:
            built = make(table["id"], **overrides)
        except ConfigError as err:
            raise fail(experiment.source, f"tune.envs[{i}]", str(err)) from None
        mark = _fingerprint(*built)
        for name, other in evaluation:
            if mark == other:
                raise fail(
                    experiment.source,
                    f"tune.envs[{i}]",
                    f"{table['id']} is the evaluation env {name}: "
                    "tune on envs you do not evaluate on",
                )


def _fingerprint(env, params) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return (type(env).__name__, str(treedef), tuple(np.asarray(x).tobytes() for x in leaves))


def tuning_experiment(experiment, spec: TuneSpec, method_label: str, values: dict):
    """The experiment as tuning runs it: the tuning envs, one link, the tuning seeds, one
    method with a trial's values set."""
    raw = copy.deepcopy(experiment.raw)
    for key in ("tune", "sweep", "include", "provenance"):
        raw.pop(key, None)
    # Labelled by position: two tuning envs may share an id (random layouts of two seeds).
    raw["envs"] = [{"label": f"tune-{i}:{e['id']}", **e} for i, e in enumerate(spec.envs)]
    raw["links"] = [next(l for l in raw["links"] if (l.get("label") or l["name"]) == spec.link)]
    raw["seeds"] = spec.seeds
    method = copy.deepcopy(raw["methods"][method_label])
    method.pop("envs", None)
    method.pop("links", None)
    for field, value in values.items():
        table = method
        *heads, last = field.split(".")
        for head in heads:
            table = table.setdefault(head, {})
        table[last] = value
    raw["methods"] = {method_label: method}
    return parse_experiment(raw, experiment.source)


def run_trials(
    experiment, spec: TuneSpec, label: str, vmapped: bool = True, log=print
) -> list[dict]:
    """Every trial of one method: its values, per-env values [seeds] and its score."""
    method = next(m for m in experiment.methods if m.label == label)
    space = method_space(method, spec)
    points = trial_points(method, space, spec)
    structural = [d.field for d in space.dimensions if not d.traced]
    groups: dict[tuple, list[int]] = {}
    for i, point in enumerate(points):
        groups.setdefault(tuple(point[f] for f in structural), []).append(i)
    keys = trial_runs.seed_keys(spec.seed, spec.seeds)
    results = [{"method": label, "trial": i, "values": p, "envs": {}} for i, p in enumerate(points)]
    for members in groups.values():
        first = points[members[0]]
        # Built with the first member's values: validates the group's structure, derives the
        # budget-set field; the members' traced values then replace the continuous ones.
        variant = tuning_experiment(experiment, spec, label, first)
        for env_spec in variant.envs:
            run = build_run(variant, env_spec, variant.links[0], variant.methods[0])
            t0 = time.perf_counter()
            values = trial_runs.score_group(
                run, [points[i] for i in members], space.traced_fields, keys, vmapped
            )
            low, high = run.evaluator.bounds
            scores = (
                normalized_score(values, low, high)
                if np.isfinite(high - low) and high != low
                else values
            )
            for row, i in enumerate(members):
                results[i]["envs"][env_spec.name] = {
                    "value": values[row].tolist(),
                    "score": np.asarray(scores[row]).tolist(),
                    "exact": bool(np.isfinite(high - low) and high != low),
                }
            shape = ", ".join(f"{f} {first[f]}" for f in structural)
            log(
                f"  {label} [{shape}] on {env_spec.name}: {len(members)} trials in "
                f"{time.perf_counter() - t0:.1f}s"
            )
    for result in results:
        per_seed = np.mean([np.asarray(e["score"]) for e in result["envs"].values()], axis=0)
        result["per_seed"] = per_seed.tolist()
        finite = np.all(np.isfinite(per_seed))
        result["score"] = float(per_seed.mean()) if finite else None
        result["ci95"] = list(bootstrap_ci(per_seed, np.mean)) if finite else [None, None]
    return results


def best(results: list[dict]) -> dict:
    scored = [r for r in results if r["score"] is not None]
    if not scored:
        raise ConfigError(f"{results[0]['method']}: every trial diverged (non-finite scores)")
    return max(scored, key=lambda r: r["score"])


def fragment_text(experiment, spec: TuneSpec, chosen: dict[str, dict]) -> str:
    """The TOML fragment: each method's chosen values, then its provenance."""
    lines = [
        f"# Chosen by `zopg tune {experiment.name}`: {spec.trials} trials per method (sampler",
        f"# seed {spec.seed}), each scored with {spec.seeds} seeds on {len(spec.envs)} tuning envs "
        "that are not",
        f"# the evaluation envs, teacher {spec.link}. The experiment file includes this file;",
        "# rerun `zopg tune` rather than editing it.",
        "",
    ]
    methods = {m.label: m for m in experiment.methods}
    for label, result in chosen.items():
        space = method_space(methods[label], spec)
        fixed = fixed_by_experiment(methods[label], space)
        lines.append(f"[methods.{label}]")
        for field, value in result["values"].items():
            if field not in fixed:  # the experiment sets those itself
                lines.append(f"{field} = {_toml_value(value)}")
        lines.append("")
    for label, result in chosen.items():
        space = method_space(methods[label], spec)
        lines.append(f"[provenance.{label}]")
        lines.append(f"space = {_toml_value(space_record(methods[label], space))}")
        lines.append(f"trials = {spec.trials}")
        lines.append(f"seed = {spec.seed}")
        lines.append(f"trial = {result['trial']}")
        lines.append(f"score = {result['score']:.6g}")
        lines.append(f"ci95 = [{result['ci95'][0]:.6g}, {result['ci95'][1]:.6g}]")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # round-trips: the fragment holds exactly the value a trial ran with
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def method_fingerprint(experiment, spec: TuneSpec, method) -> str:
    """Everything a method's trials depend on: its table, the experiment's budget, policy,
    teacher and evaluation, the tuning envs, seeds and teacher link, and every trial's values.
    A stored trial is reused only under the same fingerprint."""
    space = method_space(method, spec)
    identity = {
        "algorithm": method.algorithm,
        "params": method.params,
        "budget": [experiment.budget_queries, experiment.budget_unit],
        "policy": [experiment.policy, experiment.policy_params],
        "teacher": experiment.teacher,
        "evaluation": dataclasses.asdict(experiment.evaluation),
        "tuning": [spec.seed, spec.seeds, spec.link, list(spec.envs)],
        "trials": trial_points(method, space, spec),
    }
    text = json.dumps(identity, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def previous_record(path: Path, experiment_name: str) -> dict:
    """The trials.json of an earlier `zopg tune` of this experiment, or {}."""
    try:
        old = store.read_json(path)
    except (OSError, ValueError):
        return {}
    if not isinstance(old, dict) or old.get("experiment") != experiment_name:
        return {}
    return old


def finished_methods(old: dict, record: dict) -> dict:
    """Methods whose trials an earlier tuning wrote completely under the same fingerprint:
    label -> trials, seconds."""
    done = {}
    fingerprints = old.get("fingerprints", {})
    for label, seconds in old.get("seconds", {}).items():
        if fingerprints.get(label) != record["fingerprints"].get(label):
            continue
        trials = [t for t in old.get("trials", []) if t.get("method") == label]
        if len(trials) == record["trials_per_method"]:
            done[label] = {"trials": trials, "seconds": seconds}
    return done


def merged_fragment(old_text: str, new_text: str, tuned, order) -> str:
    """The new fragment's header and the sections of the methods tuned now, with every other
    method's [methods.X] and [provenance.X] section kept as the old fragment had it."""

    def sections(text: str) -> tuple[str, dict]:
        head, found, key = [], {}, None
        for line in text.splitlines(keepends=True):
            match = re.match(r"\[(methods|provenance)\.([^\]]+)\]", line)
            if match:
                key = (match.group(1), match.group(2))
                found[key] = ""
            if key is None:
                head.append(line)
            else:
                found[key] += line
        return "".join(head), found

    head, new = sections(new_text)
    _, old = sections(old_text)
    parts = [head]
    for kind in ("methods", "provenance"):
        for label in order:
            key = (kind, label)
            block = new.get(key) if label in tuned else old.get(key)
            if block:
                parts.append(block if block.endswith("\n\n") else block.rstrip("\n") + "\n\n")
    return "".join(parts).rstrip("\n") + "\n"


def tune(path, out_dir=None, trials=None, methods=None, vmapped=True, log=print) -> dict:
    """Run `zopg tune`: every trial of every chosen method; write trials.json, choices and the
    fragment. Returns the record written to trials.json."""
    experiment = load_experiment(path, include=False)
    spec = parse_tune(experiment, trials, methods)
    out_dir = Path(out_dir) if out_dir else Path("results") / "tune" / experiment.name
    started = time.perf_counter()
    record = {
        "experiment": experiment.name,
        "source": experiment.source,
        "trials_per_method": spec.trials,
        "seed": spec.seed,
        "seeds": spec.seeds,
        "link": spec.link,
        "tuning_envs": list(spec.envs),
        "vmapped": vmapped,
        "spaces": {},
        "trials": [],
        "chosen": {},
        "seconds": {},
    }
    by_label = {m.label: m for m in experiment.methods}
    record["fingerprints"] = {
        label: method_fingerprint(experiment, spec, by_label[label]) for label in spec.methods
    }
    old = previous_record(out_dir / "trials.json", experiment.name)
    earlier = finished_methods(old, record)
    # Methods not tuned now keep what the earlier tuning stored for them (`--methods A` tunes A
    # and leaves the others' trials and choices as they were).
    for label in old.get("chosen", {}):
        if label in by_label and label not in spec.methods:
            record["spaces"][label] = old["spaces"].get(label)
            record["trials"].extend(t for t in old["trials"] if t.get("method") == label)
            record["chosen"][label] = old["chosen"][label]
            record["seconds"][label] = old["seconds"].get(label)
            record["fingerprints"][label] = old.get("fingerprints", {}).get(label)
    for label in spec.methods:
        method = by_label[label]
        record["spaces"][label] = space_record(method, method_space(method, spec))
        if label in earlier:
            # An interrupted `zopg tune` resumes: a method whose trials all finished under the
            # same fingerprint (its table, budget, trials, seeds, envs, teacher) is not rerun.
            log(f"{label}: {spec.trials} trials finished earlier, reused")
            results = earlier[label]["trials"]
            record["seconds"][label] = earlier[label]["seconds"]
        else:
            log(f"{label}: {spec.trials} trials ({record['spaces'][label]})")
            t0 = time.perf_counter()
            results = run_trials(experiment, spec, label, vmapped, log)
            record["seconds"][label] = time.perf_counter() - t0
        record["trials"].extend(results)
        chosen = best(results)
        record["chosen"][label] = chosen
        log(f"  chosen: trial {chosen['trial']} {chosen['values']} score {chosen['score']:.3f}")
        store.write_json_atomic(out_dir / "trials.json", record)  # as it goes: resumable by eye
    record["wall_s"] = time.perf_counter() - started
    record["out_dir"], record["fragment"] = str(out_dir), str(spec.fragment)
    store.write_json_atomic(out_dir / "trials.json", record)
    tuned_now = {label: record["chosen"][label] for label in spec.methods}
    text = fragment_text(experiment, spec, tuned_now)
    if spec.fragment.exists():
        text = merged_fragment(spec.fragment.read_text(), text, spec.methods, list(by_label))
    store.write_bytes_atomic(spec.fragment, text.encode())
    store.write_bytes_atomic(out_dir / "chosen.toml", text.encode())
    return record
