"""The algorithm contract: each duty is checked when a trainer is built (before anything runs),
every registered algorithm spends what it declares, and an algorithm defined outside zopg runs
from an experiment file with no edit under zopg/."""

import dataclasses
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg import ConfigError, cli, store
from zopg.algorithms import (
    ALGORITHMS,
    Algorithm,
    AlgorithmConfig,
    PPOConfig,
    Problem,
    Spent,
    Trainer,
    build,
    get,
    register,
)
from zopg.algorithms.base import unit_cost
from zopg.algorithms.settings import integer
from zopg.envs import make
from zopg.policies import make_policy
from zopg.preferences import Oracle, make_link


@pytest.fixture(scope="module", autouse=True)
def plugin_random_search(tmp_path_factory):
    """docs/extending.md's algorithm recipe as a module `plugin_random_search` on sys.path, the
    way a user's own file would be: the page is the only copy of it."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "extending.md").read_text()
    code = re.search(r"^```python\n# file: myext/random_search.py\n(.*?)^```", page, re.S | re.M)
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "plugin_random_search.py").write_text(code.group(1))
    sys.path.insert(0, str(folder))
    yield
    sys.path.remove(str(folder))
    sys.modules.pop("plugin_random_search", None)


@pytest.fixture(scope="module")
def problem():
    env, params = make("gridworld/open-5x5", horizon=4)
    policy = make_policy("tabular", env, params)
    return Problem.build(env, policy, Oracle(make_link("bradley-terry")), params)


@dataclasses.dataclass(frozen=True)
class StepConfig(AlgorithmConfig):
    num_iterations: int = integer(3)

    def unit_cost(self) -> Spent:
        return unit_cost(queries=1, trajectories=2)


def algorithm(iterate, init=None):
    """A test algorithm around `iterate(theta, t, key)`; θ is the state."""

    def make_trainer(config, problem):
        return Trainer(init or problem.initial_theta, iterate, problem.unravel)

    return Algorithm("test-step", StepConfig, make_trainer, "a contract test")


def good_iterate(theta, t, key):
    return theta + 0.1, Spent.of(1, 2, 8), {"test/t": t.astype(jnp.float32)}


def test_a_conforming_algorithm_runs_and_is_accounted_by_the_wrapper(problem):
    training = build(algorithm(good_iterate), StepConfig(), problem)
    _, metrics = jax.jit(training.train)(jax.random.key(0))
    np.testing.assert_array_equal(metrics["budget/queries"], [1, 2, 3])
    np.testing.assert_array_equal(metrics["budget/judged_trajectories"], [2, 4, 6])
    np.testing.assert_array_equal(metrics["budget/trajectories"], [2, 4, 6])
    np.testing.assert_array_equal(metrics["budget/env_steps"], [8, 16, 24])
    np.testing.assert_array_equal(metrics["test/t"], [0, 1, 2])


@pytest.mark.parametrize(
    ("iterate", "match"),
    [
        (lambda th, t, k: (th, {"x": jnp.zeros(())}), r"must return \(state, Spent, metrics\)"),
        (lambda th, t, k: (th, None, {}), "must return a Spent as its second value"),
        (
            lambda th, t, k: (th, {"queries": 1}, {}),
            "must return a Spent as its second value; got dict",
        ),
        (
            lambda th, t, k: (th, Spent.of(1, 2, 8), {"budget/queries": jnp.zeros(())}),
            "metric 'budget/queries': names under budget/, eval/, exact/ are written by",
        ),
        (
            lambda th, t, k: (th, Spent.of(1, 2, 8), {"exact/value": jnp.zeros(())}),
            "metric 'exact/value'",
        ),
        (
            lambda th, t, k: (th, Spent.of(1, 2, 8), {"loss": jnp.zeros(3)}),
            "metric 'loss' must be a scalar",
        ),
        (
            lambda th, t, k: (th[:-1], Spent.of(1, 2, 8), {}),
            "iterate must return a state shaped like init's",
        ),
        (
            lambda th, t, k: (th, Spent(1.0, 2, 2, 8), {}),
            "Spent.queries must be an int32 scalar",
        ),
    ],
)
def test_contract_breaches_are_refused_when_the_trainer_is_built(problem, iterate, match):
    """Each duty fails at build time (traced abstractly, nothing runs), not after a run."""
    with pytest.raises(ConfigError, match=match):
        build(algorithm(iterate), StepConfig(), problem)


def test_make_trainer_must_return_a_trainer(problem):
    bad = Algorithm("bad", StepConfig, lambda config, problem: object(), "returns no Trainer")
    with pytest.raises(ConfigError, match="make_trainer must return a Trainer"):
        build(bad, StepConfig(), problem)


def test_algorithm_declarations_are_checked():
    with pytest.raises(ConfigError, match="must be a dataclass derived from AlgorithmConfig"):
        Algorithm("x", dict, lambda c, p: None, "no config class")

    @dataclasses.dataclass(frozen=True)
    class Unbudgeted(AlgorithmConfig):
        budget_field = None
        num_iterations: int = integer(3)

    with pytest.raises(ConfigError, match="budget-matched methods must name one"):
        Algorithm("x", Unbudgeted, lambda c, p: None, "matched but no budget field")
    Algorithm("x", Unbudgeted, lambda c, p: None, "a reference", reference=True)  # fine


def test_config_of_another_algorithm_is_refused(problem):
    with pytest.raises(ConfigError, match="test-step takes a StepConfig; got PPOConfig"):
        build(algorithm(good_iterate), PPOConfig(), problem)


def test_counters_that_would_overflow_are_refused_before_running(problem):
    # Below int32 itself (the field's own bound), but 2 trajectories per iteration overflow.
    with pytest.raises(ConfigError, match=r"num_iterations = 2000000000: budget counters would"):
        build(algorithm(good_iterate), StepConfig(num_iterations=2 * 10**9), problem)


def test_registry_names_imports_and_duplicates():
    assert get("zpg") is ALGORITHMS["zpg"]
    unknown = r"unknown algorithm 'zpgg' \(did you mean 'zpg'\?\); known algorithms: .*zbcpg"
    with pytest.raises(ConfigError, match=unknown):
        get("zpgg")
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        get("no_such_module:ALGORITHM")
    with pytest.raises(ConfigError, match="module 'plugin_random_search' has no 'NOPE'"):
        get("plugin_random_search:NOPE")
    plugin = get("plugin_random_search:ALGORITHM")
    assert plugin.name == "random-search"
    with pytest.raises(ConfigError, match="'zpg': is taken; pass replace=True"):
        register(dataclasses.replace(plugin, name="zpg"))


# Small settings per registered algorithm: a few iterations on a 4-step GridWorld.
SMALL = {
    "zpg": {"num_iterations": 3, "num_pairs": 2, "num_queries": 3},
    "zbcpg": {"num_iterations": 3, "num_pairs": 2, "num_queries": 3, "block_size": 10},
    "zspo": {"num_iterations": 3, "num_votes": 3, "batch_size": 2},
    "par-s2zpo": {"num_iterations": 3, "num_votes": 3, "batch_size": 2, "num_blocks": 3},
    "fedavg-dpo": {
        "num_iterations": 3,
        "num_agents": 2,
        "num_pairs": 3,
        "num_queries": 3,
        "num_eval_pairs": 4,
    },
    "dpo-online": {"num_iterations": 3, "num_pairs": 4, "num_queries": 3, "num_eval_pairs": 4},
    "dpo-offline": {
        "num_iterations": 3,
        "dataset_size": 8,
        "minibatch_size": 4,
        "num_queries": 3,
        "num_eval_pairs": 4,
    },
    "rm-ppo": {
        "num_rounds": 3,
        "num_pairs": 4,
        "num_queries": 3,
        "ppo": PPOConfig(num_iterations=2, num_trajectories=4, num_minibatches=2),
    },
    "rm-ppo-once": {
        "num_pairs": 4,
        "num_queries": 3,
        "num_iterations": 3,
        "ppo": PPOConfig(num_iterations=2, num_trajectories=4, num_minibatches=2),
    },
    "ppo": {"num_iterations": 3, "num_trajectories": 4, "num_minibatches": 2},
    "exact-pg": {"num_iterations": 3},
    "es": {"num_iterations": 3, "population_size": 4},
}


def test_every_registered_algorithm_has_a_small_case():
    assert set(SMALL) == set(ALGORITHMS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_algorithm_spends_what_it_declares(problem, name):
    """The overflow guard and budget matching trust unit_cost: the run's counters must equal
    units × unit_cost (env steps at most trajectories × H; every GridWorld step is valid)."""
    algo = ALGORITHMS[name]
    config = algo.config(**SMALL[name])
    training = build(algo, config, problem)
    _, metrics = jax.jit(training.train)(jax.random.key(0))
    units = getattr(config, config.budget_field or config.iterations_field)
    cost = config.unit_cost()
    final = {k.removeprefix("budget/"): int(v[-1]) for k, v in metrics.items() if "budget/" in k}
    fixed = config.fixed_cost()  # beside the units (e.g. PPO's rollouts on a fitted r_φ)
    assert final["queries"] == units * cost.queries
    assert final["trajectories"] == units * cost.trajectories + fixed.trajectories
    assert final["judged_trajectories"] == units * cost.judged_trajectories
    assert final["env_steps"] == final["trajectories"] * problem.horizon


PLUGIN_EXPERIMENT = """
name = "plugin"
seeds = 2
budget_queries = 300
[[envs]]
id = "gridworld/open-5x5"
[[links]]
name = "bradley-terry"
[evaluation]
points = 5
[methods.search]
algorithm = "plugin_random_search:ALGORITHM"
num_queries = 3
sigma = 1.0
"""


def test_an_algorithm_outside_zopg_runs_from_a_toml_file(tmp_path):
    """docs/extending.md's recipe is on the path here; nothing under zopg/ names it."""
    path = tmp_path / "plugin.toml"
    path.write_text(PLUGIN_EXPERIMENT)
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    summary = store.read_json(out / "summary.json")
    (result,) = summary["results"]
    assert result["algorithm"] == "random-search" and result["method"] == "search"
    assert result["queries"] == 300 and result["iterations"] == 100  # 300 / 3 per iteration
    assert result["judged_trajectories"] == 600
    assert result["score"]["mean"] is not None
    # A bad field of the outside algorithm is named like any other.
    bad = tmp_path / "bad.toml"
    bad.write_text(PLUGIN_EXPERIMENT.replace("sigma = 1.0", "sigma = -1.0"))
    assert cli.main(["run", str(bad), "--out", str(tmp_path / "bad"), "--quiet"]) == 2


def test_links_named_in_a_file_are_built_or_refused(tmp_path):
    """methods.zpg.link = "linear" used to pass validation and crash at run time."""
    from zopg.experiments import load_experiment
    from zopg.experiments.build import build_run

    text = PLUGIN_EXPERIMENT.replace(
        'algorithm = "plugin_random_search:ALGORITHM"\nnum_queries = 3\nsigma = 1.0',
        'algorithm = "zpg"\nnum_pairs = 2\nnum_queries = 3\nlink = "linear"',
    )
    path = tmp_path / "link.toml"
    path.write_text(text)
    experiment = load_experiment(path)
    run = build_run(experiment, experiment.envs[0], experiment.links[0], experiment.methods[0])
    assert run.config.link == make_link("linear")
    path.write_text(text.replace('link = "linear"', 'link = { name = "linear", c = 2.0 }'))
    experiment = load_experiment(path)
    run = build_run(experiment, experiment.envs[0], experiment.links[0], experiment.methods[0])
    assert run.config.link == make_link("linear", c=2.0)
    path.write_text(text.replace('link = "linear"', 'link = "linearr"'))
    with pytest.raises(ConfigError, match=r"methods\.search: unknown link 'linearr'"):
        load_experiment(path)
    path.write_text(text.replace('link = "linear"', 'link = { name = "linear", d = 2.0 }'))
    with pytest.raises(ConfigError, match=r"linear link parameter = .d.: known parameters: c"):
        load_experiment(path)


def test_configs_round_trip_through_data():
    """to_data is from_data's inverse: what a run records can be read back as the config."""
    for name, fields in SMALL.items():
        config_cls = ALGORITHMS[name].config
        config = config_cls(**fields)
        assert config_cls.from_data(config.to_data()) == config


def test_diagnostics_are_checked_and_computed_where_the_runner_logs(problem):
    """A trainer's diagnostics(state) obey the metric rules; advance reports them of the final
    state, run and train of every iteration's state, with the same values."""

    def make_trainer(config, problem):
        return Trainer(
            problem.initial_theta,
            good_iterate,
            problem.unravel,
            diagnostics=lambda theta: {"test/mean": jnp.mean(theta)},
        )

    algo = Algorithm("diagnosed", StepConfig, make_trainer, "with diagnostics")
    training = build(algo, StepConfig(), problem)
    key = jax.random.key(0)
    _, per_iteration = jax.jit(training.train)(key)
    _, last = jax.jit(training.advance)(training.init(key), 0, 3)
    np.testing.assert_allclose(last["test/mean"], per_iteration["test/mean"][-1])
    bad = Algorithm(
        "bad",
        StepConfig,
        lambda c, p: Trainer(p.initial_theta, good_iterate, p.unravel, lambda s: {"eval/x": s[0]}),
        "diagnostics under a reserved name",
    )
    with pytest.raises(ConfigError, match="metric 'eval/x'"):
        build(bad, StepConfig(), problem)


# -- wiring that the mutation run found untested (issue 26) -----------------------------------
#
# `make mutation` changed zopg/algorithms/base.py one token at a time, and some of those mutants
# passed every test above: the overflow guard's totals, its boundary or its message, budget
# matching's default unit, rounding and refusals, Problem.build's utility binding, exact value
# and initial parameters. Each test below checks one piece exactly;
# benchmarks/studies/mutation_equivalent.toml says why the remaining mutants change nothing.

from zopg.algorithms.base import check_budget_fits, exact_utility_value  # noqa: E402
from zopg.algorithms.search_space import SearchSpace, linear_range  # noqa: E402
from zopg.errors import INT32_MAX  # noqa: E402
from zopg.exact import utility_value_fn, value_fn  # noqa: E402
from zopg.preferences.utilities import Deadline, RevisitPenalty  # noqa: E402
from zopg.rollout import masked_return  # noqa: E402


def cost_config(queries=0, trajectories=0, judged_per_query=2, fixed_trajectories=0):
    """A config class spending the given unit cost per iteration, and fixed trajectories."""

    @dataclasses.dataclass(frozen=True)
    class CostConfig(AlgorithmConfig):
        num_iterations: int = integer(3)

        def unit_cost(self) -> Spent:
            return unit_cost(queries, trajectories, judged_per_query)

        def fixed_cost(self) -> Spent:
            return unit_cost(trajectories=fixed_trajectories)

    return CostConfig


def test_overflow_refusals_name_the_counter_and_its_total():
    """Each counter is checked against int32 on its own, the fixed trajectories added to the
    units' and the env steps counted as trajectories × H; a total of exactly INT32_MAX runs."""
    units = 2**30
    cases = [
        (cost_config(queries=2), 1, "queries: 2,147,483,648"),
        (cost_config(trajectories=2), 1, "trajectories: 2,147,483,648"),
        (cost_config(queries=1, judged_per_query=3), 1, "judged trajectories: 3,221,225,472"),
        (cost_config(trajectories=1), 2, "env steps at horizon 2: 2,147,483,648"),
        (
            cost_config(trajectories=1, fixed_trajectories=units),
            1,
            "trajectories: 2,147,483,648",
        ),
    ]
    for config_cls, horizon, what in cases:
        with pytest.raises(ConfigError) as err:
            check_budget_fits(config_cls(num_iterations=units), horizon)
        assert str(err.value) == (
            f"num_iterations = {units}: budget counters would exceed int32 "
            f"({what} > 2,147,483,647); split the run"
        )
    # Exactly INT32_MAX of every counter fits (the env steps at horizon 1).
    exact = cost_config(queries=1, trajectories=1, judged_per_query=1)
    check_budget_fits(exact(num_iterations=INT32_MAX), 1)
    half = cost_config(trajectories=1, fixed_trajectories=INT32_MAX - units)
    check_budget_fits(half(num_iterations=units), 1)
    # The horizon multiplies the trajectories: 2**20 at horizon 2**11 is 2**31 env steps.
    with pytest.raises(ConfigError) as err:
        check_budget_fits(cost_config(trajectories=1)(num_iterations=2**20), 2**11)
    assert str(err.value) == (
        "num_iterations = 1048576: budget counters would exceed int32 "
        "(env steps at horizon 2,048: 2,147,483,648 > 2,147,483,647); split the run"
    )
    check_budget_fits(cost_config(trajectories=1)(num_iterations=2**20 - 1), 2**11)


def test_with_budget_spends_whole_units_of_queries_or_judged_trajectories():
    """StepConfig spends 1 query (2 judged trajectories) per iteration; the budget buys whole
    iterations, and a budget of exactly one unit buys one."""
    assert StepConfig().with_budget(7) == StepConfig(num_iterations=7)
    assert StepConfig().with_budget(7, "queries") == StepConfig(num_iterations=7)
    assert StepConfig().with_budget(1) == StepConfig(num_iterations=1)
    judged = StepConfig().with_budget(7, "judged_trajectories")
    assert judged == StepConfig(num_iterations=3) and type(judged.num_iterations) is int
    assert StepConfig().with_budget(2, "judged_trajectories") == StepConfig(num_iterations=1)
    assert StepConfig().with_budget(5, "trajectories") == StepConfig(num_iterations=2)


def test_with_budget_refusals():
    messages = {}
    for config, budget, unit in [
        (cost_config(trajectories=1)(), 10, "judged_trajectories"),
        (cost_config(trajectories=1)(), 10, "queries"),
        (StepConfig(), 1, "judged_trajectories"),
        (cost_config(queries=3)(), 2, "queries"),
    ]:
        with pytest.raises(ConfigError) as err:
            config.with_budget(budget, unit)
        messages[(budget, unit)] = str(err.value)
    assert messages == {
        (10, "judged_trajectories"): (
            "num_iterations = 'budget': this method spends no judged trajectories: "
            "it cannot be matched"
        ),
        (10, "queries"): (
            "num_iterations = 'budget': this method spends no queries: it cannot be matched"
        ),
        (1, "judged_trajectories"): (
            "spends 2 judged trajectories per unit of num_iterations, more than "
            "budget_queries = 1 (judged trajectories) allows"
        ),
        (2, "queries"): (
            "spends 3 queries per unit of num_iterations, more than "
            "budget_queries = 2 (queries) allows"
        ),
    }


def test_unit_cost_must_be_declared_and_spent_defaults_to_zero():
    @dataclasses.dataclass(frozen=True)
    class Undeclared(AlgorithmConfig):
        num_iterations: int = integer(3)

    with pytest.raises(NotImplementedError) as err:
        Undeclared().unit_cost()
    assert str(err.value) == "Undeclared declares no unit_cost"
    spent = Spent.of(3)
    assert [int(x) for x in (spent.queries, spent.trajectories)] == [3, 0]
    assert [int(x) for x in (spent.judged_trajectories, spent.env_steps)] == [6, 0]


def test_algorithm_declaration_refusals_are_whole_messages():
    @dataclasses.dataclass(frozen=True)
    class NotAConfig:
        num_iterations: int = 3

    @dataclasses.dataclass(frozen=True)
    class Unbudgeted(AlgorithmConfig):
        budget_field = None
        num_iterations: int = integer(3)

    def refusal(**fields):
        with pytest.raises(ConfigError) as err:
            Algorithm(**{"make_trainer": lambda c, p: None, "description": "d", **fields})
        return str(err.value)

    assert refusal(name="x", config=NotAConfig) == (
        f"x.config = {NotAConfig!r}: must be a dataclass derived from AlgorithmConfig"
    )
    assert refusal(name="y", config=Unbudgeted) == (
        "y.config.budget_field = None: budget-matched methods must name one"
    )
    space = SearchSpace(linear_range("num_iterations", 2.0, 1.0))
    assert refusal(name="z", config=StepConfig, search_space=space) == (
        "z.search_space.num_iterations: range [2.0, 1.0] is empty"
    )


def test_problem_requirements_are_whole_messages():
    bare = Problem("no-model-env", None, None, None, 0, None, None)
    with pytest.raises(ConfigError) as err:
        bare.require_oracle("zpg")
    assert str(err.value) == "zpg learns from preferences and needs an oracle; got None"
    with pytest.raises(ConfigError) as err:
        bare.require_exact("exact-pg")
    assert (
        str(err.value) == "exact-pg needs a tabular environment; 'no-model-env' has no exact model"
    )


@pytest.fixture(scope="module")
def open_grid():
    """open-5x5 run at horizon 9 (its default 10), a tabular policy and a θ away from the
    uniform policy."""
    env, _ = make("gridworld/open-5x5", horizon=10)
    params = dataclasses.replace(env.default_params, horizon=9)
    policy = make_policy("tabular", env, params)
    problem = Problem.build(env, policy, env_params=params)
    theta = jax.random.normal(jax.random.key(3), (problem.dim,))
    return env, params, policy, theta


def test_problem_build_without_an_oracle(open_grid):
    """The default env params, the flat dimension, the return as teacher and the exact value
    V(θ) of the tabular model."""
    env, params, policy, theta = open_grid
    template = policy.init(jax.random.key(0))
    dim = sum(x.size for x in jax.tree_util.tree_leaves(template))
    default = Problem.build(env, policy)
    assert default.env_params == env.default_params and default.horizon == 10
    problem = Problem.build(env, policy, env_params=params)
    assert problem.env_params is params and problem.horizon == 9
    assert problem.oracle is None and problem.dim == dim and theta.shape == (dim,)
    assert problem.utility is masked_return and problem.initial_params is None
    expected = value_fn(env.tabular_model(params), policy, env.num_states(params))
    assert float(problem.exact_value(theta)) == float(expected(problem.unravel(theta)))
    np.testing.assert_array_equal(
        problem.initial_theta(jax.random.key(5)),
        jnp.concatenate(
            [x.ravel() for x in jax.tree_util.tree_leaves(policy.init(jax.random.key(5)))]
        ),
    )
    # An oracle without a utility of its own: the return too.
    oracle = Oracle(make_link("bradley-terry"))
    assert Problem.build(env, policy, oracle, params).utility is masked_return


def test_problem_build_binds_the_oracles_utility_and_its_exact_value(open_grid):
    env, params, policy, theta = open_grid
    deadline = Deadline(k=8)
    problem = Problem.build(
        env, policy, Oracle(make_link("bradley-terry"), utility=deadline), params
    )
    bound = deadline.bind(env, params)
    assert problem.utility == bound and problem.oracle.utility == bound
    assert problem.oracle.link == make_link("bradley-terry")
    expected = utility_value_fn(env, params, bound, policy)(problem.unravel(theta))
    plain = value_fn(env.tabular_model(params), policy, env.num_states(params))
    assert float(problem.exact_value(theta)) == float(expected)
    assert float(expected) != float(plain(problem.unravel(theta)))  # the deadline matters
    # A utility with no exact form (Monte Carlo only) leaves no exact value, bound all the same.
    revisit = Problem.build(
        env, policy, Oracle(make_link("bradley-terry"), utility=RevisitPenalty()), params
    )
    assert revisit.exact_value is None and revisit.utility == RevisitPenalty().bind(env, params)
    # No tabular model at all: no exact value.
    assert exact_utility_value(object(), params, policy, None) is None


def test_problem_initial_params_are_checked_and_used(open_grid):
    env, params, policy, theta = open_grid
    initial = Problem.build(env, policy, env_params=params).unravel(theta)  # not policy.init's
    problem = Problem.build(env, policy, env_params=params, initial_params=initial)
    assert problem.initial_params is initial
    flat = jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(initial)])
    np.testing.assert_array_equal(problem.initial_theta(jax.random.key(0)), flat)
    with pytest.raises(ConfigError) as err:
        Problem.build(env, policy, env_params=params, initial_params=jnp.zeros(3))
    assert str(err.value) == (
        f"initial_params = '3 parameters': must have the policy's structure "
        f"({problem.dim} parameters)"
    )
