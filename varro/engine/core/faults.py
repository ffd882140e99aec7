"""Failpoints for the crash-safety harness: `VARRO_FAILPOINT=name` or `name#k` kills the process
(SIGKILL, nothing flushed, nothing cleaned up) the first, or the k-th, time `failpoint(name)` runs.

Unset, a failpoint is one dictionary lookup; production never sets the variable.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    target = os.environ.get("VARRO_FAILPOINT")
    if not target:
        return
    point, _, nth = target.partition("#")
    if point != name:
        return
    rank = os.environ.get("VARRO_FAILPOINT_RANK")  # only this rank of an mlx.launch job (MLX_RANK)
    if rank is not None and rank != os.environ.get("MLX_RANK", "0"):
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)
