"""The experiment file (TOML): a frozen dataclass schema, `--set` overrides and full validation.

Everything is checked before anything runs: unknown keys, unknown names and out-of-range values
raise a ConfigError that names the file, the key and what is allowed.

    name = "paper_gridworld"          # results go to results/<name>/
    description = "..."
    seeds = 10
    budget_queries = 2_000_000        # shared by every budget-matched method
    policy = "tabular"                # or "mlp", "gaussian"; [policy_params] for its fields
    [[envs]]                          # id plus any field override, e.g. slip = 0.2
    id = "gridworld/open-5x5"
    policy = "gaussian"               # optional: this env's policy (and policy_params)
    [[links]]                         # name plus the link's parameters, e.g. scale = 1.0
    name = "bradley-terry"
    [teacher]                         # B-Pref imperfections (zopg.preferences.Teacher fields)
    [teacher.utility]                 # the human's utility u(τ): name plus its parameters
    name = "waypoint-goal"            # (zopg.preferences.make_utility; default: the return)
    waypoint = [1, 3]
    [evaluation]                      # points, chunk_iterations, episodes (see Evaluation)
    [methods.zpg]                     # label; algorithm = registry name; config fields
    algorithm = "zpg"
    envs = ["gridworld/open-5x5"]     # optional: run this method on these envs only
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

from zopg.algorithms import Problem, Training, build, registry
from zopg.envs import make as make_env
from zopg.errors import ConfigError
from zopg.evaluation import Evaluator, make_evaluator
from zopg.experiments.tomlfile import check_keys, fail, positive_int, read_toml, table_list
from zopg.policies import POLICIES, make_policy
from zopg.preferences import Oracle, Teacher, make_link, make_utility

TOP_KEYS = {
    "name",
    "description",
    "seeds",
    "budget_queries",
    "policy",
    "policy_params",
    "envs",
    "links",
    "teacher",
    "evaluation",
    "methods",
}
EVALUATION_KEYS = {"points", "chunk_iterations", "episodes"}
ENV_POLICY_KEYS = ("policy", "policy_params")  # reserved in [[envs]]: not env field overrides


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    id: str
    overrides: dict
    policy: str | None = None  # None: the experiment's policy
    policy_params: dict | None = None  # None: the experiment's policy_params

    @property
    def slug(self) -> str:
        return self.id.replace("/", "-")


@dataclasses.dataclass(frozen=True)
class LinkSpec:
    name: str
    params: dict


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    label: str
    algorithm: str
    params: dict
    envs: tuple[str, ...] | None = None  # None: every env of the experiment

    def runs_on(self, env_id: str) -> bool:
        return self.envs is None or env_id in self.envs


@dataclasses.dataclass(frozen=True)
class Evaluation:
    points: int = 100  # logged iterations per run (always including the last)
    chunk_iterations: int = 500  # iterations per compiled call: progress, checkpoints, resume
    # Envs without an exact model are scored by the Monte Carlo return of this many fresh
    # episodes per seed (zopg.evaluation; outside every budget), at about `points` iterations.
    episodes: int = 100


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

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("source")
        return data

    def config_hash(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# -- --set overrides ----------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A TOML value (number, bool, string, array, inline table), or the bare text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(raw: dict, assignment: str, source: str) -> None:
    """Apply `path.to.field=value` to the raw TOML data; list items are addressed by index."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected path.to.field=value")
    path, text = assignment.split("=", 1)
    keys = path.strip().split(".")
    node: Any = raw
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        where = ".".join(keys[: i + 1])
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(
                    f"{source}: --set {path}: {where!r} must index 0..{len(node) - 1}"
                )
            key = int(key)
        elif not isinstance(node, dict):
            raise ConfigError(f"{source}: --set {path}: {where!r} is not a table or array")
        if last:
            node[key] = parse_value(text.strip())
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]


# -- validation ---------------------------------------------------------------------------------


def _parse(raw: dict, source: str) -> Experiment:
    check_keys(source, "", raw, TOP_KEYS)
    for required in ("name", "budget_queries", "envs", "links", "methods"):
        if required not in raw:
            raise fail(source, required, "is required")
    name = raw["name"]
    if not isinstance(name, str) or not name or "/" in name:
        raise fail(source, "name", f"= {name!r}: must be a non-empty string without '/'")
    policy = raw.get("policy", "tabular")
    if policy not in POLICIES:
        raise fail(source, "policy", f"= {policy!r}: allowed: {', '.join(POLICIES)}")
    evaluation = raw.get("evaluation", {})
    check_keys(source, "evaluation", evaluation, EVALUATION_KEYS)
    evaluation = Evaluation(
        **{k: positive_int(source, f"evaluation.{k}", v) for k, v in evaluation.items()}
    )
    if evaluation.episodes < 2:
        # A standard error needs two episodes at least.
        raise fail(source, "evaluation.episodes", f"= {evaluation.episodes}: must be >= 2")
    env_tables = table_list(source, "envs", raw["envs"], "id")
    envs = tuple(_env_spec(source, i, e) for i, e in enumerate(env_tables))
    env_ids = [e.id for e in envs]
    if len(set(env_ids)) != len(env_ids):
        raise fail(source, "envs", f"each env id may appear once; got {env_ids}")
    links = tuple(
        LinkSpec(name=l["name"], params={k: v for k, v in l.items() if k != "name"})
        for l in table_list(source, "links", raw["links"], "name")
    )
    methods_raw = raw["methods"]
    if not isinstance(methods_raw, dict) or not methods_raw:
        raise fail(source, "methods", "must contain at least one [methods.LABEL] table")
    methods = []
    for label, table in methods_raw.items():
        if not isinstance(table, dict) or "algorithm" not in table:
            raise fail(source, f"methods.{label}", "must be a table with an 'algorithm' key")
        params = {k: v for k, v in table.items() if k not in ("algorithm", "envs")}
        only = table.get("envs")
        if only is not None:
            if not isinstance(only, list) or not only or not set(only) <= set(env_ids):
                raise fail(
                    source,
                    f"methods.{label}.envs",
                    f"= {only!r}: must be a non-empty list of env ids of this experiment "
                    f"({', '.join(env_ids)})",
                )
            only = tuple(only)
        methods.append(
            MethodSpec(label=label, algorithm=table["algorithm"], params=params, envs=only)
        )
    teacher = raw.get("teacher", {})
    if not isinstance(teacher, dict):
        raise fail(source, "teacher", "must be a table")
    policy_params = raw.get("policy_params", {})
    if not isinstance(policy_params, dict):
        raise fail(source, "policy_params", "must be a table")
    return Experiment(
        name=name,
        description=str(raw.get("description", "")),
        seeds=positive_int(source, "seeds", raw.get("seeds", 10)),
        budget_queries=positive_int(source, "budget_queries", raw["budget_queries"]),
        policy=policy,
        policy_params=policy_params,
        envs=envs,
        links=links,
        teacher=teacher,
        evaluation=evaluation,
        methods=tuple(methods),
        source=source,
    )


def _env_spec(source: str, index: int, table: dict) -> EnvSpec:
    policy, params = table.get("policy"), table.get("policy_params")
    if policy is not None and policy not in POLICIES:
        raise fail(source, f"envs[{index}].policy", f"= {policy!r}: allowed: {', '.join(POLICIES)}")
    if params is not None and not isinstance(params, dict):
        raise fail(source, f"envs[{index}].policy_params", "must be a table")
    reserved = ("id", *ENV_POLICY_KEYS)
    overrides = {k: v for k, v in table.items() if k not in reserved}
    return EnvSpec(id=table["id"], overrides=overrides, policy=policy, policy_params=params)


def run_policy(experiment: Experiment, env_spec: EnvSpec) -> tuple[str, dict]:
    """(policy name, policy params) for runs on this env: the env's own, else the experiment's."""
    if env_spec.policy is None:
        return experiment.policy, (
            experiment.policy_params if env_spec.policy_params is None else env_spec.policy_params
        )
    return env_spec.policy, env_spec.policy_params or {}


def method_config(spec: MethodSpec, budget_queries: int, source: str = "<experiment>"):
    """(algorithm, config): the method's config from its table, its budget field derived from
    budget_queries when it is budget-matched. Fields are checked against their declared rules
    when the run is built (build_run), where the env and policy are known."""
    where = f"methods.{spec.label}"
    try:
        algo = registry.get(spec.algorithm)
    except ConfigError as err:
        raise fail(source, f"{where}.algorithm", str(err)) from None
    derived = algo.config.budget_field
    if not algo.reference and derived in spec.params:
        raise fail(
            source,
            f"{where}.{derived}",
            "is derived from budget_queries for budget-matched methods; remove it",
        )
    try:
        config = algo.config.from_data(spec.params)
        if not algo.reference:
            # Field rules first, so a bad per-unit count is named before it is used.
            config.validate()
            config = config.with_budget(budget_queries)
    except ConfigError as err:
        raise fail(source, where, str(err)) from None
    except TypeError as err:
        raise fail(source, where, f"bad field value: {err}") from None
    return algo, config


@dataclasses.dataclass(frozen=True)
class BuiltRun:
    """One (env, link, method) of an experiment, validated and ready to run."""

    env: Any
    env_params: Any
    policy: Any
    oracle: Oracle
    algorithm: Any
    config: Any
    training: Training
    evaluator: Evaluator


def build_run(
    experiment: Experiment, env_spec: EnvSpec, link_spec: LinkSpec, method: MethodSpec
) -> BuiltRun:
    """Build and validate one run (nothing compiles)."""
    source = experiment.source
    try:
        env, env_params = make_env(env_spec.id, **env_spec.overrides)
    except ConfigError as err:
        raise fail(source, f"envs ({env_spec.id})", str(err)) from None
    try:
        link = make_link(link_spec.name, **link_spec.params)
    except ConfigError as err:
        raise fail(source, f"links ({link_spec.name})", str(err)) from None
    except TypeError as err:
        raise fail(source, f"links ({link_spec.name})", f"bad parameter: {err}") from None
    imperfections = {k: v for k, v in experiment.teacher.items() if k != "utility"}
    try:
        teacher = Teacher(**imperfections)
    except ConfigError as err:
        raise fail(source, "teacher", str(err)) from None
    except TypeError as err:
        fields = ", ".join(f.name for f in dataclasses.fields(Teacher))
        raise fail(source, "teacher", f"{err}; allowed: {fields}, utility") from None
    utility = teacher_utility(experiment.teacher.get("utility"), source, env_spec, env, env_params)
    name, params = run_policy(experiment, env_spec)
    where = "policy" if env_spec.policy is None else f"envs ({env_spec.id}).policy"
    try:
        policy = make_policy(name, env, env_params, **params)
    except ConfigError as err:
        raise fail(source, where, str(err)) from None
    except TypeError as err:
        raise fail(source, where + "_params", str(err)) from None
    algo, config = method_config(method, experiment.budget_queries, source)
    try:
        oracle = Oracle(link, teacher, utility)
    except ConfigError as err:
        raise fail(source, "teacher", str(err)) from None
    try:
        problem = Problem.build(env, policy, oracle, env_params)
        training = build(algo, config, problem)
    except ConfigError as err:
        raise fail(source, f"methods.{method.label}", str(err)) from None
    evaluator = make_evaluator(
        env, env_params, policy, training.problem.oracle.utility, experiment.evaluation.episodes
    )
    return BuiltRun(env, env_params, policy, oracle, algo, config, training, evaluator)


def teacher_utility(table, source: str, env_spec: EnvSpec, env, env_params):
    """The teacher's utility from [teacher.utility] (a name, or a table with name and
    parameters), bound to this env; None for the return (the default)."""
    if table is None:
        return None
    where = "teacher.utility"
    if isinstance(table, str):
        table = {"name": table}
    if not isinstance(table, dict) or not isinstance(table.get("name"), str):
        raise fail(source, where, f"= {table!r}: must be a utility name or a table with 'name'")
    params = {k: v for k, v in table.items() if k != "name"}
    try:
        utility = make_utility(table["name"], **params)
    except ConfigError as err:
        raise fail(source, where, str(err)) from None
    except TypeError as err:
        raise fail(source, where, f"bad parameter: {err}") from None
    try:
        return utility.bind(env, env_params)
    except ConfigError as err:
        raise fail(source, f"envs ({env_spec.id}): {where}", str(err)) from None


def load_experiment(path, overrides=(), seeds: int | None = None) -> Experiment:
    """Read, override, parse and fully validate an experiment file (builds every run once)."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise ConfigError(f"{source}: no such experiment file")
    raw = read_toml(path)
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        apply_override(raw, assignment, source)
    if seeds is not None:
        raw["seeds"] = seeds
    experiment = _parse(raw, source)
    for env_spec in experiment.envs:
        for link_spec in experiment.links:
            for method in experiment.methods:
                if method.runs_on(env_spec.id):
                    build_run(experiment, env_spec, link_spec, method)
    return experiment
