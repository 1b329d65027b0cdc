"""Algorithms by name, with what the runner needs: config class, trainer and budget accounting."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from zopg.algorithms import dpo, ppo, references, rm_ppo, zbcpg, zpg
from zopg.errors import bad_value, unknown_name


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """How the runner builds and budgets one algorithm.

    make_trainer(config, env, policy, oracle, env_params) -> zopg.algorithms.trainer.Trainer.
    budget_field: the config field the runner derives from the experiment's query budget
    (num_iterations for per-iteration spenders; e.g. a dataset size for offline methods), and
    queries_per_unit(config) -> int, the queries one unit of that field costs. References
    (reward access) are never budget-matched: their fields come from the experiment file.
    """

    config_cls: type
    make_trainer: Callable
    queries_per_unit: Callable | None = None
    budget_field: str = "num_iterations"
    reference: bool = False
    description: str = ""
    fixed: dict = dataclasses.field(default_factory=dict)  # config fields set by the name

    def build_config(self, **fields):
        clash = sorted(set(fields) & set(self.fixed))
        if clash:
            raise bad_value(clash[0], fields[clash[0]], f"is fixed to {self.fixed[clash[0]]!r}")
        return self.config_cls(**_nested(self.config_cls, fields), **self.fixed)

    def allowed_fields(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self.config_cls)} - set(self.fixed)


def _nested(config_cls, fields: dict) -> dict:
    """TOML gives sub-configs (e.g. RM+PPO's `ppo`) as tables: fold them into their defaults."""
    out = dict(fields)
    for field in dataclasses.fields(config_cls):
        value = out.get(field.name)
        if not isinstance(value, dict):
            continue
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = field.default
        if dataclasses.is_dataclass(default):
            allowed = {f.name for f in dataclasses.fields(default)}
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise bad_value(
                    f"{field.name}.{unknown[0]}",
                    value[unknown[0]],
                    f"unknown field; allowed: {', '.join(sorted(allowed))}",
                )
            out[field.name] = dataclasses.replace(default, **value)
    return out


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "zpg": AlgorithmSpec(
        zpg.ZPGConfig,
        zpg.make_trainer,
        queries_per_unit=lambda c: c.num_pairs * c.num_queries,
        description="zeroth-order policy gradient from preferences (known link)",
    ),
    "zbcpg": AlgorithmSpec(
        zbcpg.ZBCPGConfig,
        zbcpg.make_trainer,
        queries_per_unit=lambda c: c.num_blocks * c.num_pairs * c.num_queries,
        description="block-coordinate ZPG, P disjoint blocks per iteration",
    ),
    "dpo-online": AlgorithmSpec(
        dpo.DPOConfig,
        dpo.make_trainer,
        queries_per_unit=lambda c: c.num_pairs * c.num_queries,
        fixed={"mode": "online"},
        description="trajectory-level DPO on fresh pairs from the current policy",
    ),
    "dpo-offline": AlgorithmSpec(
        dpo.DPOConfig,
        dpo.make_trainer,
        queries_per_unit=lambda c: c.num_queries,
        budget_field="dataset_size",
        fixed={"mode": "offline"},
        description="trajectory-level DPO on a fixed dataset of pairs from the reference policy",
    ),
    "rm-ppo": AlgorithmSpec(
        rm_ppo.RMPPOConfig,
        rm_ppo.make_trainer,
        queries_per_unit=lambda c: c.num_pairs * c.num_queries,
        budget_field="num_rounds",
        description="Bradley-Terry reward model + PPO on it, queries in rounds (PrefPPO style)",
    ),
    "ppo": AlgorithmSpec(
        ppo.PPOConfig,
        ppo.make_trainer,
        reference=True,
        description="PPO on the true reward (reward access)",
    ),
    "exact-pg": AlgorithmSpec(
        references.ExactPGConfig,
        references.make_trainer,
        reference=True,
        description="gradient ascent on the exact value (tabular; reward access)",
    ),
    "es": AlgorithmSpec(
        references.ESConfig,
        references.make_trainer,
        reference=True,
        description="OpenAI-ES on true returns (reward access)",
    ),
}


def register(name: str, spec: AlgorithmSpec) -> None:
    ALGORITHMS[name] = spec


def get(name: str) -> AlgorithmSpec:
    if name not in ALGORITHMS:
        raise unknown_name("algorithm", name, ALGORITHMS)
    return ALGORITHMS[name]
