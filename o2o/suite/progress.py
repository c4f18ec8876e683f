"""Progress of a sweep: one tqdm bar over its runs on stderr (done, failed and skipped counts beside it), one line
per started or ended run on the sweep's stream (stdout), and a closing count line.

On a terminal the bar redraws at most twice a second and the run lines are written through tqdm so they do not tear
it. When stderr is not a terminal (CI logs, `2> file`) the bar is drawn only every HEARTBEAT_S seconds and at the
end, each draw a line of its own, so a long sweep leaves a few dozen bar lines, not thousands.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

from o2o.suite.process import LOG_FILE, Outcome

HEARTBEAT_S = 30.0  # bar redraws when stderr is not a terminal
TTY_REFRESH_S = 0.5  # bar redraws on a terminal


def fmt_time(s: float) -> str:
    """Seconds as `42s`, `3m05s` or `2h07m`."""
    s = int(max(s, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LineFile:
    """A file for tqdm off a terminal: each draw becomes one whole line (tqdm starts a draw with a carriage return
    and ends it without a newline, which glues it to the next line of a log that also gets the run lines)."""

    def __init__(self, file: TextIO) -> None:
        self.file = file

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.file.write(line + "\n")

    def flush(self) -> None:
        self.file.flush()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Progress:
    """Counts of a sweep, shown as a tqdm bar on `bar_file` (default stderr) and as lines on `stream`.

    Use as a context manager: the bar opens on entry and closes (left on screen) on exit."""

    def __init__(self, name: str, total: int, stream: TextIO, skipped: int = 0, failed: int = 0, busy: int = 0,
                 bar_file: TextIO | None = None) -> None:
        self.name = name
        self.total = total
        self.stream = stream
        self.skipped = skipped  # finished before this sweep
        self.done = 0
        self.failed = failed
        self.busy = busy
        self.running = 0
        self.started = time.time()
        self.bar_file = bar_file if bar_file is not None else sys.stderr
        self.tty = _is_tty(self.bar_file)
        self.bar: tqdm | None = None

    def __enter__(self) -> Progress:
        self.bar = tqdm(total=self.total, initial=self.accounted, desc=self.name, unit="run",
                        file=self.bar_file if self.tty else LineFile(self.bar_file),
                        mininterval=TTY_REFRESH_S if self.tty else HEARTBEAT_S, miniters=0, smoothing=0,
                        dynamic_ncols=self.tty, postfix=self.postfix())
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.postfix(), refresh=False)
            self.bar.close()
            self.bar = None

    @property
    def accounted(self) -> int:
        """Runs that need nothing more from this sweep: done, failed, skipped or busy elsewhere."""
        return self.skipped + self.done + self.failed + self.busy

    def postfix(self) -> str:
        """`done=3, failed=1, skipped=2` (with `running=` and `busy=` when there are any)."""
        counts = {"done": self.done, "failed": self.failed, "skipped": self.skipped, "running": self.running,
                  "busy": self.busy}
        return ", ".join(f"{k}={n}" for k, n in counts.items() if n or k in ("done", "failed", "skipped"))

    def write(self, line: str) -> None:
        """One line on the stream, written around the bar when both are on a terminal."""
        if self.bar is not None and self.tty:
            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream)
        self.stream.flush()

    def tick(self, running: int) -> None:
        """Note how many runs are running; redraw the bar when its interval has passed (its clock moves)."""
        self.running = running
        if self.bar is not None:
            self.bar.set_postfix_str(self.postfix(), refresh=False)
            self.bar.update(0)

    def event(self, outcome: Outcome) -> None:
        """Count an ended run, write a line about it and move the bar."""
        if outcome.status == "busy":
            self.busy += 1
            self.write(f"  busy      {outcome.run.id} (locked by another process)")
        elif outcome.status == "failed":
            self.failed += 1
            last = (outcome.error or "").strip().splitlines()
            self.write(f"  FAILED    {outcome.run.id} after {fmt_time(outcome.seconds)}: {last[-1] if last else ''} "
                       f"(log: {Path(outcome.run.out) / LOG_FILE})")
        else:
            self.done += 1
            score = "" if outcome.score is None else f", score {outcome.score:.1f}"
            self.write(f"  {outcome.status:9s} {outcome.run.id} in {fmt_time(outcome.seconds)}{score}")
        if self.bar is not None:
            self.bar.set_postfix_str(self.postfix(), refresh=False)
            self.bar.update(1)

    def line(self) -> str:
        """`[suite] 3/24 done, 0 running, 1 failed, 2 were done before; elapsed 5m02s`."""
        parts = [f"{self.done + self.skipped}/{self.total} done", f"{self.running} running", f"{self.failed} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} were done before")
        if self.busy:
            parts.append(f"{self.busy} busy elsewhere")
        return f"[{self.name}] {', '.join(parts)}; elapsed {fmt_time(time.time() - self.started)}"
