"""Reading an experiment file: include fragments, apply `--set`, parse, build every run once."""

from __future__ import annotations

import copy
from pathlib import Path

from zopg.errors import ConfigError
from zopg.experiments.build import built_runs
from zopg.experiments.includes import apply_includes
from zopg.experiments.overrides import apply_override
from zopg.experiments.schema import Experiment, parse_experiment
from zopg.experiments.tomlfile import read_toml


def load_experiment(
    path, overrides=(), seeds: int | None = None, include: bool = True
) -> Experiment:
    """Read, include fragments, override, parse and fully validate an experiment file (builds
    every run once). include=False leaves the `include` fragments out (zopg tune starts from the
    untuned file)."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise ConfigError(f"{source}: no such experiment file")
    raw = read_toml(path)
    raw = copy.deepcopy(raw)
    if include:
        apply_includes(raw, path)
    else:
        raw.pop("include", None)
    for assignment in overrides:
        apply_override(raw, assignment, source)
    if seeds is not None:
        raw["seeds"] = seeds
    experiment = parse_experiment(raw, source)
    built_runs(experiment)  # every run, built once: the file is valid only if they all build
    return experiment
