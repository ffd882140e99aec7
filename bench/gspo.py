"""One GSPO iteration (sampling, rewards, the pi_old and reference passes, the minibatch updates)
against one GRPO iteration of mlx-lm-lora 5.10.2, on the same model, group size, completion length,
LoRA rank, prompts, sampler and BLAS.

Each contender runs in its own process (so peak memory is its own), after a
cheap warm-up iteration (16-token prompts, 4 tokens); the figure is the next,
full iteration. mlx-lm-lora is installed from PyPI into bench/.venv-peer on
first use, with mlx and mlx-lm pinned to the versions in .venv, and scripts/setup gives its MLX the
same BLAS as ours.

    scripts/env python bench/gspo.py                   # batch sizes 1 and 4 (prompts per iteration)
    BENCH_MODEL=real scripts/env python bench/gspo.py  # on SmolLM2-135M-Instruct (data/models, from setup)
    VARRO_NO_OPENBLAS=1 scripts/env python bench/gspo.py --batch-sizes 1

Peak memory is mx.get_peak_memory() over the measured iteration, model weights
included. Our Trainer resets the counter before each optimizer step (to log a
per-step peak), so the bench turns that reset into a no-op for the measured
iteration to read the peak of the whole iteration.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import BENCH_DIR, REPO, SAMPLER, Timer, bench_model, blas, emit, prompt_texts, run_spec

BENCH = "gspo"
PEER_ENV = BENCH_DIR / ".venv-peer"
PEER_PACKAGE = "mlx-lm-lora==5.10.2"
GROUP, LORA_RANK, LORA_SCALE, MINIBATCHES = 8, 8, 20.0, 4
MAX_TOKENS = int(os.environ.get("BENCH_MAX_TOKENS", "128"))  # smaller only to try the bench out


def distinct_word_reward(text: str) -> float:
    words = text.split()
    return len(set(words)) / max(len(words), 1)


def peer_python() -> Path:
    """bench/.venv-peer/bin/python with mlx-lm-lora installed; creates the environment when missing."""
    from importlib.metadata import version

    py = PEER_ENV / "bin" / "python"
    check = [str(py), "-c", "import importlib.metadata as m; print(m.version('mlx-lm-lora'))"]
    if py.exists() and subprocess.run(check, capture_output=True, text=True).stdout.strip() == "5.10.2":
        return py
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_ENV)], check=True)
    mlx = f"mlx[cpu]=={version('mlx')}" if sys.platform == "linux" else f"mlx=={version('mlx')}"
    cmd = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", PEER_PACKAGE, mlx,
           f"mlx-lm=={version('mlx-lm')}"]
    print("installing the peer:", " ".join(cmd[3:]), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    subprocess.run([str(REPO / "scripts" / "setup")], check=True)  # links OpenBLAS into the peer's MLX too
    return py


def run_ours(n_prompts: int) -> dict:
    """Our iteration through Policy.open / Policy.sample / Trainer.train_day; returns timings and peak."""
    import mlx.core as mx

    from common import no_eos
    from varro.engine.core.config import Config
    from varro.engine.run.policy import Policy
    from varro.engine.model.loading import first_trainable_layer

    cfg = Config()
    cfg.model.model = str(bench_model())
    cfg.model.lora_rank = LORA_RANK
    cfg.model.lora_scale = LORA_SCALE
    cfg.sampling.group_size = GROUP
    cfg.sampling.max_tokens = MAX_TOKENS
    cfg.train.minibatches = MINIBATCHES
    with tempfile.TemporaryDirectory() as run_path:
        policy = Policy.open(cfg, Path(run_path))
        no_eos(policy.tokenizer)
        # The positions the trainer runs, counted for the FLOP figure: each update chunk's prompt,
        # and each no-gradient pass's prompts and completions.
        update_prompts, pass_positions = [], []
        chunk_grads, pass_logprobs = policy.trainer._chunk_grads, policy.trainer._pass_logprobs

        def counted_chunk(c, *args):
            update_prompts.append(int(c.head.shape[1]))
            return chunk_grads(c, *args)

        def counted_pass(chunks, passes, **kw):
            pass_positions.append(sum(int(p.head.shape[1]) + sum(len(r.completion_tokens) for r in p.source)
                                      for p in passes))
            return pass_logprobs(chunks, passes, **kw)

        policy.trainer._chunk_grads, policy.trainer._pass_logprobs = counted_chunk, counted_pass
        prompts = [(f"p{i}", t) for i, t in enumerate(prompt_texts(n_prompts))]

        def iteration(prompts, max_tokens):
            policy.config.sampling.max_tokens = max_tokens
            out = {}
            update_prompts.clear()
            pass_positions.clear()
            with Timer() as t_all:
                with Timer() as t:
                    groups = policy.sample(prompts, seed=0)
                out["sampling_s"] = t.s
                with Timer() as t:
                    for g in groups:
                        for r in g:
                            r.reward = distinct_word_reward(r.text)
                out["rewards_s"] = t.s
                with Timer() as t:
                    rows = policy.trainer.train_day(groups)
                out["train_s"] = t.s
            out["updates_s"] = sum(r["duration_ms"] for r in rows) / 1000.0
            out["prepare_s"] = out["train_s"] - out["updates_s"]
            out["iteration_s"] = t_all.s
            out["steps"] = len(rows)
            out["completion_tokens"] = sum(len(r.completion_tokens) for g in groups for r in g)
            out["positions"] = sum(len(r.prompt_tokens) + len(r.completion_tokens) - 1 for g in groups for r in g)
            # What the trainer computes, in forward-equivalents (a backward counts as two forwards):
            # the pi_old and reference passes (each prompt once, each completion once; pi_old skips
            # the first minibatch); an update chunk runs its prompt forward, then again inside the
            # vjp, plus its backward (4), and each completion forward and backward (3).
            # With the frozen trunk (varro/engine/train/trunk.py) all of that runs above it, on a share
            # `above` of the layers, and the trunk's own layers run once over every prompt and completion.
            made = out["completion_tokens"]
            layers = len(policy.model.layers)
            start = first_trainable_layer(policy.model) if policy.trainer.keep_states else 0
            above = (layers - start) / layers if 0 < start < layers else 1.0
            trunk = sum(len(g[0].prompt_tokens) - 1 for g in groups) + made if above < 1.0 else 0
            out["forward_positions"] = round(above * (sum(pass_positions) + 4 * sum(update_prompts) + 3 * made)
                                             + (1.0 - above) * trunk)
            return out

        warm = [(pid, text[:60]) for pid, text in prompts]  # about 16 chat tokens, like the peer's warm-up
        iteration(warm, 4)
        reset = mx.reset_peak_memory
        mx.reset_peak_memory()
        mx.reset_peak_memory = lambda: None  # the trainer's per-step reset would hide the iteration's peak
        try:
            out = iteration(prompts, MAX_TOKENS)
        finally:
            mx.reset_peak_memory = reset
        if out["steps"] == 0:
            raise RuntimeError("every group's rewards were equal, so no update ran: the iteration is not comparable")
        out["peak_memory_gb"] = mx.get_peak_memory() / 1e9
        out["blas"] = blas()
        out["matmul_params"] = matmul_params(policy.model)
    return out


def matmul_params(model) -> int:
    """Parameters that take part in matmuls (all but the norms; the tied embedding is the output head)."""
    from mlx.utils import tree_flatten

    return sum(v.size for k, v in tree_flatten(model.parameters()) if "norm" not in k)


def run_peer(n_prompts: int) -> dict:
    """The peer's iteration in bench/.venv-peer, in its own process; returns its JSON result."""
    from common import load_bench_model, prompt_tokens

    _, tok = load_bench_model()
    spec = {"model": str(bench_model()), "prompts": prompt_tokens(tok, n_prompts), "group": GROUP,
            "max_tokens": MAX_TOKENS, "lora_rank": LORA_RANK, "lora_scale": LORA_SCALE, "beta": 0.02,
            "eps_low": 3e-4, "eps_high": 4e-4, **SAMPLER}
    return run_spec(peer_python(), "peer_grpo.py", spec, "the peer")


def run_child(which: str, n_prompts: int) -> dict:
    """Run one contender in a fresh process of this file."""
    proc = subprocess.run([sys.executable, __file__, "--child", which, "--batch-sizes", str(n_prompts)],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{which} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", default="1,4", help="prompts per iteration, comma-separated")
    ap.add_argument("--child", choices=["ours", "peer"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    sizes = [int(s) for s in a.batch_sizes.split(",")]
    if a.child:
        print(json.dumps(run_ours(sizes[0]) if a.child == "ours" else run_peer(sizes[0])))
        return
    from roofline import matmul_gflops

    bench_model()
    peer_python()
    print(f"{BENCH}.model = {bench_model()}", flush=True)
    rate = max(matmul_gflops(1024, 1024, 1024), matmul_gflops(2048, 2048, 2048))
    emit(BENCH, "matmul_rate", rate, "GFLOP/s", "float32 mx.matmul, better of 1024^3 and 2048^3")
    for n in sizes:
        label = f"b{n}"
        ours = run_child("ours", n)
        try:
            peer = run_child("peer", n)
        except RuntimeError as e:
            print(f"{BENCH}.{label}.peer = failed [{blas()}]: {e}", flush=True)
            peer = None
        c = n * GROUP
        emit(BENCH, f"{label}.ours_iteration", ours["iteration_s"], "s",
             f"{n} prompts x {GROUP} x {MAX_TOKENS} tokens ({ours['completion_tokens']} made), {ours['steps']} steps")
        emit(BENCH, f"{label}.ours_sampling", ours["sampling_s"], "s")
        emit(BENCH, f"{label}.ours_prepare", ours["prepare_s"], "s", "pi_old and reference passes")
        emit(BENCH, f"{label}.ours_updates", ours["updates_s"], "s", f"{ours['steps']} minibatch steps")
        emit(BENCH, f"{label}.ours_peak_memory", ours["peak_memory_gb"], "GB")
        train_gflops = 2 * ours["matmul_params"] * ours["forward_positions"] / ours["train_s"] / 1e9
        emit(BENCH, f"{label}.ours_train_fraction", train_gflops / rate, "x matmul rate",
             f"{train_gflops:.1f} GFLOP/s over {ours['forward_positions']} forward-equivalent positions "
             f"({4 * ours['positions']} unshared)")
        if peer is None:
            continue
        emit(BENCH, f"{label}.peer_iteration", peer["iteration_s"], "s",
             f"{peer['trainer']}, batch size {n}, {c} completions ({peer['completion_tokens']} tokens made)")
        emit(BENCH, f"{label}.peer_sampling", peer["sampling_s"], "s")
        emit(BENCH, f"{label}.peer_loss_grad", peer["iteration_s"] - peer["sampling_s"], "s",
             "rewards, reference pass, loss and gradient, update")
        emit(BENCH, f"{label}.peer_peak_memory", peer["peak_memory_gb"], "GB")
        # reference forward + policy forward + backward through the activations = 3 forwards, every position
        peer_train_s = peer["iteration_s"] - peer["sampling_s"]
        peer_gflops = 3 * 2 * ours["matmul_params"] * ours["positions"] / peer_train_s / 1e9
        emit(BENCH, f"{label}.peer_train_fraction", peer_gflops / rate, "x matmul rate",
             f"{peer_gflops:.1f} GFLOP/s, 3 forward-equivalents, same positions")
        emit(BENCH, f"{label}.time_ratio", ours["iteration_s"] / peer["iteration_s"], "x peer",
             "target <= 0.5")
        emit(BENCH, f"{label}.memory_ratio", ours["peak_memory_gb"] / peer["peak_memory_gb"], "x peer",
             "target <= 0.75")
        if peer["blas"] != ours["blas"]:
            print(f"WARNING: BLAS differs: ours {ours['blas']}, peer {peer['blas']}", flush=True)


if __name__ == "__main__":
    main()
