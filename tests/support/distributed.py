"""Running nightlies for the data-parallel tests (`mlx.launch -n 2 --backend ring` against one process) and
comparing their checkpoints: shared by tests/system/test_distributed.py (Varro) and test_walter_distributed.py."""

import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np

from support.preloaded import run as run_preloaded

# float32 sums taken in a different order on two ranks. One minibatch a day keeps every sequence on-policy
# (ratio exactly 1): with several, a sequence whose ratio sits at the clip edge can fall on either side
# after a 1e-7 difference, and then the two runs differ by design, not by a bug.
ATOL = 1e-5
LAUNCH = Path(sys.executable).parent / "mlx.launch"


def run(cmd, home, server=None):
    """`cmd` run to its end on data folder `home`: forked from `server` (tests/support/preloaded.py) when given, as the
    crash tests run the one-process nightlies; mlx.launch's ranks are always fresh processes."""
    env = {**os.environ, "VARRO_HOME": str(home)}
    if server is not None:
        return run_preloaded(server, cmd, env, Path(f"{home}.out"))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def load(home, name):
    """The arrays of `name` in checkpoint 2026-11-03 of run "d" under `home`."""
    return {k: np.array(v) for k, v in mx.load(str(Path(home) / "runs" / "d" / "checkpoints" / "2026-11-03" /
                                                name)).items()}
