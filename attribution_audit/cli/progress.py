"""Progress of long commands on stderr: a bar with a total and an ETA in a terminal, a periodic line otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

import typer

LINE_EVERY_S = 10.0


class ProgressDisplay:
    """Call with (done, total) after each batch; the bar stays on screen at the end (use as a context manager)."""

    def __init__(self, label: str, unit: str = "work") -> None:
        self.label, self.unit = label, unit
        self.terminal = sys.stderr.isatty()
        self._bar: Any = None
        self._started = time.monotonic()
        self._last_line = 0.0
        self._last: tuple[int, int | None] = (0, None)
        self._shown = 0  # rows in the last line printed

    def __call__(self, done: int, total: int | None) -> None:
        self._last = (done, total)
        if self.terminal:
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=self.label, unit=self.unit, leave=True, file=sys.stderr)
            self._bar.update(done - self._bar.n)
        elif time.monotonic() - self._last_line >= LINE_EVERY_S and done:
            self._line(done, total)

    def _line(self, done: int, total: int | None) -> None:
        self._last_line, self._shown = time.monotonic(), done
        elapsed = self._last_line - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        if total:
            eta = (total - done) / rate if rate > 0 else 0.0
            typer.echo(
                f"{self.label}: {done}/{total} {self.unit}s ({done / total:.0%}), {rate:.1f}/s, ETA {eta:.0f} s",
                err=True,
            )
        else:
            typer.echo(f"{self.label}: {done} {self.unit}s, {rate:.1f}/s", err=True)

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()
        elif not self.terminal and self._last_line and self._last[0] != self._shown:
            self._line(*self._last)  # the final count, when periodic lines were shown and it was not the last
