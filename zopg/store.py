"""Results store: atomic writes, run files, checkpoints and tidy metrics; arrays and JSON only.

Nothing read back from a results folder can execute code: run files and checkpoints are NumPy
`.npz` archives loaded with allow_pickle=False, with their metadata as JSON.

A results folder holds
    experiment.json           the resolved experiment and its runs (written by the runner)
    runs/<run id>.json|.npz   one finished run: metadata; logged iterations and metrics [seeds, P]
    runs/<run id>.ckpt        the latest checkpoint of an unfinished run
    metrics.csv, summary.json, manifest.json, figures/   (written by zopg.analysis.report)
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import jax
import numpy as np

from zopg.errors import ConfigError

# metrics.csv: one row per (method, env, link, seed, iteration); pandas.read_csv reads it.
# Each seed's first row (iteration INITIAL_ITERATION) is its initial policy, before anything was
# spent, so curves start at 0 queries; files written before that row existed lack it, and readers
# of final values and crossings take the logged iterations only (logged_rows).
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
    "judged_trajectories",
    "env_steps",
    "value",
    "value_se",
    "score",
    "kl_to_reference",
)
NAME_COLUMNS = ("method", "algorithm", "env", "link")
# column -> the metric that fills it. `value` is the evaluator's value of the teacher's utility
# (exact where the env has an exact model, else the Monte Carlo mean; `value_se` its standard
# error, 0 when exact). `kl_to_reference` is the exact trajectory KL of the policy to the seed's
# initial policy (exact evaluators only; empty otherwise and in runs from before it existed).
TIDY_METRICS = {
    "queries": "budget/queries",
    "trajectories": "budget/trajectories",
    "judged_trajectories": "budget/judged_trajectories",
    "env_steps": "budget/env_steps",
    "value": "eval/value",
    "value_se": "eval/value_se",
    "kl_to_reference": "eval/kl_to_reference",
}
INITIAL_ITERATION = -1
EXPERIMENT_FILE = "experiment.json"
# Everything a damaged, truncated or foreign npz can raise on the way in (zlib: a corrupt
# compressed member).
CHECKPOINT_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


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
    except OSError as err:  # a full disk, a read-only folder: say which file
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, f"cannot write {path}: {err.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_figure(fig, path, dpi: int = 110) -> Path:
    """A matplotlib figure as a PNG, written atomically (a kill never leaves half an image)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return write_bytes_atomic(path, buffer.getvalue())


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    elif hasattr(value, "__array__"):  # numpy and jax arrays, whatever the device
        return _jsonable(np.asarray(value).tolist())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def json_text(data) -> str:
    return json.dumps(_jsonable(data), indent=2, sort_keys=False, default=str) + "\n"


def write_json_atomic(path, data) -> Path:
    return write_bytes_atomic(path, json_text(data).encode())


def read_json(path):
    """A JSON file of a results folder; a damaged one (truncated, not UTF-8, nested beyond
    reason) is one ConfigError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError too
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ConfigError(f"{path}: damaged ({reason}); delete it or write it again") from None


def _npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _metric_key(name: str) -> str:
    return name.replace("/", "__")


def _metric_name(key: str) -> str:
    return key.replace("__", "/")


# -- finished runs -------------------------------------------------------------------------------


def write_run(runs_dir, run_id: str, meta: dict, iterations, metrics: dict) -> None:
    """Arrays first, metadata last: a run counts as finished once its JSON exists."""
    runs_dir = Path(runs_dir)
    arrays = {"__iterations__": np.asarray(iterations)}
    arrays.update({_metric_key(k): np.asarray(v) for k, v in metrics.items()})
    write_bytes_atomic(runs_dir / f"{run_id}.npz", _npz_bytes(arrays))
    write_json_atomic(runs_dir / f"{run_id}.json", meta)


def finished_run_hash(runs_dir, run_id: str) -> str | None:
    """The run hash of a finished run, or None if it is missing or unreadable."""
    meta, data = Path(runs_dir) / f"{run_id}.json", Path(runs_dir) / f"{run_id}.npz"
    if not (meta.exists() and data.exists()):
        return None
    try:
        found = read_json(meta)
    except (OSError, ValueError):  # ConfigError is a ValueError: a damaged file is not finished
        return None
    found = found.get("run_hash") if isinstance(found, dict) else None
    return found if isinstance(found, str) and _arrays_readable(data) else None


def _arrays_readable(path: Path) -> bool:
    """Whether a run's .npz is an archive of plain arrays with its iterations, from the array
    headers alone (cheap): a truncated file or an object array (which would need a pickle)
    makes the run unfinished, so it runs again instead of failing every report."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            for name in names:
                with archive.open(name) as member:
                    major, _ = np.lib.format.read_magic(member)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if major == 1
                        else np.lib.format.read_array_header_2_0
                    )
                    _, _, dtype = read_header(member)
                    if dtype.hasobject:
                        return False
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False
    return "__iterations__.npy" in names


def load_run(runs_dir, run_id: str) -> dict:
    """A finished run: its metadata, `iterations` [P] and `metrics` name -> [seeds, P]."""
    runs_dir = Path(runs_dir)
    meta = read_json(runs_dir / f"{run_id}.json")
    path = runs_dir / f"{run_id}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            iterations = data["__iterations__"]
            metrics = {_metric_name(k): data[k] for k in data.files if k != "__iterations__"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        # Truncated, not an archive, an object array (refused: no pickles), a missing part.
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ConfigError(f"{path}: damaged ({reason}); delete it to run it again") from None
    if not isinstance(meta, dict) or not all(
        isinstance(meta.get(k), str) for k in ("method", "env", "run_hash")
    ):
        raise ConfigError(f"{runs_dir / f'{run_id}.json'}: damaged (not a run record)")
    return {**meta, "iterations": iterations, "metrics": metrics}


def write_experiment(out_dir, record: dict) -> Path:
    return write_json_atomic(Path(out_dir) / EXPERIMENT_FILE, record)


def read_experiment(out_dir) -> dict:
    """experiment.json, checked for the shape every reader relies on (a name, a list of run
    entries with their ids, a list of sweeps): a damaged one is one ConfigError naming it."""
    path = Path(out_dir) / EXPERIMENT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{out_dir}: no {EXPERIMENT_FILE}; run the experiment first")
    record = read_json(path)
    entries = record.get("runs") if isinstance(record, dict) else None
    if not (
        isinstance(entries, list)
        and isinstance(record.get("name"), str)
        and isinstance(record.get("sweeps", []), list)
        and all(isinstance(e, dict) and isinstance(e.get("run_id"), str) for e in entries)
    ):
        raise ConfigError(f"{path}: damaged (not an experiment record); run the experiment again")
    return record


# -- checkpoints ---------------------------------------------------------------------------------


def save_checkpoint(path, carry, payload: dict, kept: dict) -> None:
    """The carry's leaves (PRNG keys as their raw key data), the metrics kept so far and a JSON
    payload, in one npz written atomically."""
    arrays = {"__payload__": np.array(json.dumps(_jsonable(payload)))}
    for i, leaf in enumerate(jax.tree_util.tree_leaves(carry)):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            arrays[f"key{i:05d}"] = np.asarray(jax.random.key_data(leaf))
        else:
            arrays[f"leaf{i:05d}"] = np.asarray(leaf)
    for name, value in kept.items():
        arrays[f"kept__{_metric_key(name)}"] = np.asarray(value)
    write_bytes_atomic(path, _npz_bytes(arrays))


def load_checkpoint(path, like):
    """(carry, payload, kept) with the structure, key types and shardings of `like` (a fresh
    init). Raises one of CHECKPOINT_ERRORS for a damaged, truncated or foreign file."""
    template, treedef = jax.tree_util.tree_flatten(like)
    with np.load(path, allow_pickle=False) as data:
        payload = json.loads(str(data["__payload__"]))
        leaves = []
        for i, ref in enumerate(template):
            is_key = jax.dtypes.issubdtype(ref.dtype, jax.dtypes.prng_key)
            value = data[f"key{i:05d}" if is_key else f"leaf{i:05d}"]
            if is_key:
                value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(ref))
            if value.shape != ref.shape or value.dtype != ref.dtype:
                raise ValueError(f"checkpoint {path} does not match this run's state")
            leaves.append(jax.device_put(value, ref.sharding))
        if any(k.startswith(("leaf", "key")) and int(k[-5:]) >= len(template) for k in data.files):
            raise ValueError(f"checkpoint {path} does not match this run's state")
        kept = {
            _metric_name(k.removeprefix("kept__")): data[k]
            for k in data.files
            if k.startswith("kept__")
        }
    return jax.tree_util.tree_unflatten(treedef, leaves), payload, kept


# -- tidy metrics --------------------------------------------------------------------------------


def tidy_column(metrics: dict, column: str):
    """The [seeds, P] array behind a tidy column (see TIDY_METRICS), or None."""
    return metrics.get(TIDY_METRICS[column])


def write_tidy(path, runs: list[dict], sweep_labels=()) -> Path:
    """runs: dicts with method/algorithm/reference/env/link/sweep, `iterations` [P], `metrics`
    name -> [seeds, P] arrays and `normalise` (value -> score), and optionally `initial_value`
    and `initial_value_se` ([seeds], the initial policy's): then each seed's rows start with one
    at INITIAL_ITERATION with nothing spent. Each swept field is a column after `link` (named by
    its label)."""
    rows = []
    for run in runs:
        metrics = run["metrics"]
        iterations = np.asarray(run["iterations"])
        seeds = next(iter(metrics.values())).shape[0]
        columns = {}
        for column in TIDY_METRICS:
            found = tidy_column(metrics, column)
            columns[column] = np.full((seeds, iterations.size), np.nan) if found is None else found
        if run.get("initial_value") is not None:
            initial = {column: np.zeros(seeds) for column in TIDY_METRICS}
            initial["value"] = np.asarray(run["initial_value"], dtype=float)
            se = run.get("initial_value_se")
            initial["value_se"] = np.full(seeds, np.nan) if se is None else np.asarray(se, float)
            if tidy_column(metrics, "kl_to_reference") is None:
                initial["kl_to_reference"] = np.full(seeds, np.nan)
            # else 0: the reference of the KL is the seed's initial policy itself.
            iterations = np.concatenate([[INITIAL_ITERATION], iterations])
            columns = {
                c: np.concatenate([initial[c][:, None], columns[c]], axis=1) for c in columns
            }
        columns["score"] = run["normalise"](columns["value"])
        numeric = TIDY_COLUMNS[7:]
        for seed in range(seeds):
            for j, iteration in enumerate(iterations):
                rows.append(
                    (
                        *(run[c] for c in ("method", "algorithm")),
                        int(run["reference"]),
                        *(run[c] for c in ("env", "link")),
                        *(run.get("sweep", {}).get(label, "") for label in sweep_labels),
                        seed,
                        int(iteration),
                        *(_cell(columns[c][seed, j]) for c in numeric),
                    )
                )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow((*TIDY_COLUMNS[:5], *sweep_labels, *TIDY_COLUMNS[5:]))
    writer.writerows(rows)
    return write_bytes_atomic(path, buffer.getvalue().encode())


def _cell(x):
    x = float(x)
    if not np.isfinite(x):
        return ""
    return int(x) if x == int(x) and abs(x) < 2**53 else f"{x:.6g}"


def read_tidy(path) -> dict[str, np.ndarray]:
    """metrics.csv as columns (strings for names, floats for numbers; empty cells are NaN); a
    malformed file is one ConfigError naming it."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = list(reader)
    except (StopIteration, csv.Error, UnicodeDecodeError) as err:
        raise ConfigError(
            f"{path}: damaged ({err or 'empty'}); rewrite it with zopg report"
        ) from None
    short = next((n for n, row in enumerate(rows, start=2) if len(row) != len(header)), None)
    if short is not None or "iteration" not in header:
        where = f"line {short} has not {len(header)} cells" if short else "no iteration column"
        raise ConfigError(f"{path}: damaged ({where}); rewrite it with zopg report")
    columns = {}
    for i, name in enumerate(header):
        values = [row[i] for row in rows]
        if name in NAME_COLUMNS:
            columns[name] = np.array(values, dtype=object)
        else:
            columns[name] = _numbers_or_text(values)
    return columns


def logged_rows(columns: dict) -> dict:
    """metrics.csv's columns without the initial-policy rows: the logged iterations only, as
    final values and threshold crossings read them (a file without those rows is unchanged)."""
    keep = np.asarray(columns["iteration"], dtype=float) != INITIAL_ITERATION
    return {name: values[keep] for name, values in columns.items()}


def _numbers_or_text(values: list[str]) -> np.ndarray:
    """Floats (empty cells NaN), or the strings as they are when a cell is not a number (a
    swept value may be a name)."""
    try:
        return np.array([float(v) if v else np.nan for v in values])
    except ValueError:
        return np.array(values, dtype=object)
