"""Results store: atomic writes, checkpoints that survive a kill, tidy metrics, JSON files."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import tempfile
from pathlib import Path

import jax
import numpy as np

# metrics.csv: one row per (method, env, link, seed, iteration); pandas.read_csv reads it.
TIDY_COLUMNS = (
    "method",
    "algorithm",
    "reference",
    "env",
    "link",
    "seed",
    "iteration",
    "queries",
    "trajectories",
    "env_steps",
    "value",
    "value_se",
    "score",
)
# column -> the metrics that fill it, first present wins. `value` is the exact V(θ) where the env
# has an exact model, else the Monte Carlo mean return (`value_se` its standard error).
TIDY_METRICS = {
    "queries": ("budget/queries",),
    "trajectories": ("budget/trajectories",),
    "env_steps": ("budget/env_steps",),
    "value": ("exact/value", "eval/return"),
    "value_se": ("eval/return_se",),
}


def value_metric(metrics: dict, column: str = "value"):
    """The array behind a tidy column (see TIDY_METRICS), or None."""
    return next((metrics[n] for n in TIDY_METRICS[column] if n in metrics), None)


def write_bytes_atomic(path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json_atomic(path, data) -> Path:
    text = json.dumps(_jsonable(data), indent=2, sort_keys=False, default=str) + "\n"
    return write_bytes_atomic(path, text.encode())


def read_json(path):
    return json.loads(Path(path).read_text())


# -- checkpoints ---------------------------------------------------------------------------------


def _to_host(leaf):
    """PRNG keys are stored as their raw key data; everything else as a NumPy array."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return ("key", np.asarray(jax.random.key_data(leaf)))
    return ("array", np.asarray(leaf))


def save_checkpoint(path, carry, payload: dict) -> None:
    leaves = [_to_host(leaf) for leaf in jax.tree_util.tree_leaves(carry)]
    write_bytes_atomic(path, pickle.dumps({"leaves": leaves, **payload}))


def load_checkpoint(path, like):
    """(carry, payload) with the structure, key types and shardings of `like` (a fresh init)."""
    with open(path, "rb") as f:
        data = pickle.load(f)
    template, treedef = jax.tree_util.tree_flatten(like)
    if len(template) != len(data["leaves"]):
        raise ValueError(f"checkpoint {path} does not match this run's state")
    leaves = []
    for ref, (kind, value) in zip(template, data.pop("leaves"), strict=True):
        if kind == "key":
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(ref))
        leaves.append(jax.device_put(value, ref.sharding))
    return jax.tree_util.tree_unflatten(treedef, leaves), data


# -- tidy metrics --------------------------------------------------------------------------------


def write_tidy(path, runs: list[dict]) -> Path:
    """runs: dicts with method/algorithm/reference/env/link, `iterations` [P], `metrics` name ->
    [seeds, P] arrays and `normalise` (value -> score)."""
    rows = []
    for run in runs:
        metrics, iterations = run["metrics"], run["iterations"]
        seeds = next(iter(metrics.values())).shape[0]
        columns = {}
        for column in TIDY_METRICS:
            found = value_metric(metrics, column)
            columns[column] = np.full((seeds, iterations.size), np.nan) if found is None else found
        columns["score"] = run["normalise"](columns["value"])
        for seed in range(seeds):
            for j, iteration in enumerate(iterations):
                rows.append(
                    (
                        run["method"],
                        run["algorithm"],
                        int(run["reference"]),
                        run["env"],
                        run["link"],
                        seed,
                        int(iteration),
                        *(_cell(columns[c][seed, j]) for c in TIDY_COLUMNS[7:]),
                    )
                )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TIDY_COLUMNS)
    writer.writerows(rows)
    return write_bytes_atomic(path, buffer.getvalue().encode())


def _cell(x):
    x = float(x)
    if not np.isfinite(x):
        return ""
    return int(x) if x == int(x) and abs(x) < 2**53 else f"{x:.6g}"


def read_tidy(path) -> dict[str, np.ndarray]:
    """metrics.csv as columns (strings for names, floats for numbers; empty cells are NaN)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    columns = {}
    for i, name in enumerate(header):
        values = [row[i] for row in rows]
        if name in ("method", "algorithm", "env", "link"):
            columns[name] = np.array(values, dtype=object)
        else:
            columns[name] = np.array([float(v) if v else np.nan for v in values])
    return columns
