"""Shared helpers for benchmarks: machine and version description, repeat timing, atomic JSON."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jax", "jaxlib", "numpy", "flax", "optax", "chex", "gymnax", "brax")


def timestamp() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def versions() -> dict:
    """Python and installed package versions (None for packages that are not installed)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _cpu_model() -> str | None:
    # platform.processor() is often empty on Linux; /proc/cpuinfo names the actual model.
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def host() -> dict:
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        # What this process may actually use (containers often restrict it below cpu_count).
        "cpu_available": len(affinity) if affinity is not None else None,
    }


def device() -> dict:
    import jax

    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
    }


def git_revision() -> dict:
    """Commit and whether the working tree had uncommitted changes; None outside a git checkout."""

    def git(*args):
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment() -> dict:
    """Everything a reader needs to know about where a benchmark ran."""
    return {
        "device": device(),
        "host": host(),
        "versions": versions(),
        "git": git_revision(),
    }


def time_repeats(fn: Callable[[int], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `fn(i)` for i in range(repeats), after `warmup` untimed calls.

    Results are passed through `jax.block_until_ready` so asynchronous dispatch is not mistaken
    for speed; plain Python/NumPy results pass through unchanged.
    """
    import jax

    for i in range(warmup):
        jax.block_until_ready(fn(-1 - i))
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(i))
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(
    fns: dict[str, Callable[[int], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Like `time_repeats` for several functions, timed in rounds of one call each.

    On a shared CPU the load changes over time; interleaving exposes every function to the same
    slow and fast phases, so ratios between them are steadier than with back-to-back blocks.
    """
    import jax

    for i in range(warmup):
        for fn in fns.values():
            jax.block_until_ready(fn(-1 - i))
    times = {name: [] for name in fns}
    for i in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(i))
            times[name].append(time.perf_counter() - start)
    return times


def target(metric: str, value: float, minimum: float) -> dict:
    """A benchmark target: the metric, its value in this run, the bound and whether it was met."""
    return {"metric": metric, "min_ratio": minimum, "value": value, "met": value >= minimum}


def rate_summary(times: list[float], work: float, unit: str = "steps") -> dict:
    """Median rate (work per second) plus every repeat, so noise is visible in the record."""
    median = statistics.median(times)
    return {
        f"{unit}_per_repeat": work,
        "repeats_s": [round(t, 6) for t in times],
        "median_s": median,
        f"{unit}_per_s": work / median,
        f"{unit}_per_s_all": [work / t for t in times],
    }


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "__array__"):  # jax arrays
        return np.asarray(value).tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json_atomic(path, data) -> Path:
    """Write JSON to a temporary file beside `path`, then rename it over `path`.

    A reader (or an interrupted run) therefore sees either the old file or the new one, never a
    half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes the file private; results are meant to be shared
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=_jsonable)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
