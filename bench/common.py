"""Shared pieces of the benchmarks: the 30M bench model (or, with BENCH_MODEL=real, SmolLM2-135M-Instruct),
its prompts, the BLAS in use, one line per figure.

Every benchmark prints one line per figure (`emit`) and, when $BENCH_RESULTS
names a file, appends the same figure there as a JSON line, which
`bench/report.py` turns into docs/benchmarks.md.

No completion may stop early on EOS: the bench model is a random network, so a
sampled EOS would make the contenders do different amounts of work. Every
contender gets a tokenizer whose EOS set is empty (`no_eos`), so each one
decodes exactly max_tokens tokens; the benchmarks still count the tokens each
contender actually returned and report rates on those counts.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tests/support: the toy task some benchmarks train on

MODEL_DIR = BENCH_DIR / ".models" / "qwen3-30m"
# hidden 384, 6 layers, vocab 8192, MLP 3584: 30.3M float32 parameters (tied embeddings).
MODEL_SHAPE = dict(vocab_size=8192, hidden_size=384, num_layers=6, num_heads=6, num_kv_heads=2,
                   intermediate_size=3584)
SAMPLE_HEADLINES = REPO / "data" / "sample" / "headlines.jsonl"
# Qwen3-0.6B's config.json, less its weights: the real model's shape, for bench/real_shape.py,
# bench/memory_estimate.py and bench/projection.py.
QWEN3_06B = {
    "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 1024,
    "num_hidden_layers": 28, "intermediate_size": 3072, "num_attention_heads": 16, "num_key_value_heads": 8,
    "head_dim": 128, "rms_norm_eps": 1e-6, "vocab_size": 151_936, "max_position_embeddings": 40960,
    "rope_theta": 1000000.0, "tie_word_embeddings": True, "bos_token_id": None, "torch_dtype": "float32",
}


def qwen3_params(c: dict) -> int:
    """Parameters of a Qwen3 config with tied embeddings: 596,049,920 for Qwen3-0.6B."""
    h, d, i = c["hidden_size"], c["head_dim"], c["intermediate_size"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    block = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h + 2 * d  # projections, MLP, two norms, q/k norms
    return c["vocab_size"] * h + c["num_hidden_layers"] * block + h
# Our "tight" sampler profile, used by every contender.
SAMPLER = {"temp": 0.7, "top_p": 0.9, "top_k": 40}


def synthetic_corpus(lines: int = 5000, seed: int = 0) -> list[str]:
    """Lines of pronounceable pseudo-words, so byte-level BPE can reach an 8k vocabulary."""
    import numpy as np

    rng = np.random.default_rng(seed)
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
              "br", "cr", "dr", "st", "tr", "pl", "sh", "ch", "th", "gr", "kl", "sp"]
    nuclei = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "rk", "x"]
    syllables = [o + n + c for o in onsets for n in nuclei for c in codas]

    def word() -> str:
        return "".join(syllables[i] for i in rng.integers(0, len(syllables), rng.integers(1, 4)))

    return [" ".join(word() for _ in range(12)) for _ in range(lines)]


def bench_model() -> Path:
    """The benchmark model folder, built once (random Qwen3 architecture, float32, local tokenizer); with
    BENCH_MODEL=real, SmolLM2-135M-Instruct converted from the shipped GGUF (scripts/setup does it once)."""
    if os.environ.get("BENCH_MODEL") == "real":
        from varro.engine.loop.demo import real_model_dir

        return real_model_dir(REPO)
    if (MODEL_DIR / "model.safetensors").exists():
        return MODEL_DIR
    from varro.engine.model.tiny import sample_corpus, write_tiny_model

    tmp = MODEL_DIR.with_name(MODEL_DIR.name + ".tmp")
    write_tiny_model(tmp, seed=0, corpus=sample_corpus() + synthetic_corpus(), **MODEL_SHAPE)
    tmp.rename(MODEL_DIR)
    return MODEL_DIR


def run_spec(python, script: str, spec: dict, who: str) -> dict:
    """Run bench/`script` under the interpreter `python` with `spec` in a JSON file as its one argument;
    returns the JSON object on its last stdout line. Raises RuntimeError with its stderr's tail on failure."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        proc = subprocess.run([str(python), str(BENCH_DIR / script), f.name], capture_output=True, text=True,
                              cwd=REPO)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError(f"{who} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def no_eos(tokenizer):
    """Empty the EOS set of an mlx-lm TokenizerWrapper, so generation always runs to max_tokens."""
    tokenizer.eos_token_ids = []
    return tokenizer


def load_bench_model():
    """(model, tokenizer) of the bench model in float32, with no EOS."""
    import mlx.core as mx
    from mlx_lm import load

    model, tokenizer = load(str(bench_model()))
    model.set_dtype(mx.float32)
    return model, no_eos(tokenizer)


def param_count(model) -> int:
    from mlx.utils import tree_flatten

    return sum(v.size for _, v in tree_flatten(model.parameters()))


def headlines(n: int) -> list[dict]:
    """The first `n` shipped sample headlines (title, summary)."""
    rows = [json.loads(line) for line in SAMPLE_HEADLINES.read_text().splitlines() if line.strip()]
    return rows[:n]


def prompt_texts(n: int) -> list[str]:
    """Varro's real forecast prompts for the first `n` sample headlines."""
    from varro.forecast.task import build_prompt

    return [build_prompt(h["title"], h["summary"]) for h in headlines(n)]


def prompt_tokens(tokenizer, n: int) -> list[list[int]]:
    from varro.engine.model.loading import chat_prompt_tokens

    return [chat_prompt_tokens(tokenizer, t) for t in prompt_texts(n)]


def blas() -> str:
    """'openblas' when MLX in this process calls Debian's OpenBLAS (linked by scripts/setup), else 'bundled'."""
    import mlx.core  # noqa: F401  (loads MLX's BLAS, so it shows in the maps even in a torch-only bench)

    maps = Path("/proc/self/maps")
    # The maps show the file behind mlx_cpu.libs' link. numpy's own libscipy_openblas is not the one
    # MLX calls, and torch brings none; only a libopenblas counts.
    if maps.exists() and re.search(r"/libopenblas[^/]*\.so", maps.read_text()):
        return "openblas"
    return "bundled"


def group_parser(doc: str, group_help: str, tokens: int, tokens_help: str):
    """The options of a benchmark on one prompt's group over Qwen3-0.6B's widths (`--layers` blocks): the
    group's rows, its prompt and completion lengths, and the repeats."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--group", type=int, default=8, help=group_help)
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=tokens, help=tokens_help)
    ap.add_argument("--repeats", type=int, default=2)
    return ap


def emit(bench: str, name: str, value: float, unit: str, note: str = "", tag: str | None = None) -> None:
    """Print one figure as one line; also append it to $BENCH_RESULTS as a JSON line.

    `tag` is the BLAS the figure belongs to (default: the one in this process).
    """
    tag = tag or blas()
    text = f"{bench}.{name} = {value:.4g} {unit} [{tag}]" + (f"  # {note}" if note else "")
    print(text, flush=True)
    out = os.environ.get("BENCH_RESULTS")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"bench": bench, "name": name, "value": value, "unit": unit, "blas": tag,
                                "note": note, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                    + "\n")


class Timer:
    """`with Timer() as t: ...` then t.s is the wall time in seconds."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
