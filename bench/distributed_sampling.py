"""The sampling phase with 1 and with 2 processes (mlx.launch -n 2 --backend ring) on this machine.

Run alone: `scripts/env python bench/distributed_sampling.py`. It times the
nightly's sampling phase as the data-parallel step runs it: the prompt groups
are shared out by rank, each rank samples its share, and rank 0 gathers the
rollouts. The 2-process figure includes process start-up only in
`total_s`; the phase itself is timed inside the ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPTS, GROUP, TOKENS = 8, 8, 64


def phase() -> None:
    """One rank's part: sample its share of the groups, gather at rank 0, print the wall time."""
    import mlx.core as mx

    from common import Timer, load_bench_model, prompt_tokens
    from varro.engine.model.distributed import init_world, rollouts_to_json
    from varro.engine.sampling.rollouts import PromptInput, sample_groups

    world = init_world()
    model, tokenizer = load_bench_model()
    prompts = [PromptInput(f"p{i}", t) for i, t in enumerate(prompt_tokens(tokenizer, PROMPTS))]
    mine = prompts[world.rank :: world.size]
    world.gather_json(0)  # start together
    with Timer() as t:
        groups = sample_groups(model, tokenizer, mine, GROUP, TOKENS, temp=0.7, top_p=0.9, top_k=40,
                               seed=world.rank)
        gathered = world.gather_json(rollouts_to_json(groups))
    mx.eval(mx.array(0))
    if world.is_main:
        tokens = sum(len(r["completion_tokens"]) for part in gathered for g in part for r in g)
        print(json.dumps({"ranks": world.size, "phase_s": t.s, "tokens": tokens}), flush=True)


def main() -> None:
    from common import Timer, emit

    launch = Path(sys.executable).parent / "mlx.launch"
    results = {}
    for ranks in (1, 2):
        cmd = [sys.executable, __file__, "--phase"]
        if ranks == 2:
            cmd = [str(launch), "-n", "2", "--backend", "ring", "--", *cmd]
        with Timer() as t:
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, timeout=1200)
        line = next((x for x in out.stdout.splitlines() if x.startswith("{")), None)
        if out.returncode != 0 or line is None:
            raise SystemExit(f"{ranks}-process run failed: {out.stderr[-800:]}")
        results[ranks] = json.loads(line)
        emit("distributed", f"sampling_phase_s_{ranks}proc", results[ranks]["phase_s"], "s",
             f"{PROMPTS} prompts x {GROUP} x {TOKENS} tokens; total with start-up {t.s:.1f} s")
    emit("distributed", "sampling_speedup_2proc", results[1]["phase_s"] / results[2]["phase_s"], "x",
         "2 processes on the same 2 cores share them; on two machines each has its own")


if __name__ == "__main__":
    phase() if "--phase" in sys.argv else main()
