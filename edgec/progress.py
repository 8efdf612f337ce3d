"""Progress of long commands: a bar with ETA on a terminal, plain lines elsewhere, nothing when quiet.

edgec's steps report progress as one-line messages (`progress=` callbacks), and a counted step says
so with `N/M` in its message: "round 3/60", "calibration 40/200", "sensitivity 7/31: conv1 (int8)",
"search build 2/6: ...". `Progress` turns each counted step into a rich progress bar (its text
before the count names the bar; a new count of the same step moves it), prints every other
message above the bars, and ends the bars when an uncounted message starts the next step. Logs
and CI capture a pipe, not a terminal: there each message is one plain line, as before.
"""

from __future__ import annotations

import re
import sys
from typing import IO, Any

__all__ = ["Progress"]

#: A counted message: what is counted, done, total, and the rest of the line.
_COUNTED = re.compile(r"^\s*(?P<what>[^\d:]*?)\s*(?P<done>\d+)/(?P<total>\d+)\b(?P<rest>.*)$")


class Progress:
    """The `progress=` callback of a CLI command; use as a context manager so the bars end with it.

    Args:
        quiet: Show nothing (`--quiet`, or when stdout carries the command's JSON output).
        stream: Where progress goes (stderr: stdout is the command's result).
        bars: Draw bars; default: when `stream` is a terminal.
    """

    def __init__(self, *, quiet: bool = False, stream: IO[str] | None = None, bars: bool | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.bars = (not quiet and self.stream.isatty()) if bars is None else bars
        self._live: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_bars()

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        if not self.bars:
            print(message, file=self.stream, flush=True)
            return
        counted = _COUNTED.match(message)
        if counted is None:
            self._end_bars()
            self._console().print(message, markup=False, highlight=False)
            return
        what = counted["what"].strip() or "progress"
        done, total = int(counted["done"]), int(counted["total"])
        live = self._start_bars()
        if what not in self._tasks:
            self._tasks[what] = live.add_task(what, total=total)
        live.update(self._tasks[what], completed=done, total=max(total, done),
                    description=f"{what}{counted['rest']}"[:60])

    def _console(self) -> Any:
        from rich.console import Console

        return self._live.console if self._live is not None else Console(file=self.stream)

    def _start_bars(self) -> Any:
        if self._live is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn, TimeRemainingColumn

            self._live = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                              console=Console(file=self.stream), transient=False)
            self._live.start()
        return self._live

    def _end_bars(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live, self._tasks = None, {}
