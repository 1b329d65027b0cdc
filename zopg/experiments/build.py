"""An experiment's runs, built and validated (nothing compiles): env, link, teacher and utility,
policy, oracle, the method's config with its budget, the training and the evaluator."""

from __future__ import annotations

import dataclasses
from typing import Any

from zopg.algorithms import Problem, Training, build, registry
from zopg.envs import make as make_env
from zopg.errors import ConfigError, did_you_mean
from zopg.evaluation import Evaluator, make_evaluator
from zopg.experiments.memory import check_model_fits
from zopg.experiments.schema import EnvSpec, Experiment, LinkSpec, MethodSpec
from zopg.experiments.tomlfile import fail
from zopg.policies import make_policy
from zopg.preferences import Oracle, Teacher, make_link, make_utility


def run_policy(experiment: Experiment, env_spec: EnvSpec) -> tuple[str, dict]:
    """(policy name, policy params) for runs on this env: the env's own, else the experiment's."""
    if env_spec.policy is None:
        return experiment.policy, (
            experiment.policy_params if env_spec.policy_params is None else env_spec.policy_params
        )
    return env_spec.policy, env_spec.policy_params or {}


def method_config(
    spec: MethodSpec, budget_queries: int, source: str = "<experiment>", unit: str = "queries"
):
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
            config = config.with_budget(budget_queries, unit)
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
        raise fail(source, f"envs ({env_spec.name})", str(err)) from None
    # Before anything below builds the tabular model (the evaluator, the teacher's automaton).
    check_model_fits(env, env_params, f"{source}: envs ({env_spec.name})")
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
    except TypeError:  # a key Teacher has no field for
        fields = [f.name for f in dataclasses.fields(Teacher)]
        key = sorted(set(imperfections) - set(fields))[0]
        hint = did_you_mean(key, fields)
        allowed = ", ".join([*fields, "utility"])
        raise fail(source, f"teacher.{key}", f"unknown key{hint}; allowed: {allowed}") from None
    table = experiment.teacher.get("utility") if env_spec.utility is None else env_spec.utility
    utility = teacher_utility(table, source, env_spec, env, env_params)
    name, params = run_policy(experiment, env_spec)
    where = "policy" if env_spec.policy is None else f"envs ({env_spec.name}).policy"
    try:
        policy = make_policy(name, env, env_params, **params)
    except ConfigError as err:
        raise fail(source, where, str(err)) from None
    except TypeError as err:
        raise fail(source, where + "_params", str(err)) from None
    algo, config = method_config(method, experiment.budget_queries, source, experiment.budget_unit)
    try:
        oracle = Oracle(link, teacher, utility)
    except ConfigError as err:
        raise fail(source, "teacher", str(err)) from None
    try:
        problem = Problem.build(env, policy, oracle, env_params)
        training = build(algo, config, problem)
    except ConfigError as err:
        message = str(err)
        if not algo.reference and message.startswith(f"{algo.config.budget_field} = "):
            # The field is derived, not written in the file: name what it came from.
            message += f" (derived from budget_queries = {experiment.budget_queries})"
        raise fail(source, f"methods.{method.label}", message) from None
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
        raise fail(source, f"envs ({env_spec.name}): {where}", str(err)) from None


# The runs of the last experiment built. load_experiment builds them all to validate the file
# and the runner runs the same ones: building twice cost 14 s of a 6-minute `make bench`.
_BUILT: dict[str, list] = {}


def built_runs(experiment: Experiment) -> list[tuple]:
    """(point, variant, env spec, link spec, method spec, BuiltRun) for every run of every
    sweep point, in the file's order; errors name the sweep point they come from."""
    key = experiment.source + experiment.config_hash()
    if key in _BUILT:
        return _BUILT[key]
    result = []
    for point in experiment.points():
        try:
            variant = experiment.variant(point)
            for env_spec in variant.envs:
                for link_spec in variant.links:
                    for method in variant.methods:
                        if method.runs_on(env_spec.name, link_spec.panel):
                            run = build_run(variant, env_spec, link_spec, method)
                            result.append((point, variant, env_spec, link_spec, method, run))
        except ConfigError as err:
            if not point:
                raise
            where = ", ".join(f"{k} = {v!r}" for k, v in point.items())
            raise ConfigError(f"{err} (at the sweep point {where})") from None
    _BUILT.clear()
    _BUILT[key] = result
    return result
