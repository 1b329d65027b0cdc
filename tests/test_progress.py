"""The runner's progress: a bar with an ETA on a terminal, plain timed lines in a log file, none
when quiet; the ETA waits for the first chunk, which also compiles."""

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


def test_bar_shows_counts_and_an_eta_from_the_second_chunk_on(monkeypatch):
    clock = Clock(monkeypatch)
    stream = FakeTerminal()
    bar = Progress(100, "zpg__open__bt", stream=stream)
    assert "0/100 it" in stream.getvalue() and "ETA     ?" in stream.getvalue()
    clock.now = 60.0
    bar.update(25)  # the first chunk: 60 s, most of it compiling; no rate yet
    clock.now = 70.0
    bar.update(50)  # 25 iterations in 10 s since: 50 left take 20 s
    bar.close()
    frames = stream.getvalue().split("\r")[1:]
    assert frames[1].startswith("zpg__open__bt") and "25/100 it ETA     ?" in frames[1]
    assert "[############------------] 50/100 it ETA    20s" in frames[2]
    assert stream.getvalue().endswith("\n")


def test_resumed_bar_measures_its_rate_from_after_its_first_chunk(monkeypatch):
    clock = Clock(monkeypatch)
    stream = FakeTerminal()
    bar = Progress(100, "run", stream=stream, done=60)
    clock.now = 30.0
    bar.update(70)  # compiled again after the resume
    clock.now = 35.0
    bar.update(80)  # 10 iterations in 5 s: 20 left take 10 s
    assert stream.getvalue().split("\r")[-1].endswith("80/100 it ETA    10s")


def test_a_log_file_gets_a_line_every_interval_and_at_the_end(monkeypatch):
    clock = Clock(monkeypatch)
    stream = io.StringIO()  # not a terminal: SLURM's log, nohup.out, a redirect
    bar = Progress(100, "run", stream=stream, interval=5.0)
    for step in range(1, 11):
        clock.now = 2.0 * step  # a chunk of 10 iterations every 2 s
        bar.update(10 * step)
    bar.close()
    lines = stream.getvalue().splitlines()
    # At 0 s, then the first update at least 5 s after the last line (6, 12, 18 s), and the end.
    assert [line.split(":")[1].split()[0] for line in lines] == [
        "0/100",
        "30/100",
        "60/100",
        "90/100",
        "100/100",
    ]
    assert lines[-1] == "run: 100/100 it ETA     0s"
    assert "\r" not in stream.getvalue()


def test_silent_when_quiet():
    for stream in (FakeTerminal(), io.StringIO()):
        bar = Progress(10, "run", enabled=False, stream=stream)
        bar.update(5)
        bar.close()
        assert stream.getvalue() == ""
