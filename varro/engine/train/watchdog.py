"""The swap watchdog: a night that starts swapping is ended before its checkpoint.

`SwapWatchdog` reads the swap in use every few seconds on a daemon thread; once it has grown more than
`swap_max_mb` since the night started, `tripped` says why, and the cycle (between stages) and the trainer
(`on_step`) end the day with a `SwapError` before its checkpoint is written, so the next night re-runs it.
Where no reading exists it stays off (docs/training.md).
"""

from __future__ import annotations

import re
import threading

from varro.engine.core.errors import UserError
from varro.engine.model.memory import os_reading
from varro.engine.train.trainer import TrainingCallback


class SwapError(UserError):
    """The machine started swapping during the night; the day was stopped before its checkpoint."""


def _swapusage_used(text: str) -> int | None:
    m = re.search(r"used = ([\d.]+)([KMG])", text)
    return int(float(m.group(1)) * {"K": 2**10, "M": 2**20, "G": 2**30}[m.group(2)]) if m else None


def swap_bytes() -> int | None:
    """The swap in use, in bytes, or None where there is no reading: Linux this process's VmSwap, macOS
    the system's `vm.swapusage`."""
    return os_reading("/proc/self/status", "VmSwap", ["sysctl", "-n", "vm.swapusage"], _swapusage_used)


class SwapWatchdog(TrainingCallback):
    """Reads the swap every `interval_s` on a daemon thread (and after every training step); `tripped` is
    the reason once it has grown by more than `max_bytes` since `start`. As a training callback it stops
    the day after the current step. Off (never trips) when `max_bytes` <= 0 or the platform gives no
    reading."""

    def __init__(self, max_bytes: int, interval_s: float = 5.0, reader=None):
        self.max_bytes = max_bytes
        self.interval_s = interval_s
        self.reader = reader or swap_bytes
        self.tripped: str | None = None
        self.baseline: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "SwapWatchdog":
        self.baseline = self.reader() if self.max_bytes > 0 else None
        if self.baseline is not None:
            self._thread = threading.Thread(target=self._watch, name="swap-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "SwapWatchdog":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def poll(self) -> None:
        """One reading: sets `tripped` when the swap has grown past the limit."""
        now = self.reader()
        if now is not None and self.baseline is not None and now - self.baseline > self.max_bytes:
            self.tripped = (f"the machine started swapping ({(now - self.baseline) / 2**20:.0f} MB more swap "
                            f"than at the start, over swap_max_mb {self.max_bytes / 2**20:.0f})")

    def _watch(self) -> None:
        while not self.tripped and not self._stop.wait(self.interval_s):
            self.poll()

    def check(self, where: str) -> None:
        """Raise SwapError when tripped, naming the stage it stopped before."""
        if self.tripped:
            raise SwapError(f"{self.tripped}: the night stopped {where}, with nothing half-written; "
                            "the next night runs the rest of the day again")

    def on_step(self, row: dict) -> bool:
        """Stop the day after this step once tripped (a step also takes a reading of its own)."""
        if self.baseline is not None and not self.tripped:
            self.poll()
        return self.tripped is not None
