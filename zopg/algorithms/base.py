"""The algorithm contract: Problem, Spent, declared config settings, Trainer and Algorithm.

An algorithm is three things (see `Algorithm`):

- a frozen config dataclass derived from `AlgorithmConfig`, whose fields are declared with the
  helpers of `zopg.algorithms.settings` (`integer`, `real`, `choice`, ...). The declarations
  say what values are allowed, so every config validates itself the same way; the config also
  says which field a human-query budget sets and what one unit of it costs (`budget_field`,
  `unit_cost`);
- `make_trainer(config, problem) -> Trainer(init, iterate, policy_params)`, where
  `iterate(state, t, key) -> (state, Spent, metrics)` reports what the iteration spent;
- a name and a one-line description.

The shared wrapper in `zopg.algorithms.training` turns a Trainer into `train(key)`: it accumulates
`Spent` into the `budget/*` metrics, guards the counters against int32 overflow and gives chunked
runs for the runner. Algorithms never write `budget/*` or evaluate the policy themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from zopg.algorithms.settings import Settings
from zopg.errors import INT32_MAX, ConfigError, bad_value
from zopg.exact import utility_value_fn, value_fn
from zopg.policies import flat_view
from zopg.preferences import Utility
from zopg.preferences.utilities import Return
from zopg.rollout import masked_return

# -- what an iteration spends ----------------------------------------------------------------


@struct.dataclass
class Spent:
    """Budget spent by one call: human queries, trajectories rolled out, trajectories a human
    watched to answer the queries, and environment steps.

    Inside a trainer the fields are int32 scalars; `unit_cost` declarations use Python ints.
    A pair query shows the human two trajectories; a batch query (ZSPO) shows 2D.
    """

    queries: Any
    trajectories: Any
    judged_trajectories: Any
    env_steps: Any

    @classmethod
    def zero(cls) -> Spent:
        z = jnp.zeros((), jnp.int32)
        return cls(queries=z, trajectories=z, judged_trajectories=z, env_steps=z)

    @classmethod
    def of(cls, queries=0, trajectories=0, env_steps=0, judged_per_query: int = 2) -> Spent:
        """int32 counters of one call; each query judged `judged_per_query` trajectories."""
        as_int = lambda x: jnp.asarray(x).astype(jnp.int32)  # noqa: E731
        return cls(
            queries=as_int(queries),
            trajectories=as_int(trajectories),
            judged_trajectories=as_int(queries) * judged_per_query,
            env_steps=as_int(env_steps),
        )

    def __add__(self, other: Spent) -> Spent:
        return jax.tree_util.tree_map(jnp.add, self, other)

    def total(self) -> Spent:
        """Sum over any batch axes (e.g. vmapped directions or blocks)."""
        return jax.tree_util.tree_map(lambda x: jnp.sum(x).astype(jnp.int32), self)


def unit_cost(queries: int = 0, trajectories: int = 0, judged_per_query: int = 2) -> Spent:
    """A static cost declaration (Python ints) for `AlgorithmConfig.unit_cost`."""
    return Spent(queries, trajectories, judged_per_query * queries, None)


# -- the problem an algorithm is given -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """Everything a trainer needs about env, policy and teacher, resolved once at build time.

    utility: the teacher's utility u(τ) (trajectory -> one value per trajectory; the oracle's,
    bound to the env, else the return), what reward-access references optimise and the
    evaluator scores. dim and unravel give the flat parameter view that zeroth-order methods
    perturb. exact_value (flat θ -> exact E[u]) exists for tabular environments whose utility has
    an exact form; algorithms with reward access may use it, the others must not.
    initial_params, when given, replace `policy.init(key)` as the starting point (and DPO's
    reference) of every seed.
    """

    env: Any
    env_params: Any
    policy: Any
    oracle: Any
    dim: int
    unravel: Callable
    exact_value: Callable | None
    utility: Callable = masked_return
    initial_params: Any = None

    @classmethod
    def build(cls, env, policy, oracle=None, env_params=None, initial_params=None) -> Problem:
        env_params = env.default_params if env_params is None else env_params
        utility = getattr(oracle, "utility", None)
        if isinstance(utility, Utility):
            # Bound here, so an oracle can name its utility before it knows the env.
            utility = utility.bind(env, env_params)
            oracle = dataclasses.replace(oracle, utility=utility)
        template = jax.eval_shape(policy.init, jax.random.key(0))
        flat, unravel = flat_view(jax.tree_util.tree_map(jnp.zeros_like, template))
        if initial_params is not None:
            given = flat_view(initial_params)[0]
            if given.shape != flat.shape:
                raise bad_value(
                    "initial_params",
                    f"{given.shape[0]} parameters",
                    f"must have the policy's structure ({flat.shape[0]} parameters)",
                )
        value = exact_utility_value(env, env_params, policy, utility)
        exact_value = None if value is None else (lambda theta: value(unravel(theta)))
        dim = flat.shape[0]
        teacher = masked_return if utility is None else utility
        return cls(
            env, env_params, policy, oracle, dim, unravel, exact_value, teacher, initial_params
        )

    @property
    def horizon(self) -> int:
        return self.env.horizon(self.env_params)

    def initial_theta(self, key) -> jax.Array:
        """Flat θ_0: `policy.init(key)`, or the fixed initial_params (the key is then unused)."""
        params = self.policy.init(key) if self.initial_params is None else self.initial_params
        return flat_view(params)[0]

    def require_oracle(self, who: str) -> None:
        if self.oracle is None:
            raise ConfigError(f"{who} learns from preferences and needs an oracle; got None")

    def require_exact(self, who: str) -> None:
        if self.exact_value is None:
            raise ConfigError(f"{who} needs a tabular environment; {self.env!r} has no exact model")


def exact_utility_value(env, env_params, policy, utility):
    """params -> exact E[u] of the policy, or None (no tabular model, or u has no exact form).
    The return takes the plain backward induction; path utilities the product model."""
    if not hasattr(env, "tabular_model"):
        return None
    if utility is None or isinstance(utility, Return):
        return value_fn(env.tabular_model(env_params), policy, env.num_states(env_params))
    if isinstance(utility, Utility) and utility.automaton(env.tabular_model(env_params)):
        return utility_value_fn(env, env_params, utility, policy)
    return None


class AlgorithmConfig(Settings):
    """Base of every algorithm config.

    budget_field: the field a human-query budget sets (None for methods that are never
    budget-matched); unit_cost() what one unit of it spends, as Python ints. The run's total is
    `getattr(config, budget_field or iterations_field) * unit_cost() + fixed_cost()` and env
    steps are at most trajectories × H. iterations_field: the field that counts the trainer's
    iterations.
    """

    budget_field: ClassVar[str | None] = "num_iterations"
    iterations_field: ClassVar[str] = "num_iterations"

    def unit_cost(self) -> Spent:
        raise NotImplementedError(f"{type(self).__name__} declares no unit_cost")

    def fixed_cost(self) -> Spent:
        """What a run spends beside its budget units, as Python ints; it never includes human
        queries, which are all in the units. Zero unless a method's iterations are not units of
        its budget: e.g. PPO's rollouts on a reward model fitted once from a query budget."""
        return unit_cost()

    @property
    def num_steps(self) -> int:
        """The number of trainer iterations (the value of iterations_field)."""
        return getattr(self, self.iterations_field)

    def with_budget(self, budget: int, unit: str = "queries"):
        """A copy whose budget_field spends at most `budget` of `unit` (human queries, or the
        judged trajectories those queries show the human)."""
        field = self.budget_field
        per_unit = getattr(self.unit_cost(), unit)
        what = unit.replace("_", " ")
        if per_unit < 1:
            raise bad_value(field, "budget", f"this method spends no {what}: it cannot be matched")
        if per_unit > budget:
            raise ConfigError(
                f"spends {per_unit} {what} per unit of {field}, more than "
                f"budget_queries = {budget} ({what}) allows"
            )
        return dataclasses.replace(self, **{field: budget // per_unit})


def check_budget_fits(config: AlgorithmConfig, horizon: int) -> None:
    """Refuse runs whose cumulative int32 counters would overflow (checked once, here)."""
    field = config.budget_field or config.iterations_field
    units = getattr(config, field)
    cost, fixed = config.unit_cost(), config.fixed_cost()
    trajectories = units * cost.trajectories + fixed.trajectories
    totals = {
        "queries": units * cost.queries,
        "trajectories": trajectories,
        "judged trajectories": units * cost.judged_trajectories,
        "env steps": trajectories * horizon,
    }
    for what, total in totals.items():
        if total > INT32_MAX:
            # Env steps grow with the horizon too: say so, it may be what is too big.
            at = f" at horizon {horizon:,}" if what == "env steps" else ""
            raise bad_value(
                field,
                units,
                f"budget counters would exceed int32 ({what}{at}: {total:,} > {INT32_MAX:,}); "
                "split the run",
            )


# -- the trainer and the algorithm -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Trainer:
    """What make_trainer returns.

    init(key) -> state; iterate(state, t, key) -> (state, Spent, metrics), where metrics is a
    dict of scalars for iteration t; policy_params(state) -> the current policy's parameters.
    Iteration t gets its own key (fold_in of the seed's run key and t), so a run gives the same
    numbers in one call or in chunks.

    diagnostics(state) -> dict of scalars (optional): checks that read the state but do not
    change it (e.g. DPO's held-out accuracy and exact KL). They are reported as metrics of the
    iteration that produced the state, but a runner computes them only where it logs.
    """

    init: Callable
    iterate: Callable
    policy_params: Callable
    diagnostics: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """A registry entry: name, config class, trainer factory and how it is compared.

    reference: reward access (an upper bound): never budget-matched, and shares one run across
    a panel's teacher links. assumes: the link the method assumes about the teacher, for
    `zopg list` ("known" means it is told the teacher's link). search_space: the fields `zopg
    tune` may set and their ranges (zopg.algorithms.search_space.SearchSpace), checked against
    the config's declared rules when the algorithm is registered. nan_when_undefined: metrics
    that are NaN by definition when there is nothing to measure (an accuracy over informative
    pairs, in a batch of ties); the report does not flag those as non-finite.
    """

    name: str
    config: type
    make_trainer: Callable
    description: str
    reference: bool = False
    assumes: str = ""
    search_space: Any = None
    nan_when_undefined: tuple[str, ...] = ()

    def __post_init__(self):
        if self.search_space is not None:
            self.search_space.check(self.config, f"{self.name}.search_space")
        if not (dataclasses.is_dataclass(self.config) and issubclass(self.config, AlgorithmConfig)):
            raise bad_value(
                f"{self.name}.config",
                self.config,
                "must be a dataclass derived from AlgorithmConfig",
            )
        if not self.reference and self.config.budget_field is None:
            raise bad_value(
                f"{self.name}.config.budget_field", None, "budget-matched methods must name one"
            )
