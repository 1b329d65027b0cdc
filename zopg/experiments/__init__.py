"""Experiments as data: TOML schema and validation, chunked resumable runner, results store."""

from zopg.experiments.schema import Experiment, load_experiment

__all__ = ["Experiment", "load_experiment"]
