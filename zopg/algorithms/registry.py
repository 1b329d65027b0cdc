"""Algorithms by name: the built-in ones, ones registered from Python, and ones named by import
path (`"package.module:NAME"`, NAME an `Algorithm`) so experiments can use algorithms defined
outside zopg."""

from __future__ import annotations

from zopg.algorithms import (
    dpo_offline,
    dpo_online,
    es,
    exact_pg,
    fedavg_dpo,
    par_s2zpo,
    ppo,
    rm_ppo,
    rm_ppo_once,
    zbcpg,
    zpg,
    zspo,
)
from zopg.algorithms.base import Algorithm
from zopg.errors import bad_value, unknown_name
from zopg.plugins import import_object, is_import_path

ALGORITHMS: dict[str, Algorithm] = {
    module.ALGORITHM.name: module.ALGORITHM
    for module in (
        zpg,
        zbcpg,
        zspo,
        par_s2zpo,
        dpo_online,
        dpo_offline,
        fedavg_dpo,
        rm_ppo,
        rm_ppo_once,
        ppo,
        exact_pg,
        es,
    )
}


def register(algorithm: Algorithm, *, replace: bool = False) -> Algorithm:
    """Make `algorithm` known by its name (to experiments, `zopg list` and make_train)."""
    if not isinstance(algorithm, Algorithm):
        raise bad_value("algorithm", algorithm, "must be a zopg.algorithms.Algorithm")
    if algorithm.name in ALGORITHMS and ALGORITHMS[algorithm.name] is not algorithm and not replace:
        raise bad_value("algorithm.name", algorithm.name, "is taken; pass replace=True")
    ALGORITHMS[algorithm.name] = algorithm
    return algorithm


def names() -> tuple[str, ...]:
    """The registered algorithms, built-in ones first."""
    return tuple(ALGORITHMS)


def get(name: str) -> Algorithm:
    """A registered algorithm, or one imported from "package.module:NAME"."""
    if is_import_path(name):
        return _import(name)
    # A non-string (a list from TOML) is no name; `in` would fail on it unhashed.
    if not isinstance(name, str) or name not in ALGORITHMS:
        raise unknown_name("algorithm", name, ALGORITHMS)
    return ALGORITHMS[name]


def _import(path: str) -> Algorithm:
    return import_object(
        "algorithm", path, lambda found: isinstance(found, Algorithm), "a zopg.algorithms.Algorithm"
    )


def for_config(config) -> Algorithm:
    """The algorithm whose config class `config` is an instance of."""
    matches = [a for a in ALGORITHMS.values() if type(config) is a.config]
    if len(matches) != 1:
        raise bad_value(
            "config",
            type(config).__name__,
            "must be the config of exactly one registered algorithm "
            f"({', '.join(a.config.__name__ for a in ALGORITHMS.values())})",
        )
    return matches[0]
