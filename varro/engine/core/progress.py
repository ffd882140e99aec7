"""Progress for the nightly step: bars on a terminal, plain timed lines under cron or --quiet."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator


class Progress:
    """`with progress.stage("sampling", total=n) as advance: ... advance(k)`.

    Every stage ends with one plain line ("sampling: 256 in 12.3 s") sent to
    `log`; a tqdm bar is shown only when `bars` is true (a terminal, not --quiet).
    """

    def __init__(self, log: Callable[[str], None] = lambda line: None, bars: bool | None = None):
        self.log = log
        self.bars = sys.stderr.isatty() if bars is None else bars

    @contextlib.contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        tic = time.perf_counter()
        done = 0
        bar = None
        if self.bars:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=name, unit="", leave=False, file=sys.stderr)

        def advance(n: int = 1) -> None:
            nonlocal done
            done += n
            if bar is not None:
                bar.update(n)

        try:
            yield advance
        finally:
            if bar is not None:
                bar.close()
        count = f"{done}" + (f"/{total}" if total is not None else "")
        self.log(f"{name}: {count} in {time.perf_counter() - tic:.1f} s")


NULL_PROGRESS = Progress(bars=False)
