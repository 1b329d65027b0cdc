"""Helpers shared by the speed benchmarks, the studies and the reports: atomic JSON of results."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zopg import store


def _jsonable(value):
    """Arrays and paths in benchmark results become lists and strings."""
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        return np.asarray(value).tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_atomic(path, data) -> Path:
    """Atomic JSON (see zopg.store): readers never see a half-written file."""
    return store.write_json_atomic(path, _walk(data))


def _walk(value):
    if isinstance(value, dict):
        return {k: _walk(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v) for v in value]
    return _jsonable(value)
