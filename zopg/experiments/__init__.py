"""Experiments as data: TOML schema and validation, chunked resumable runner, results store."""

from zopg.experiments.loading import load_experiment
from zopg.experiments.schema import Experiment

__all__ = ["Experiment", "load_experiment"]
