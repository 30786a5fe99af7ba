"""A minimal progress bar on stderr (no dependency): one line redrawn in place, at most a few
times a second, and nothing at all when stderr is not a terminal or it is disabled."""

import sys
import time


def _clock(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds // 60 % 60:02d}"


class ProgressBar:
    """``update(done, info)`` after each step: ``info`` is a zero-argument callable returning
    the text after the bar (e.g. "loss 1.23 acc 45.6%"), called only when the line is redrawn,
    so it may synchronise with the GPU without slowing every step."""

    def __init__(self, total, label, enabled=True, stream=None, width=24, interval=0.2):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and total > 0 and getattr(self.stream, "isatty", lambda: False)()
        self.total, self.label, self.width, self.interval = total, label, width, interval
        self.start = self.last_draw = time.perf_counter()
        self.drawn = False

    def update(self, done, info=None):
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self.last_draw < self.interval:
            return
        self.last_draw = now
        filled = self.width * done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = now - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        text = f"\r{self.label} [{bar}] {done}/{self.total}"
        if info is not None:
            text += f" {info()}"
        text += f" {_clock(elapsed)}<{_clock(eta)}"
        self.stream.write(text.ljust(100)[:160])
        self.stream.flush()
        self.drawn = True

    def close(self):
        if self.enabled and self.drawn:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
