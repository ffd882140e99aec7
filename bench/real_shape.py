"""One GSPO iteration of ours against mlx-lm-lora's GRPO on a random model of Qwen3-0.6B's real shape.

Memory does not depend on the device, so it is measured here on the CPU with a
randomly initialised model of the real shape (hidden 1024, 28 layers, 16 query
and 8 key-value heads, head dim 128, MLP 3072, vocabulary 151,936, tied
embeddings) in float32, bfloat16 and 4-bit (`mlx_lm.convert`), built once into
bench/.models/. The tokenizer is the bench model's byte-level BPE (8,192
tokens trained on the sample text and pseudo-words) padded with plain
vocabulary entries (no merges, never produced by encoding, decodable) up to
151,936 ids, so every id the model can sample decodes.

    scripts/env python bench/real_shape.py --precisions bf16,4bit --batch-sizes 1

Each contender runs in its own process, through bench/gspo.py's `run_ours` and
bench/peer_grpo.py, with group 8, 180 tokens, LoRA rank 8 (ours on the last 16
layers, our default; the peer on the same 16), 4 minibatch steps. `--contenders mlxtune` (not in the
default) adds mlx-tune 0.6.0's GRPOTrainer (bench/peer_mlxtune.py, in bench/.venv-mlxtune, made on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BENCH_DIR, QWEN3_06B, REPO, SAMPLER, Timer, emit, prompt_texts, prompt_tokens, run_spec, synthetic_corpus

BENCH = "real_shape"
MODELS = BENCH_DIR / ".models"
VOCAB = QWEN3_06B["vocab_size"]
PRECISIONS = ("f32", "bf16", "4bit")
MAX_TOKENS, LORA_LAYERS = 180, 16


def model_dir(precision: str) -> Path:
    return MODELS / f"qwen3-0.6b-shape-{precision}"


def pad_tokenizer(path: Path, vocab_size: int) -> None:
    """Append plain vocabulary entries to a BPE tokenizer.json until it has `vocab_size` ids."""
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    used = len(vocab) + sum(1 for t in data["added_tokens"] if t["content"] not in vocab)
    for i in range(vocab_size - used):
        vocab[f"zzpad{i:06d}"] = used + i
    path.write_text(json.dumps(data, ensure_ascii=False))


def build_f32() -> Path:
    """The float32 folder: the bench tokenizer padded to 151,936 ids, Qwen3-0.6B's config, random weights."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.qwen3 import Model, ModelArgs

    from varro.engine.model.tiny import sample_corpus, write_tiny_model

    out = model_dir("f32")
    if (out / "model.safetensors").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    # The tiny model is only the tokenizer's carrier: its config and weights are replaced below.
    write_tiny_model(tmp, seed=0, vocab_size=8192, corpus=sample_corpus() + synthetic_corpus())
    pad_tokenizer(tmp / "tokenizer.json", VOCAB)
    tiny = json.loads((tmp / "config.json").read_text())
    config = {**QWEN3_06B, "eos_token_id": tiny["eos_token_id"]}
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    mx.random.seed(0)
    model = Model(ModelArgs(**{k: config[k] for k in ModelArgs.__dataclass_fields__ if k in config}))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
    tmp.rename(out)
    return out


def build(precision: str) -> Path:
    """The model folder of one precision, built once (bf16 and 4-bit by mlx_lm.convert from float32)."""
    from mlx_lm import convert

    src, out = build_f32(), model_dir(precision)
    if precision == "f32" or (out / "config.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    if precision == "bf16":
        convert(str(src), mlx_path=str(tmp), dtype="bfloat16")
    else:
        convert(str(src), mlx_path=str(tmp), dtype="bfloat16", quantize=True, q_bits=4, q_group_size=64)
    tmp.rename(out)
    return out


def run_ours(precision: str, n_prompts: int, max_tokens: int = MAX_TOKENS) -> dict:
    """gspo.run_ours on the real-shape model, plus the running peak after each phase (the profile): sampling's
    from the start of the iteration, the passes' and training's from the end of sampling."""
    import mlx.core as mx

    import gspo
    from varro.engine.model.memory import ModelShape, sampling_bytes, training_bytes
    from varro.engine.run.policy import Policy
    from varro.engine.train.trainer import Trainer

    gspo.bench_model = lambda: model_dir(precision)
    gspo.MAX_TOKENS = max_tokens
    # The padded ids decode to space-less "zzpad012345" pieces, so a random model's completion is one long
    # word and the distinct-word reward is 1.0 for all 8: the group is flat and no update runs. The share
    # of one digit varies. (The peer's GRPO computes its update whatever the rewards, so it keeps its reward.)
    gspo.distinct_word_reward = lambda text: text.count("7") / max(len(text), 1)
    marks: list[tuple[str, float]] = []  # the measured iteration's are the last ones (after the warm-up's)
    sample, passes, open_ = Policy.sample, Trainer._pass_logprobs, Policy.open.__func__

    t0 = time.perf_counter()

    def mark(name: str, gb: float) -> None:
        marks.append((name, gb))
        print(f"{time.perf_counter() - t0:8.1f} s  {name} {gb:.3f} GB", file=sys.stderr, flush=True)

    reset_peak = mx.reset_peak_memory  # gspo.run_ours stubs it out during the iteration

    def marked_sample(self, *a, **k):
        mark("before_sampling", mx.get_active_memory() / 1e9)
        out = sample(self, *a, **k)
        mark("sampling", mx.get_peak_memory() / 1e9)
        reset_peak()  # from here the peak is training's own (the iteration's is the larger of the two)
        return out

    def marked_passes(self, *a, **k):
        out = passes(self, *a, **k)
        mark("passes", mx.get_peak_memory() / 1e9)
        return out

    shapes = []

    def marked_open(cls, *a, **k):
        policy = open_(cls, *a, **k)
        mark("weights_after_open", mx.get_active_memory() / 1e9)
        marks.append(("base_dtype", str(policy.model.model.embed_tokens.weight.dtype)))
        shapes.append((ModelShape.from_model(policy.model), policy))
        return policy

    Policy.sample, Trainer._pass_logprobs, Policy.open = marked_sample, marked_passes, classmethod(marked_open)
    out = gspo.run_ours(n_prompts)
    last = max(i for i, (name, _) in enumerate(marks) if name == "before_sampling")
    out["training_peak_gb"] = out["peak_memory_gb"]  # the peak since sampling ended
    out["peak_memory_gb"] = max(out["training_peak_gb"], dict(marks[last:])["sampling"])
    out["profile_gb"] = [marks[0]] + marks[last:] + [("training", out["training_peak_gb"]),
                                                     ("iteration", out["peak_memory_gb"])]
    out["base_dtype"] = dict(marks)["base_dtype"]  # what Policy.open did to the base at the time of the run
    # The memory guard's estimates for this iteration, against the measured peaks: sampling's is the
    # running peak at the end of sampling, training's the peak from then to the end of the iteration.
    shape, policy = shapes[0]
    prompt = max(len(policy.prompt_tokens(t)) for t in prompt_texts(n_prompts))  # the guard plans for the longest
    out["estimate_gb"] = {"sampling": sampling_bytes(shape, n_prompts, gspo.GROUP, prompt, max_tokens) / 1e9,
                          "training": training_bytes(shape, 1, gspo.GROUP, prompt, max_tokens,
                                                     day_rows=n_prompts * gspo.GROUP) / 1e9}
    return out


def run_peer(precision: str, n_prompts: int, max_tokens: int = MAX_TOKENS) -> dict:
    import gspo
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    path = model_dir(precision)
    tok = load_tokenizer(path)
    spec = {"model": str(path), "prompts": prompt_tokens(tok, n_prompts), "group": gspo.GROUP,
            "max_tokens": max_tokens, "lora_rank": gspo.LORA_RANK, "lora_scale": gspo.LORA_SCALE,
            "lora_layers": LORA_LAYERS, "beta": 0.02, "eps_low": 3e-4, "eps_high": 4e-4, **SAMPLER}
    return run_spec(gspo.peer_python(), "peer_grpo.py", spec, "the peer")


MLXRL_ENV = BENCH_DIR / ".venv-mlxrl"
MLXRL_COMMIT = "137dcb9e906c069c019f4f8e168a9900d88aef5c"  # its main on 2026-08-14, the newest we could fetch
MLXRL_SOURCE = os.environ.get("MLXRL_SOURCE", f"git+https://github.com/Cargo-Cult-Research/mlx-rl@{MLXRL_COMMIT}")
MLXRL_MLX_LM = "mlx-lm==0.31.3"  # its pin


def mlxrl_python() -> Path:
    """bench/.venv-mlxrl/bin/python with mlx-rl installed; creates the environment when missing.

    mlx-rl declares Python >= 3.12 and macOS; its code compiles and runs on 3.11 and Linux, so it is
    installed with --ignore-requires-python, and without mlx-vlm, transformers and pyarrow (--no-deps),
    which only its multimodal and data-set paths import. mlx is pinned to ours, mlx-lm to its own pin,
    and scripts/setup gives it our BLAS. MLXRL_SOURCE names another copy (a local checkout where
    GitHub cannot be reached)."""
    from importlib.metadata import version

    py = MLXRL_ENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import mlx_rl.train"], capture_output=True).returncode == 0:
        return py
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(MLXRL_ENV)], check=True)
    mlx = f"mlx[cpu]=={version('mlx')}" if sys.platform == "linux" else f"mlx=={version('mlx')}"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    print(f"installing mlx-rl from {MLXRL_SOURCE}", file=sys.stderr, flush=True)
    subprocess.run(pip + [mlx, MLXRL_MLX_LM, "psutil"], check=True)
    subprocess.run(pip + ["--no-deps", "--ignore-requires-python", MLXRL_SOURCE], check=True)
    subprocess.run([str(REPO / "scripts" / "setup")], check=True)
    return py


def run_mlxrl(precision: str, n_prompts: int, max_tokens: int = MAX_TOKENS) -> dict:
    """One GRPO iteration of mlx-rl (bench/peer_mlxrl.py) on the same model, prompts, group, length and LoRA."""
    import gspo
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    path = model_dir(precision)
    spec = {"model": str(path), "prompts": prompt_tokens(load_tokenizer(path), n_prompts), "group": gspo.GROUP,
            "max_tokens": max_tokens, "lora_rank": gspo.LORA_RANK, "lora_scale": gspo.LORA_SCALE,
            "lora_layers": LORA_LAYERS, "mlxrl_commit": MLXRL_COMMIT}
    return run_spec(mlxrl_python(), "peer_mlxrl.py", spec, "mlx-rl")


MLXTUNE_ENV = BENCH_DIR / ".venv-mlxtune"
MLXTUNE = "mlx-tune==0.6.0"


def mlxtune_python() -> Path:
    """bench/.venv-mlxtune/bin/python with mlx-tune installed; creates the environment when missing.

    mlx-tune and all its declared needs (mlx-lm, mlx-vlm, mlx-embeddings, transformers, datasets < 4, ...)
    are installed as pip resolves them, with mlx pinned to ours; then scripts/setup gives it our BLAS (MLX's
    bundled BLAS multiplies some 40x slower here)."""
    from importlib.metadata import version

    py = MLXTUNE_ENV / "bin" / "python"
    if not (py.exists() and subprocess.run([str(py), "-c", "import mlx_tune.rl_trainers"],
                                           capture_output=True).returncode == 0):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(MLXTUNE_ENV)], check=True)
        mlx = f"mlx[cpu]=={version('mlx')}" if sys.platform == "linux" else f"mlx=={version('mlx')}"
        print(f"installing {MLXTUNE}", file=sys.stderr, flush=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", mlx, MLXTUNE],
                       check=True)
        subprocess.run([str(REPO / "scripts" / "setup")], check=True)
    return py


def run_mlxtune(precision: str, n_prompts: int, max_tokens: int = MAX_TOKENS) -> dict:
    """One GRPO iteration of mlx-tune (bench/peer_mlxtune.py) on the same model, prompts, group, length and LoRA:
    `n_prompts` of its steps, as it takes one prompt a step."""
    import gspo
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    path = model_dir(precision)
    spec = {"model": str(path), "prompts": prompt_tokens(load_tokenizer(path), n_prompts), "group": gspo.GROUP,
            "max_tokens": max_tokens, "lora_rank": gspo.LORA_RANK, "lora_scale": gspo.LORA_SCALE,
            "lora_layers": LORA_LAYERS, "beta": 0.02, **SAMPLER}
    return run_spec(mlxtune_python(), "peer_mlxtune.py", spec, "mlx-tune")


def run_child(which: str, precision: str, n_prompts: int, max_tokens: int) -> dict:
    """One contender in a fresh process of this file; its wall time is added as process_s."""
    cmd = [sys.executable, __file__, "--child", which, "--precisions", precision, "--batch-sizes", str(n_prompts),
           "--max-tokens", str(max_tokens)]
    with Timer() as t:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{which} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = t.s
    return out


def dtype_rates(rows: int = 256) -> None:
    """GFLOP/s of one (rows x 1024) @ (1024 x 3072) product, Qwen3-0.6B's MLP shape, in each precision on
    this machine: why the bf16 and 4-bit iterations do not fit a CPU session."""
    import mlx.core as mx

    mx.random.seed(0)
    x, w = mx.random.normal((rows, 1024)), mx.random.normal((3072, 1024)) * 0.02
    flops = 2 * rows * 1024 * 3072

    def rate(fn) -> float:
        mx.eval(fn())  # warm
        with Timer() as t:
            mx.eval(fn())
        return flops / t.s / 1e9

    for name, dt in (("f32", mx.float32), ("bf16", mx.bfloat16)):
        xd, wd = x.astype(dt), w.astype(dt)
        mx.eval(xd, wd)
        emit(BENCH, f"matmul_{name}", rate(lambda: xd @ wd.T), "GFLOP/s", f"{rows}x1024 @ 1024x3072")
    for name, dt in (("4bit_f32_scales", mx.float32), ("4bit_bf16_scales", mx.bfloat16)):
        wq, sc, bi = mx.quantize(w.astype(dt), group_size=64, bits=4)
        xd = x.astype(dt)
        mx.eval(wq, sc, bi, xd)
        emit(BENCH, f"matmul_{name}",
             rate(lambda: mx.quantized_matmul(xd, wq, sc, bi, transpose=True, group_size=64, bits=4)),
             "GFLOP/s", f"{rows}x1024 @ 1024x3072, mx.quantized_matmul, activations in the scales' dtype")


def nightly_estimate(precision: str, n_prompts: int = 32) -> None:
    """The default nightly's plan and estimated peak for `n_prompts` sample prompts x 8 x 180 on this base:
    the decode batch the default decode_cache_gb gives (on a machine with the memory free), and the
    guard's estimates of one decode batch and one training step at the longest prompt."""
    from varro.engine.core.config import Config
    from varro.engine.model.memory import ModelShape, sampling_bytes, sampling_plan, training_bytes
    from varro.engine.run.policy import Policy

    cfg = Config()
    cfg.model.model = str(model_dir(precision))
    with tempfile.TemporaryDirectory() as run_path:
        policy = Policy.open(cfg, Path(run_path))
        lengths = [len(policy.prompt_tokens(t)) for t in prompt_texts(n_prompts)]
        g, m, longest = cfg.sampling.group_size, cfg.sampling.max_tokens, max(lengths)
        decode, _ = sampling_plan(policy.model, lengths, g, m, 0.0, cfg.train.decode_cache_gb)
        decode = decode or n_prompts
        shape = ModelShape.from_model(policy.model)
    sampling = sampling_bytes(shape, decode, g, longest, m)
    training = training_bytes(shape, max(cfg.train.micro_batch, 1), g, longest, m, day_rows=n_prompts * g)
    label = f"{precision}.nightly{n_prompts}"
    note = (f"{n_prompts} prompts x {g} x {m}, longest prompt {longest} tokens, {decode} prompts decoded at a time "
            f"(decode_cache_gb {cfg.train.decode_cache_gb}), micro-batch {cfg.train.micro_batch}")
    emit(BENCH, f"{label}.weights", shape.weight_bytes / 1e9, "GB", "the base and the LoRA adapters")
    emit(BENCH, f"{label}.sampling_estimate", sampling / 1e9, "GB", note)
    emit(BENCH, f"{label}.training_estimate", training / 1e9, "GB", "one step, the guard's formula")
    emit(BENCH, f"{label}.peak_estimate", max(sampling, training) / 1e9, "GB", "ESTIMATE: the larger of the two")


def sampling_bound_s(ours: dict, rows: int, max_tokens: int, bw_gbs: float, rate_gflops: float) -> float:
    """The roofline floor of our sampling on this machine: the prompt's prefill at the matmul rate, then
    `max_tokens` decode steps, each the larger of reading the weights and the rows' KV cache at the
    memory bandwidth and the rows' matmuls at the matmul rate (float32, context at its mean)."""
    q = QWEN3_06B
    prompt = ours["positions"] / rows - max_tokens + 1
    flops_token = 2 * ours["matmul_params"]
    kv_token = q["num_hidden_layers"] * 2 * q["num_key_value_heads"] * q["head_dim"] * 4
    step = max((4 * ours["matmul_params"] + rows * kv_token * (prompt + max_tokens / 2)) / (bw_gbs * 1e9),
               rows * flops_token / (rate_gflops * 1e9))
    return (rows // 8) * prompt * flops_token / (rate_gflops * 1e9) + max_tokens * step


def report(precision: str, n: int, max_tokens: int, ours: dict | None, peer: dict | None,
           machine: dict | None = None, mlxrl: dict | None = None, mlxtune: dict | None = None) -> None:
    label = f"{precision}.b{n}.t{max_tokens}"
    if ours and machine and precision == "f32":  # the rates are float32's: fractions only for a float32 base
        train_gflops = 2 * ours["matmul_params"] * ours["forward_positions"] / (ours["train_s"] * 1e9)
        emit(BENCH, f"{label}.ours_train_fraction", train_gflops / machine["rate"], "x matmul rate",
             f"{train_gflops:.1f} GFLOP/s over {ours['forward_positions']} forward-equivalent positions")
        bound = sampling_bound_s(ours, n * 8, max_tokens, machine["bw"], machine["rate"])
        emit(BENCH, f"{label}.ours_sampling_fraction", bound / ours["sampling_s"], "x bound",
             f"roofline floor {bound:.1f} s (prefill at the matmul rate; each decode step bandwidth- or "
             f"matmul-bound)")
    if ours:
        emit(BENCH, f"{label}.ours_iteration", ours["iteration_s"], "s",
             f"{n} prompts x 8 x {max_tokens} tokens ({ours['completion_tokens']} made), {ours['steps']} steps; "
             f"base after Policy.open: {ours['base_dtype']}; process {ours['process_s']:.0f} s")
        emit(BENCH, f"{label}.ours_sampling", ours["sampling_s"], "s")
        emit(BENCH, f"{label}.ours_prepare", ours["prepare_s"], "s", "pi_old and reference passes")
        emit(BENCH, f"{label}.ours_updates", ours["updates_s"], "s", f"{ours['steps']} minibatch steps")
        emit(BENCH, f"{label}.ours_peak_memory", ours["peak_memory_gb"], "GB")
        if "estimate_gb" in ours:
            profile = dict(ours["profile_gb"])
            for phase, measured in (("sampling", profile["sampling"]),
                                    ("training", ours.get("training_peak_gb", ours["peak_memory_gb"]))):
                est = ours["estimate_gb"][phase]
                emit(BENCH, f"{label}.ours_{phase}_estimate", est, "GB",
                     f"the memory guard's; measured {measured:.3f} GB, estimate {est / measured:.2f}x")
        if "profile_gb" in ours:
            print(f"{BENCH}.{label}.ours_profile_gb = " + ", ".join(f"{k} {v:.2f}" for k, v in ours["profile_gb"]),
                  flush=True)
    for key, run, rest, rest_note in (
            ("peer", peer, "loss_grad", "rewards, reference pass, loss and gradient, update"),
            ("mlxrl", mlxrl, "update", "rewards, old and reference passes, loss and gradient, update"),
            ("mlxtune", mlxtune, "update", "rewards, one policy-gradient step per prompt (no other passes)")):
        if not run:
            continue
        rows = f", {run['updated_rows']} rows updated" if "updated_rows" in run else ""
        emit(BENCH, f"{label}.{key}_iteration", run["iteration_s"], "s",
             f"{run['trainer']}, batch size {n} ({run['completion_tokens']} tokens made{rows}); "
             f"process {run['process_s']:.0f} s")
        emit(BENCH, f"{label}.{key}_sampling", run["sampling_s"], "s")
        emit(BENCH, f"{label}.{key}_{rest}", run["iteration_s"] - run["sampling_s"], "s", rest_note)
        emit(BENCH, f"{label}.{key}_peak_memory", run["peak_memory_gb"], "GB")
    # issue 28's targets
    for suffix, run, unit, targets in (("", peer, "x peer", ("target <= 0.40", "target <= 0.35")),
                                       ("_mlxrl", mlxrl, "x mlx-rl", ("target <= 0.60", "target <= 0.55")),
                                       ("_mlxtune", mlxtune, "x mlx-tune", ("", ""))):
        if ours and run:
            emit(BENCH, f"{label}.time_ratio{suffix}", ours["iteration_s"] / run["iteration_s"], unit, targets[0])
            emit(BENCH, f"{label}.memory_ratio{suffix}", ours["peak_memory_gb"] / run["peak_memory_gb"], unit,
                 targets[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precisions", default="f32,bf16,4bit", help="comma-separated, of f32, bf16, 4bit")
    ap.add_argument("--batch-sizes", default="1", help="prompts per iteration, comma-separated")
    ap.add_argument("--contenders", default="ours,peer,mlxrl", help="comma-separated, of ours, peer (mlx-lm-lora), "
                    "mlxrl (mlx-rl), mlxtune (mlx-tune; not in the default)")
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS,
                    help=f"completion length (default {MAX_TOKENS}; bf16 and 4-bit matmuls are slow on a CPU)")
    ap.add_argument("--nightly", action="store_true",
                    help="only the default nightly's plan and estimated peak for 32 prompts (no training)")
    ap.add_argument("--rates", action="store_true", help="only the matmul rate of each precision here")
    ap.add_argument("--child", choices=["ours", "peer", "mlxrl", "mlxtune"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    precisions, sizes = a.precisions.split(","), [int(s) for s in a.batch_sizes.split(",")]
    if a.child:
        fn = {"ours": run_ours, "peer": run_peer, "mlxrl": run_mlxrl, "mlxtune": run_mlxtune}[a.child]
        print(json.dumps(fn(precisions[0], sizes[0], a.max_tokens)))
        return
    if a.rates:
        dtype_rates()
        return
    for p in precisions:
        with Timer() as t:
            build(p)
        print(f"{BENCH}.{p}: model ready in {t.s:.0f} s", flush=True)
    if a.nightly:
        for p in precisions:
            nightly_estimate(p)
        return
    machine = None
    if "f32" in precisions:
        from roofline import bandwidth_gbs, matmul_gflops

        machine = {"bw": bandwidth_gbs(),
                   "rate": max(matmul_gflops(1024, 1024, 1024), matmul_gflops(2048, 2048, 2048))}
        emit(BENCH, "memory_bandwidth", machine["bw"], "GB/s", "as roofline.py")
        emit(BENCH, "matmul_rate", machine["rate"], "GFLOP/s", "float32 mx.matmul, better of 1024^3 and 2048^3")
    for p in precisions:
        for n in sizes:
            runs = {}
            label = f"{BENCH}.{p}.b{n}.t{a.max_tokens}"
            for who in a.contenders.split(","):
                try:
                    runs[who] = run_child(who, p, n, a.max_tokens)
                except RuntimeError as e:
                    print(f"{label}.{who} = failed: {e}", flush=True)
                    continue
                print(f"{label}.{who}_raw = {json.dumps(runs[who])}", flush=True)  # every figure the child gave
            report(p, n, a.max_tokens, runs.get("ours"), runs.get("peer"), machine, runs.get("mlxrl"),
                   runs.get("mlxtune"))


if __name__ == "__main__":
    main()
