"""A small progress bar with ETA on stderr; silent when asked or when stderr is not a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, enabled: bool = True, done: int = 0, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.label, self.start_done = total, label, done
        self.started = time.perf_counter()
        self.update(done)

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        fraction = done / max(self.total, 1)
        width = 24
        filled = round(width * fraction)
        rate_done = done - self.start_done
        elapsed = time.perf_counter() - self.started
        if rate_done > 0:
            eta = f"ETA {elapsed / rate_done * (self.total - done):5.0f}s"
        else:
            eta = "ETA     ?"
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label[:48]:48} [{bar}] {done}/{self.total} it {eta}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
