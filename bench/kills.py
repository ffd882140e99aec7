"""How many random kills does a night survive? For each app, SIGKILL a three-day backfill (2026-11-02..04,
the shipped sample, the tiny model) at N moments spread over a clean run's duration (one drawn in each of N
equal slices, fixed seed), re-run it to its end, and compare everything it wrote with the clean run: every
table's rows and every file of the run's folder (tests/support/crash.py's `state`, which names what it leaves
out and why). The suite does the same with N=2 (tests/system/test_kills.py); this is the larger N.

    scripts/env python bench/kills.py --kills 10          # both apps
    scripts/env python bench/kills.py --apps walter --kills 4 --seed 7

Prints one line per kill (when it landed, and what differed if anything) and per app
"walter: 10 of 10 kills survived (9 landed mid-run)".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the crash tests' harness (tests/support)

from support.crash import assert_same_state, state  # noqa: E402
from support.kills import APPS, SEED, THREE_DAYS, clean_run, kill_and_resume, kill_delays  # noqa: E402

from varro.engine.model.tiny import write_tiny_model  # noqa: E402


def survived(cmd, home: Path, delay: float, want) -> tuple[bool, bool, str]:
    """(whether the kill landed, whether the resumed state equals `want`, what differed)."""
    landed = kill_and_resume(cmd, home, delay)
    try:
        assert_same_state(state(home), want)
    except AssertionError as e:  # the finding this bench counts; printed by the caller
        return landed, False, str(e).splitlines()[0]
    return landed, True, ""


def bench_app(app: str, model: Path, root: Path, kills: int, seed: int) -> int:
    """Kill `app`'s backfill `kills` times; print each and the total; returns how many survived."""
    cmd = APPS[app](model, THREE_DAYS)
    want, duration = clean_run(cmd, root / f"{app}-clean")
    ok = landed_n = 0
    for k, delay in enumerate(kill_delays(duration, kills, seed)):
        landed, same, diff = survived(cmd, root / f"{app}-kill{k}", delay, want)
        ok, landed_n = ok + same, landed_n + landed
        print(f"{app} kill {k + 1}/{kills} at {delay:5.1f}s of {duration:.1f}s: "
              f"{'landed' if landed else 'run had finished'}, {'same state' if same else 'DIFFERS: ' + diff}",
              flush=True)
    print(f"{app}: {ok} of {kills} kills survived ({landed_n} landed mid-run)", flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default=",".join(sorted(APPS)), help="comma-separated: varro, walter")
    parser.add_argument("--kills", type=int, default=10, help="kills per app")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the kill moments")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="varro-kills-") as tmp:
        root = Path(tmp)
        model = write_tiny_model(root / "tiny", seed=0, vocab_size=512)
        for app in args.apps.split(","):
            bench_app(app, model, root, args.kills, args.seed)


if __name__ == "__main__":
    main()
