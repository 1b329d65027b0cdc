"""Speed reports kept section by section: where each section ran, and `--only` merging."""

from __future__ import annotations

import os
from pathlib import Path

from zopg import store
from zopg.provenance import timestamp

# What says where a section was measured; sections measured elsewhere are flagged when merged.
ENV_KEYS = ("device", "host", "versions")


def section_run(
    module: str, name: str, quick: bool, runtime_s: float, load_before: float, env: dict
) -> dict:
    """Where and when one section was measured; it travels with the section when files merge."""
    flags = " --quick" if quick else ""
    return {
        "timestamp": timestamp(),
        "runtime_s": runtime_s,
        "quick": quick,
        "command": f".venv/bin/python -m {module} --only {name}{flags}",
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
