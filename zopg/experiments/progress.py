"""Progress of a run on stderr: a bar on a terminal, plain lines in a log file, none when quiet."""

from __future__ import annotations

import sys
import time


class Progress:
    """A bar redrawn in place when the stream is a terminal; otherwise (a log file, SLURM,
    nohup) one plain line at most every `interval` seconds and at the end, so a job's log shows
    it is alive. The ETA is measured from the end of the first chunk: that chunk also compiles,
    and an ETA from it would be wildly long."""

    def __init__(
        self,
        total: int,
        label: str,
        enabled: bool = True,
        done: int = 0,
        stream=None,
        interval: float = 5.0,
    ):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.label, self.start_done = total, label, done
        self.interval = interval
        self.mark: tuple[float, int] | None = None  # (time, done) when the first chunk ended
        self.last_line = -float("inf")
        self.update(done)

    def _eta(self, now: float, done: int) -> str:
        if self.mark is None and done > self.start_done:
            self.mark = (now, done)
        if self.mark is None or done <= self.mark[1]:
            return "ETA     ?"
        since, then = now - self.mark[0], done - self.mark[1]
        return f"ETA {since / then * (self.total - done):5.0f}s"

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        eta = self._eta(now, done)
        if self.terminal:
            width = 24
            filled = round(width * done / max(self.total, 1))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r{self.label[:48]:48} [{bar}] {done}/{self.total} it {eta}")
        elif now - self.last_line >= self.interval or done >= self.total:
            self.stream.write(f"{self.label}: {done}/{self.total} it {eta}\n")
            self.last_line = now
        else:
            return
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.terminal:
            self.stream.write("\n")
            self.stream.flush()
