"""The runner's progress bar: drawn with an ETA on a terminal, silent otherwise or when quiet."""

import io

from zopg.experiments.progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A perf_counter that stands still until the test moves it."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        monkeypatch.setattr("zopg.experiments.progress.time.perf_counter", lambda: self.now)


def test_bar_shows_counts_and_eta_on_a_terminal(monkeypatch):
    clock = Clock(monkeypatch)
    stream = FakeTerminal()
    bar = Progress(100, "zpg__open__bt", stream=stream)
    assert "0/100 it" in stream.getvalue() and "ETA     ?" in stream.getvalue()
    clock.now = 10.0
    bar.update(25)  # 25 iterations in 10 s: 75 left take 30 s
    clock.now = 20.0
    bar.update(50)  # 50 in 20 s: 50 left take 20 s
    bar.close()
    frames = stream.getvalue().split("\r")[1:]
    assert frames[1].startswith("zpg__open__bt") and "25/100 it ETA    30s" in frames[1]
    assert "[############------------] 50/100 it ETA    20s" in frames[2]
    assert stream.getvalue().endswith("\n")


def test_resumed_bar_measures_its_rate_from_where_it_resumed(monkeypatch):
    clock = Clock(monkeypatch)
    stream = FakeTerminal()
    bar = Progress(100, "run", stream=stream, done=60)
    clock.now = 5.0
    bar.update(80)  # 20 iterations in 5 s since the resume: 20 left take 5 s
    assert stream.getvalue().split("\r")[-1].endswith("80/100 it ETA     5s")


def test_silent_when_quiet_or_not_a_terminal():
    for stream, enabled in [(FakeTerminal(), False), (io.StringIO(), True)]:
        bar = Progress(10, "run", enabled=enabled, stream=stream)
        bar.update(5)
        bar.close()
        assert stream.getvalue() == ""
