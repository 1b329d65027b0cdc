"""Shared benchmark helpers: machine description, repeat timing, atomic JSON, merged reports."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from zopg import store
from zopg.provenance import (  # noqa: F401  (re-exported for the benchmark scripts)
    REPO_ROOT,
    device,
    environment,
    git_revision,
    host,
    timestamp,
    versions,
)


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


# A Monte Carlo check agrees with its reference when within this many standard errors.
TOLERANCE_SE = 5.0


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


# -- reports merged section by section (`--only NAME`) ---------------------------------------

# What says where a section was measured; sections measured elsewhere are flagged when merged.
ENV_KEYS = ("device", "host", "versions")


def section_run(
    script: str, name: str, quick: bool, runtime_s: float, load_before: float, env: dict
) -> dict:
    """Where and when one section was measured; it travels with the section when files merge."""
    flags = " --quick" if quick else ""
    return {
        "timestamp": timestamp(),
        "runtime_s": runtime_s,
        "quick": quick,
        "command": f".venv/bin/python benchmarks/{script} --only {name}{flags}",
        # The CPU is shared: other jobs' load inflates wall times, so it is recorded with them.
        "load_average_1m_before_after": [load_before, os.getloadavg()[0]],
        **env,
    }


def differs(a, b) -> bool:
    """True when a value recorded in both differs (a key only one side records does not count)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return any(differs(a[key], b[key]) for key in a.keys() & b.keys())
    return a != b


def read_previous(path: Path, benchmark: str) -> dict | None:
    """The existing report that --only merges into (None if there is none), checked up front."""
    if not path.exists():
        return None
    try:
        old = store.read_json(path)
    except ValueError as err:
        raise SystemExit(
            f"error: {path} is not valid JSON ({err}); move it aside or fix it"
        ) from None
    if not isinstance(old, dict) or old.get("benchmark") != benchmark:
        raise SystemExit(f"error: {path} is not a {benchmark} report; refusing to merge into it")
    return old


def merge_report(old: dict | None, new: dict) -> dict:
    """`new` (sections just run) over `old` (the file as it was): other sections are kept.

    The top level describes the latest run. Each section keeps its own `run` record; sections
    written before per-section records existed get one from the old file's top level. Sections
    whose device, host or versions differ from the top level are listed in `mixed_environment`,
    and sections measured at --quick sizes in `quick_sections`.
    """
    sections = {}
    if old is not None:
        inherited = {key: old.get(key) for key in (*ENV_KEYS, "git", "timestamp", "quick")}
        for name, section in old.get("sections", {}).items():
            if "run" not in section:
                section = {**section, "run": {**inherited, "runtime_s": None, "inherited": True}}
            sections[name] = section
    sections.update(new["sections"])
    merged = {**new, "sections": sections}
    merged["mixed_environment"] = sorted(
        name
        for name, section in sections.items()
        if any(differs(section["run"].get(key), new[key]) for key in ENV_KEYS)
    )
    merged["quick_sections"] = sorted(
        name for name, section in sections.items() if section["run"].get("quick")
    )
    return merged
