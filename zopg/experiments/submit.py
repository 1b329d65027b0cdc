"""`zopg submit`: an experiment's shards as one submitit job array (SLURM, or local processes).

Every job runs `zopg run EXPERIMENT --shard i/N --out OUT` (see zopg.experiments.shards), so a
job that dies is resubmitted by running the same command again: it skips what is finished,
resumes from checkpoints and leaves runs another job holds alone. `zopg report OUT` merges.

submitit keeps its own files (scripts, logs, and the pickled call it hands each job) in the
folder given by --logs, outside the results folder: nothing under the results folder is ever a
pickle (see zopg.experiments.store).
"""

from __future__ import annotations

import os
from pathlib import Path

from zopg.errors import ConfigError

CLUSTERS = ("auto", "slurm", "local", "debug")


def run_shard(argv: list[str]) -> int:
    """The job: one `zopg run ... --shard i/N`; a failure fails the job with zopg's message."""
    from zopg.cli import main

    code = main(argv)
    if code != 0:
        raise RuntimeError(f"zopg {' '.join(argv)} exited with {code}")
    return code


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
    import submitit

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
    commands = shard_commands(os.path.abspath(experiment), out, shards, sets, seeds)
    return executor.map_array(run_shard, commands)
