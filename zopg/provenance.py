"""Where and with what a result was produced: device, host, package versions, git revision."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("zopg", "jax", "jaxlib", "numpy", "flax", "optax", "chex", "gymnax", "brax")


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
