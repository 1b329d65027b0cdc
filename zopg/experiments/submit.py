"""`zopg submit`: an experiment's shards as one submitit job array (SLURM, or local processes).

Every job is a command line, `python -m zopg run EXPERIMENT --shard i/N --out OUT` (see
zopg.experiments.shards), run by the submitting interpreter: the job imports nothing of the
submitting process (this module never imports the CLI), and a job that dies is resubmitted by
running the same command again: it skips what is finished, resumes from checkpoints and leaves
runs another job holds alone. `zopg report OUT` merges.

submitit keeps its own files (scripts, logs, and the pickled call it hands each job) in the
folder given by --logs, outside the results folder: nothing under the results folder is ever a
pickle (see zopg.store).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from zopg.errors import ConfigError, missing_extra

CLUSTERS = ("auto", "slurm", "local", "debug")


def shard_command(argv: list[str]) -> list[str]:
    """The command line of one job: this interpreter running the `zopg` module."""
    return [sys.executable, "-m", "zopg", *argv]


def shard_commands(experiment: str, out: Path, shards: int, sets=(), seeds=None) -> list[list]:
    """The `zopg run` arguments of each shard, with absolute paths (jobs may start elsewhere)."""
    common = ["--out", str(out.resolve()), "--quiet"]
    for assignment in sets:
        common += ["--set", assignment]
    if seeds is not None:
        common += ["--seeds", str(seeds)]
    return [["run", experiment, "--shard", f"{i}/{shards}", *common] for i in range(shards)]


def make_executor(cluster: str, folder: Path, options: dict):
    """A submitit executor for `cluster` with the user's options (submitit's own names, e.g.
    timeout_min, slurm_partition, gpus_per_node, slurm_array_parallelism)."""
    try:
        import submitit
    except ModuleNotFoundError as err:
        raise missing_extra("zopg submit", err, "slurm") or err from None

    if cluster not in CLUSTERS:
        raise ConfigError(f"--cluster {cluster!r}: must be one of {', '.join(CLUSTERS)}")
    try:
        executor = submitit.AutoExecutor(
            folder=folder, cluster=None if cluster == "auto" else cluster
        )
    except RuntimeError as err:  # auto found no cluster at all
        raise ConfigError(f"--cluster auto: {err}; use --cluster local") from None
    try:
        executor.update_parameters(**options)
    except (NameError, ValueError, TypeError) as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"--option: {first} (submitit's parameter names)") from None
    return executor


def submit(
    experiment: str,
    out: Path,
    shards: int,
    cluster: str = "auto",
    options: dict | None = None,
    logs: Path | None = None,
    sets=(),
    seeds=None,
):
    """Submit the shards as one job array; returns the submitit jobs."""
    if shards < 1:
        raise ConfigError(f"--shards = {shards}: must be an integer >= 1")
    logs = Path(logs) if logs is not None else Path(".submitit") / out.name
    executor = make_executor(cluster, logs, options or {})
    import submitit.helpers  # make_executor has imported submitit

    commands = shard_commands(os.path.abspath(experiment), out, shards, sets, seeds)
    jobs = []
    # One batch is one job array; a job fails (with zopg's message) when its command exits != 0.
    with executor.batch():
        for argv in commands:
            command = submitit.helpers.CommandFunction(shard_command(argv), verbose=False)
            jobs.append(executor.submit(command))
    return jobs
