"""Nested settings tables override only the fields they name, on top of the parent's default.

The bug this guards against: `RMPPOConfig.from_data({"ppo": {"num_trajectories": 16}})` built
its `ppo` from PPOConfig's own defaults (100 iterations), not from RMPPOConfig's default for it
(one PPO iteration per round), so an experiment that set one PPO field silently ran K = 100.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zopg.algorithms.registry import ALGORITHMS
from zopg.algorithms.settings import Settings
from zopg.preferences import make_link


def nested_fields(config: Settings, path=()):
    """(path to a nested config, field name, rule) for every field of every nested config."""
    for field in dataclasses.fields(config):
        rule = field.metadata.get("rule")
        if rule is not None and rule.kind == "config":
            inner = getattr(config, field.name)
            for inner_field in dataclasses.fields(inner):
                inner_rule = inner_field.metadata.get("rule")
                if inner_rule is not None and inner_rule.kind != "config":
                    yield (*path, field.name), inner_field.name, inner_rule
            yield from nested_fields(inner, (*path, field.name))


CASES = [
    (name, path, field, rule)
    for name, algo in sorted(ALGORITHMS.items())
    for path, field, rule in nested_fields(algo.config())
]


def test_there_are_nested_fields_to_check():
    """RM+PPO nests its reward model and PPO configs; the property below runs over them."""
    assert {(name, path) for name, path, _, _ in CASES} >= {
        ("rm-ppo", ("ppo",)),
        ("rm-ppo", ("reward_model",)),
    }


def other_value(rule, current, draw):
    """A valid TOML value for the rule, different from the current one; and the config value."""
    if rule.kind == "bool":
        return (not current,) * 2
    if rule.kind == "choice":
        value = draw(st.sampled_from([c for c in rule.choices if c != current]))
        return value, value
    if rule.kind == "link":
        name = draw(st.sampled_from(["linear", "bradley-terry", "thurstone"]))
        return name, make_link(name)
    if rule.kind == "sizes":
        value = tuple(draw(st.lists(st.integers(1, 64), min_size=1, max_size=3)))
        value = value if value != current else (*value, 1)
        return list(value), value
    if rule.kind == "integer":
        low = 0 if rule.low is None else int(rule.low)
        high = 10_000 if rule.high is None else int(min(rule.high, 10_000))
        value = draw(st.integers(low, high).filter(lambda v: v != current))
        return value, value
    if rule.kind == "real":
        low = -10.0 if rule.low is None or not math.isfinite(rule.low) else rule.low
        high = 10.0 if rule.high is None or not math.isfinite(rule.high) else rule.high
        value = draw(
            st.floats(low, high, exclude_min=rule.low_open, exclude_max=rule.high_open).filter(
                lambda v: v != current
            )
        )
        return value, value
    raise AssertionError(f"no values for rule kind {rule.kind}")


def with_value(config: Settings, path: tuple, field: str, value) -> Settings:
    """config with one field of one nested config changed, everything else as it was."""
    if not path:
        return dataclasses.replace(config, **{field: value})
    inner = getattr(config, path[0])
    return dataclasses.replace(config, **{path[0]: with_value(inner, path[1:], field, value)})


def as_table(path: tuple, field: str, value) -> dict:
    table = {field: value}
    for part in reversed(path):
        table = {part: table}
    return table


@pytest.mark.parametrize(
    ("name", "path", "field", "rule"),
    CASES,
    ids=[f"{name}:{'.'.join(path)}.{field}" for name, path, field, _ in CASES],
)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_a_nested_table_changes_only_the_field_it_names(name, path, field, rule, data):
    config_cls = ALGORITHMS[name].config
    default = config_cls()
    current = getattr(nested_config(default, path), field)
    toml_value, config_value = other_value(rule, current, data.draw)
    parsed = config_cls.from_data(as_table(path, field, toml_value))
    assert parsed == with_value(default, path, field, config_value)


def nested_config(config, path):
    for part in path:
        config = getattr(config, part)
    return config


def test_rm_ppo_keeps_one_ppo_iteration_per_round():
    """The case the audit found: the K = 1 arm of the over-optimisation regime ran K = 100."""
    from zopg.algorithms.rm_ppo import RMPPOConfig

    assert RMPPOConfig().ppo.num_iterations == 1
    parsed = RMPPOConfig.from_data({"ppo": {"num_trajectories": 16}})
    assert parsed.ppo.num_iterations == 1
    assert parsed.ppo.num_trajectories == 16
