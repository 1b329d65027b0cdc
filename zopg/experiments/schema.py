"""The experiment file (TOML): its frozen dataclass schema and the validation of every field.

Everything is checked before anything runs: unknown keys, unknown names and out-of-range values
raise a ConfigError that names the file, the key and what is allowed.

    name = "paper_gridworld"          # results go to results/<name>/
    description = "..."
    seeds = 10
    budget_queries = 2_000_000        # shared by every budget-matched method
    budget_unit = "queries"           # or "judged_trajectories": what budget_queries counts
    policy = "tabular"                # or "mlp", "gaussian"; [policy_params] for its fields
    [[envs]]                          # id plus any field override, e.g. slip = 0.2
    id = "gridworld/open-5x5"
    policy = "gaussian"               # optional: this env's policy (and policy_params)
    [[links]]                         # name plus the link's parameters, e.g. scale = 1.0, and
                                      # an optional label (to have one link twice)
    name = "bradley-terry"
    [teacher]                         # B-Pref imperfections (zopg.preferences.Teacher fields)
    [teacher.utility]                 # the human's utility u(τ): name plus its parameters
    name = "waypoint-goal"            # (zopg.preferences.make_utility; default: the return)
    waypoint = [1, 3]
    [evaluation]                      # points, chunk_iterations, episodes, threshold (Evaluation)
    [methods.zpg]                     # label; algorithm = registry name; config fields
    algorithm = "zpg"
    envs = ["gridworld/open-5x5"]     # optional: run this method on these envs only
    [[sweep]]                         # up to two: every combination of their values is run
    field = "envs.0.slip"             # any --set path
    values = [0.0, 0.1, 0.2]
    label = "slip"                    # optional column name (default: the path's last part)

An [[envs]] entry may carry a `label` (default: its id) so that one env id can appear twice
with different fields; runs, metrics.csv and method `envs` lists use the label. Reading a file
(includes, `--set`, then building every run once) is zopg.experiments.loading; `--set` paths are
zopg.experiments.overrides; the runs themselves zopg.experiments.build.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math

from zopg.envs import registered_envs
from zopg.errors import INT32_MAX, did_you_mean
from zopg.experiments.overrides import set_path
from zopg.experiments.tomlfile import (
    check_keys,
    fail,
    key_text,
    positive_int,
    table_list,
)
from zopg.policies import is_known_policy, policy_names
from zopg.preferences import link_names

TOP_KEYS = {
    "name",
    "description",
    "seeds",
    "budget_queries",
    "budget_unit",
    "policy",
    "policy_params",
    "envs",
    "links",
    "teacher",
    "evaluation",
    "methods",
    "sweep",
    # Tuned settings from TOML fragments (zopg tune), and how to tune ([tune], read by
    # zopg.tuning.tune); `provenance` arrives with a fragment and only documents it.
    "include",
    "tune",
    "provenance",
}
EVALUATION_KEYS = {"points", "chunk_iterations", "episodes", "threshold"}
# Reserved in [[envs]]: not env field overrides.
ENV_KEYS = ("policy", "policy_params", "label", "utility")
SWEEP_KEYS = {"field", "values", "label"}
BUDGET_UNITS = ("queries", "judged_trajectories")
MAX_SWEEPS = 2
# More runs than any benchmark here has (the largest, about 100) by far, and few enough that
# planning them takes seconds.
MAX_RUNS = 10_000


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    id: str
    overrides: dict
    policy: str | None = None  # None: the experiment's policy
    policy_params: dict | None = None  # None: the experiment's policy_params
    label: str | None = None  # None: the id
    utility: dict | str | None = None  # None: the teacher's (a layout-specific utility)

    @property
    def name(self) -> str:
        """How runs, metrics.csv and method `envs` lists name this env."""
        return self.label or self.id

    @property
    def slug(self) -> str:
        return self.name.replace("/", "-")


@dataclasses.dataclass(frozen=True)
class LinkSpec:
    name: str
    params: dict
    label: str | None = None  # None: the name

    @property
    def panel(self) -> str:
        """How runs, metrics.csv and method `links` lists name this teacher link."""
        return self.label or self.name


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    label: str
    algorithm: str
    params: dict
    envs: tuple[str, ...] | None = None  # None: every env of the experiment
    links: tuple[str, ...] | None = None  # None: every teacher link of the experiment

    def runs_on(self, env_name: str, link_name: str | None = None) -> bool:
        return (self.envs is None or env_name in self.envs) and (
            link_name is None or self.links is None or link_name in self.links
        )


@dataclasses.dataclass(frozen=True)
class Evaluation:
    points: int = 100  # logged iterations per run (always including the last)
    chunk_iterations: int = 500  # iterations per compiled call: progress, checkpoints, resume
    # Envs without an exact model are scored by the Monte Carlo return of this many fresh
    # episodes per seed (zopg.evaluation; outside every budget), at about `points` iterations.
    episodes: int = 100
    # Optional: report the queries each seed needs to first reach this normalised score (the
    # value, for Monte Carlo runs), in summary.json and, with sweeps, against the swept values.
    threshold: float | None = None


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """One swept field: a --set path, its values, and the column name of the swept value."""

    field: str
    values: tuple
    label: str


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    seeds: int
    budget_queries: int
    policy: str
    policy_params: dict
    envs: tuple[EnvSpec, ...]
    links: tuple[LinkSpec, ...]
    teacher: dict
    evaluation: Evaluation
    methods: tuple[MethodSpec, ...]
    source: str = ""
    budget_unit: str = "queries"
    sweeps: tuple[SweepSpec, ...] = ()
    raw: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("source")
        data.pop("raw")
        return data

    def points(self) -> list[dict]:
        """Every combination of the swept values as {label: value}; [{}] without sweeps."""
        combos = itertools.product(*(s.values for s in self.sweeps))
        return [dict(zip((s.label for s in self.sweeps), c, strict=True)) for c in combos]

    def variant(self, point: dict) -> Experiment:
        """The experiment with one sweep point's values set (itself when there is none)."""
        if not point:
            return self
        raw = copy.deepcopy(self.raw)
        for sweep in self.sweeps:
            set_path(raw, sweep.field, point[sweep.label], f"{self.source}: sweep {sweep.field}")
        raw.pop("sweep", None)
        return dataclasses.replace(
            parse_experiment(raw, self.source), sweeps=self.sweeps, raw=self.raw
        )

    def config_hash(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# -- validation ---------------------------------------------------------------------------------


def parse_experiment(raw: dict, source: str) -> Experiment:
    """The Experiment of raw TOML data (includes and overrides already applied), every field
    checked; the runs are built (and so checked) by zopg.experiments.build."""
    check_keys(source, "", raw, TOP_KEYS)
    for required in ("name", "budget_queries", "envs", "links", "methods"):
        if required not in raw:
            raise fail(source, required, "is required")
    name = raw["name"]
    if not isinstance(name, str) or not _file_name(name):
        raise fail(source, "name", f"= {name!r}: must be a folder name: {FILE_NAME}")
    policy = raw.get("policy", "tabular")
    if not is_known_policy(policy):
        allowed = f"{', '.join(policy_names())}, or 'package.module:NAME'"
        raise fail(source, "policy", f"= {policy!r}: allowed: {allowed}")
    evaluation = raw.get("evaluation", {})
    check_keys(source, "evaluation", evaluation, EVALUATION_KEYS)
    threshold = evaluation.get("threshold")
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float)
    ):
        raise fail(source, "evaluation.threshold", f"= {threshold!r}: must be a number")
    if threshold is not None and not _is_finite(threshold):
        # NaN would never be reached; an int too big for a float (10**400) is no score.
        raise fail(source, "evaluation.threshold", f"= {threshold!r}: must be a finite number")
    counts = {k: v for k, v in evaluation.items() if k != "threshold"}
    evaluation = Evaluation(
        **{k: positive_int(source, f"evaluation.{k}", v) for k, v in counts.items()},
        threshold=None if threshold is None else float(threshold),
    )
    if evaluation.episodes < 2:
        # A standard error needs two episodes at least.
        raise fail(source, "evaluation.episodes", f"= {evaluation.episodes}: must be >= 2")
    env_tables = table_list(source, "envs", raw["envs"], "id")
    envs = tuple(_env_spec(source, i, e) for i, e in enumerate(env_tables))
    env_ids = [e.name for e in envs]
    if len(set(env_ids)) != len(env_ids):
        raise fail(
            source, "envs", f"each env id (or label) may appear once; got {env_ids}; give a label"
        )
    links = tuple(
        _link_spec(source, i, l)
        for i, l in enumerate(table_list(source, "links", raw["links"], "name"))
    )
    panels = [link.panel for link in links]
    if len(set(panels)) != len(panels):
        raise fail(source, "links", f"each link name (or label) may appear once; got {panels}")
    methods_raw = raw["methods"]
    if not isinstance(methods_raw, dict) or not methods_raw:
        raise fail(source, "methods", "must contain at least one [methods.LABEL] table")
    sweeps = _sweeps(source, raw.get("sweep", []))
    count = len(methods_raw) * len(envs) * len(links) * math.prod(len(w.values) for w in sweeps)
    if count > MAX_RUNS:
        # Checked before the methods are parsed: 300,000 method tables would take minutes.
        raise fail(
            source,
            "methods",
            f"{count} runs (methods x envs x links x sweep points): more than {MAX_RUNS}; "
            "split the experiment into several files",
        )
    methods = []
    for label, table in methods_raw.items():
        if not _file_name(label):
            where = f"methods.{key_text(label)}"
            raise fail(source, where, f"the label must be a file name: {FILE_NAME}")
        if not isinstance(table, dict) or "algorithm" not in table:
            # Most often a misspelt label in --set (methods.zpgg.x=3 makes a new table).
            others = [m for m in methods_raw if m != label]
            raise fail(
                source,
                f"methods.{key_text(label)}",
                f"no 'algorithm' key{did_you_mean(label, others)}; a method table names its "
                f"algorithm (methods in this file: {', '.join(others) or 'none'})",
            )
        params = {k: v for k, v in table.items() if k not in ("algorithm", "envs", "links")}
        link_names = [link.panel for link in links]
        only = {}
        for key, known, what in (
            ("envs", env_ids, "env ids (labels)"),
            ("links", link_names, "link names"),
        ):
            chosen = table.get(key)
            if chosen is not None and (
                not isinstance(chosen, list)
                or not chosen
                # Names are strings: anything else (a list, a table) is not one of them.
                or not all(isinstance(c, str) and c in known for c in chosen)
            ):
                raise fail(
                    source,
                    f"methods.{label}.{key}",
                    f"= {chosen!r}: must be a non-empty list of {what} of this experiment "
                    f"({', '.join(known)})",
                )
            only[key] = None if chosen is None else tuple(chosen)
        methods.append(MethodSpec(label=label, algorithm=table["algorithm"], params=params, **only))
    teacher = raw.get("teacher", {})
    if not isinstance(teacher, dict):
        raise fail(source, "teacher", "must be a table")
    policy_params = raw.get("policy_params", {})
    if not isinstance(policy_params, dict):
        raise fail(source, "policy_params", "must be a table")
    return Experiment(
        name=name,
        description=str(raw.get("description", "")),
        # Seeds are split into a JAX array of keys, sized in int32.
        seeds=positive_int(source, "seeds", raw.get("seeds", 10), high=INT32_MAX),
        budget_queries=positive_int(source, "budget_queries", raw["budget_queries"]),
        budget_unit=_budget_unit(source, raw.get("budget_unit", "queries")),
        policy=policy,
        policy_params=policy_params,
        envs=envs,
        links=links,
        teacher=teacher,
        evaluation=evaluation,
        methods=tuple(methods),
        source=source,
        sweeps=sweeps,
        raw=raw,
    )


# Labels and the experiment's name become file and folder names (results/<name>/runs/<method>__
# <env>__<link>.json): "../x" would write outside the results folder, a NUL fails the write.
FILE_NAME = "not empty or only dots, no '/' or control characters, at most 64 characters"
# A run's files are named <method>__<env>__<link>[__<swept>=<value>...].json.lock: with three
# labels of at most 64 bytes they stay far below the 255 bytes most file systems allow.
MAX_LABEL_BYTES = 64


def _file_name(text: str) -> bool:
    return (
        bool(text.strip("."))
        and len(text.encode()) <= MAX_LABEL_BYTES
        and "/" not in text
        and not any(ord(c) < 32 or ord(c) == 127 for c in text)
    )


def _is_finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an int too big for a float
        return False


def _sweeps(source: str, tables) -> tuple[SweepSpec, ...]:
    """The [[sweep]] tables: at most two, each a field path with a non-empty list of values."""
    if not isinstance(tables, list) or len(tables) > MAX_SWEEPS:
        raise fail(source, "sweep", f"must be at most {MAX_SWEEPS} [[sweep]] tables")
    sweeps = []
    for i, table in enumerate(tables):
        where = f"sweep[{i}]"
        check_keys(source, where, table, SWEEP_KEYS)
        field, values = table.get("field"), table.get("values")
        if not isinstance(field, str) or not field:
            raise fail(source, f"{where}.field", f"= {field!r}: must be a --set path")
        if field.split(".")[0] in ("name", "sweep", "seeds"):
            raise fail(source, f"{where}.field", f"= {field!r}: cannot be swept")
        if not isinstance(values, list) or not values:
            raise fail(source, f"{where}.values", f"= {values!r}: must be a non-empty list")
        if len({repr(v) for v in values}) != len(values):
            raise fail(source, f"{where}.values", f"= {values!r}: must not repeat a value")
        label = table.get("label", field.split(".")[-1])
        if not isinstance(label, str) or not label.isidentifier():
            raise fail(source, f"{where}.label", f"= {label!r}: must be a plain name")
        sweeps.append(SweepSpec(field=field, values=tuple(values), label=label))
    labels = [s.label for s in sweeps]
    if len(set(labels)) != len(labels):
        raise fail(source, "sweep", f"labels must differ; got {labels} (set label = ...)")
    return tuple(sweeps)


def _link_spec(source: str, index: int, table: dict) -> LinkSpec:
    name, label = table["name"], table.get("label")
    if not isinstance(name, str):
        raise fail(
            source, f"links[{index}].name", f"= {name!r}: allowed: {', '.join(link_names())}"
        )
    if label is not None and (not isinstance(label, str) or not _file_name(label)):
        where = f"links[{index}].label"
        raise fail(source, where, f"= {label!r}: must be a file name: {FILE_NAME}")
    params = {k: v for k, v in table.items() if k not in ("name", "label")}
    return LinkSpec(name=name, params=params, label=label)


def _env_spec(source: str, index: int, table: dict) -> EnvSpec:
    if not isinstance(table["id"], str):
        raise fail(
            source,
            f"envs[{index}].id",
            f"= {table['id']!r}: must be an environment id: {', '.join(registered_envs())}",
        )
    policy, params = table.get("policy"), table.get("policy_params")
    if policy is not None and not is_known_policy(policy):
        allowed = f"{', '.join(policy_names())}, or 'package.module:NAME'"
        raise fail(source, f"envs[{index}].policy", f"= {policy!r}: allowed: {allowed}")
    if params is not None and not isinstance(params, dict):
        raise fail(source, f"envs[{index}].policy_params", "must be a table")
    label = table.get("label")
    if label is not None and (
        not isinstance(label, str) or not _file_name(label.replace("/", "-")) or "__" in label
    ):
        where = f"envs[{index}].label"
        # A '/' is fine here: the env's slug replaces it.
        message = "must be a name without '__' or control characters, not empty or only dots"
        raise fail(source, where, f"= {label!r}: {message}")
    reserved = ("id", *ENV_KEYS)
    overrides = {k: v for k, v in table.items() if k not in reserved}
    return EnvSpec(
        id=table["id"],
        overrides=overrides,
        policy=policy,
        policy_params=params,
        label=label,
        utility=table.get("utility"),
    )


def _budget_unit(source: str, unit) -> str:
    if unit not in BUDGET_UNITS:
        raise fail(source, "budget_unit", f"= {unit!r}: must be one of {', '.join(BUDGET_UNITS)}")
    return unit
