"""Shares of an experiment's runs for several processes or machines, and per-run locks.

An experiment is a set of independent runs. `Shard(i, n)` owns the runs whose id hashes to i
modulo n: the assignment depends on the run id alone, so a rerun or a resume of shard i finds
the same runs (and adding a method to the file does not move the others).

While a process runs a run it holds `runs/<run id>.lock`, an OS lock (`flock`: owned by the open
file, so two openings in one process exclude each other too; Linux's NFS client turns it into a
lock held at the server). The kernel drops the lock when the process dies however it dies,
so a lock file left behind by a killed process is free: the next process takes it over and
resumes from the run's checkpoint. The file's text (host, pid, start time) is only for messages.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path

from zopg.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def owns(self, run_id: str) -> bool:
        # sha256, not hash(): Python salts str hashes per process.
        digest = hashlib.sha256(run_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """'i/N' with 0 <= i < N, as SLURM array task ids and submitit's job arrays count."""
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: must be i/N with integers, e.g. 0/4") from None
    if count < 1:
        raise ConfigError(f"--shard {text}: N = {count} must be an integer >= 1")
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text}: i = {index} must be in 0..{count - 1}")
    return Shard(index, count)


class RunLock:
    """`with RunLock(path) as held:` held is True when this process owns the run, False when
    another live process does (then `holder` says who, as far as its lock file tells)."""

    def __init__(self, path):
        self.path = Path(path)
        self.fd: int | None = None
        self.holder = ""

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            # O_NOFOLLOW: a link planted at the lock's path must not make us truncate its target.
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise ConfigError(f"{self.path}: is a symbolic link, not a lock file") from None
                if err.errno == errno.EISDIR:
                    raise ConfigError(f"{self.path}: is a folder, not a lock file") from None
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK):
                    raise
                self.holder = self._read_holder()
                return False
            # The holder before us may have removed the file after we opened it: then we locked
            # an orphaned inode that nobody else will ever look at. Start again on the new file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is None:
            return
        # Unlink while still holding the lock, so nobody can lock this inode and believe it is
        # the current one (acquire checks the inode against the path).
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing drops the lock
        self.fd = None

    def _read_holder(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
            return f"pid {info['pid']} on {info['host']} since {since}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"
