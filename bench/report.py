"""Write docs/benchmarks.md (to stdout) from a bench/run_all results folder.

    scripts/env python bench/report.py bench/results > docs/benchmarks.md
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from common import BENCH_DIR, MODEL_SHAPE

OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
BLASES = ("bundled", "openblas")


def load(folder: Path) -> dict[tuple[str, str], dict]:
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    return {(f"{r['bench']}.{r['name']}", r["blas"]): r for r in rows}


def run_info(folder: Path) -> dict[str, str]:
    info: dict[str, str] = {}
    for line in (folder / "run.txt").read_text().splitlines():
        if line.startswith("seconds "):
            _, blas, name, s = line.split()
            info[f"seconds {blas} {name}"] = s
            continue
        if "=" in line:
            key, value = line.split("=", 1)
            info[key] = value
    return info


def fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def machine() -> list[str]:
    def cmd(*args):
        try:
            return subprocess.run(args, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    cpu = re.search(r"Model name:\s*(.+)", cmd("lscpu"))
    meminfo, osrel = Path("/proc/meminfo"), Path("/etc/os-release")
    mem = re.search(r"MemTotal:\s*(\d+)", meminfo.read_text()) if meminfo.exists() else None
    osr = re.search(r'PRETTY_NAME="(.+)"', osrel.read_text()) if osrel.exists() else None
    memory = f"{int(mem.group(1)) / 2**20:.0f} GiB memory" if mem else "memory unknown"
    return [
        f"- CPU: {cpu.group(1) if cpu else platform.processor()}, {os.cpu_count()} cores "
        f"({'AVX-512' if 'avx512f' in cmd('lscpu') else 'AVX2'}), {memory}",
        f"- OS: {osr.group(1) if osr else platform.system()}, kernel {platform.release()}, "
        f"Python {platform.python_version()}",
    ]


def versions() -> list[str]:
    def v(dist):
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    ours = ", ".join(f"{d} {v(d)}" for d in ("mlx", "mlx-cpu", "mlx-lm", "numpy", "torch",
                                            "sentence-transformers", "transformers", "tokenizers"))
    peer_py = BENCH_DIR / ".venv-peer" / "bin" / "python"
    peer = "not installed"
    if peer_py.exists():
        peer = subprocess.run([str(peer_py), "-c", "import importlib.metadata as m; print(', '.join("
                               "f'{d} {m.version(d)}' for d in ('mlx-lm-lora', 'mlx', 'mlx-lm')))"],
                              capture_output=True, text=True).stdout.strip()
    return [f"- .venv: {ours}", f"- bench/.venv-peer (created by bench/gspo.py from PyPI): {peer}"]


def blas_lines() -> list[str]:
    lines = []
    try:
        import mlx.core as mlx_core

        libs = sorted((Path(mlx_core.__file__).parents[1] / "mlx_cpu.libs").glob("libblas*"))
        bundled = libs[0].name if libs else "libblas (not found)"
    except ImportError:
        bundled = "?"
    lines.append(f"- **bundled**: the reference (netlib) BLAS that the mlx-cpu wheel ships, `mlx_cpu.libs/{bundled}`, "
                 "single-threaded, no optimised kernels (`VARRO_NO_OPENBLAS=1 scripts/env ...`).")
    if Path(OPENBLAS).exists():
        lib = ctypes.CDLL(OPENBLAS)
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        config = lib.openblas_get_config().decode()
        lines.append(f"- **openblas**: Debian's `{OPENBLAS}` ({config}; kernel {lib.openblas_get_corename().decode()}, "
                     f"{lib.openblas_get_num_threads()} threads), linked by `scripts/setup` in place of the "
                     "bundled file inside the mlx-cpu wheel, so MLX alone uses it (torch keeps its own BLAS).")
    else:
        lines.append(f"- **openblas**: {OPENBLAS} is not present on this machine.")
    return lines


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else BENCH_DIR / "results")
    r = load(folder)
    info = run_info(folder)

    def val(key, blas):
        row = r.get((key, blas))
        return row["value"] if row else None

    def note(key, blas):
        row = r.get((key, blas))
        return row["note"] if row else ""

    out: list[str] = []
    w = out.append
    w("# Benchmarks")
    w("")
    w("Speed and memory of Varro's engine against mlx-lm and mlx-lm-lora on the same model, prompts, sampler "
      "and BLAS. Every comparison is a ratio of two figures taken in the same run of `bench/run_all`, once with "
      "MLX's bundled BLAS and once with OpenBLAS. This file is written by `bench/run_all`; "
      "the hand-written sections at the end are `bench/*.md`.")
    w("")
    total = int(info.get("total_seconds", 0))
    w(f"Run: {info.get('started_utc', '?')} to {info.get('finished_utc', '?')}, **{total // 60} min {total % 60} s** "
      f"in all. Load average (1, 5, 15 min) at the start {info.get('loadavg_start', '?')}, at the end "
      f"{info.get('loadavg_end', '?')}: the machine was shared with other work, so absolute figures are noisy; "
      "the ratios are what the targets are set on.")
    w("")
    w("## Targets")
    w("")
    w("| target | bundled BLAS | OpenBLAS | verdict |")
    w("| --- | --- | --- | --- |")

    def verdict(values, ok) -> str:
        got = [x for x in values if x is not None]
        if not got:
            return "not measured"
        return "**met**" if all(ok(x) for x in got) else "**missed**"

    targets = [
        ("Rollouts: ours / `batch_generate` >= 1 (both BLAS)", "rollouts.ours_vs_batch_generate", BLASES,
         lambda x: x >= 1),
        ("Rollouts: ours / loop over `generate` >= 10 (OpenBLAS)", "rollouts.ours_vs_loop", ("openblas",),
         lambda x: x >= 10),
        ("GSPO iteration time / mlx-lm-lora GRPO <= 0.5 (batch size 1)", "gspo.b1.time_ratio", BLASES,
         lambda x: x <= 0.5),
        ("GSPO peak memory / mlx-lm-lora GRPO <= 0.75 (batch size 1)", "gspo.b1.memory_ratio", BLASES,
         lambda x: x <= 0.75),
        ("GSPO iteration time / mlx-lm-lora GRPO <= 0.5 (batch size 4)", "gspo.b4.time_ratio", ("openblas",),
         lambda x: x <= 0.5),
        ("GSPO peak memory / mlx-lm-lora GRPO <= 0.75 (batch size 4)", "gspo.b4.memory_ratio", ("openblas",),
         lambda x: x <= 0.75),
    ]
    for label, key, blases, ok in targets:
        cells = [fmt(val(key, b)) if b in blases else "(not a target)" for b in BLASES]
        w(f"| {label} | {cells[0]} | {cells[1]} | {verdict([val(key, b) for b in blases], ok)} |")
    w("")
    w("Why each miss happens, with the profile, and the fixes: see [Analysis](#analysis) below.")
    w("")

    sections = [
        ("1. Rollout throughput", "rollouts", "4 prompts x 8 completions x 128 tokens, completion tokens per "
         "second including prefill (`bench/rollouts.py`)."),
        ("2. One GSPO iteration against mlx-lm-lora's GRPO", "gspo", "Group 8, 128 tokens, LoRA rank 8 on every "
         "layer, our sampler (temp 0.7, top-p 0.9, top-k 40), sequence-level importance sampling, AdamW; each "
         "contender in its own process; `bN` = N prompts per iteration (mlx-lm-lora's batch size). Peak memory "
         "is `mx.get_peak_memory()` over the measured iteration, weights included (`bench/gspo.py`, "
         "`bench/peer_grpo.py`)."),
        ("3. Reward scoring", "rewards", "Varro's `score_texts` with the real MiniLM behind the SQLite cache, "
         "groups of 8 (`bench/rewards.py`)."),
        ("4. The limit", "roofline", "Memory bandwidth, the BLAS's matmul rate, our decode rate as a fraction of "
         "the bound they imply, and a profile of one decode step (`bench/roofline.py`)."),
    ]
    for title, bench, text in sections:
        w(f"## {title}")
        w("")
        w(text)
        w("")
        w("| figure | bundled BLAS | OpenBLAS | OpenBLAS / bundled | unit | how (OpenBLAS run) |")
        w("| --- | --- | --- | --- | --- | --- |")
        names = []
        for (key, _), row in r.items():
            if row["bench"] == bench and key not in names:
                names.append(key)
        for key in names:
            b, o = val(key, "bundled"), val(key, "openblas")
            ratio = fmt(o / b) if b and o else "—"
            unit = (r.get((key, "openblas")) or r.get((key, "bundled")))["unit"]
            how = (note(key, "openblas") or note(key, "bundled")).replace("|", "/")
            w(f"| `{key.split('.', 1)[1]}` | {fmt(b)} | {fmt(o)} | {ratio} | {unit} | {how} |")
        w("")

    w("## 5. What OpenBLAS buys")
    w("")
    w("The column *OpenBLAS / bundled* above. In short:")
    w("")
    for key, label in [("roofline.matmul_1024x1024x1024", "float32 matmul rate"),
                       ("rollouts.loop_tok_s", "loop over `generate`"),
                       ("rollouts.batch_generate_tok_s", "`batch_generate`"),
                       ("rollouts.ours_tok_s", "our rollouts"),
                       ("gspo.b1.ours_iteration", "our GSPO iteration (time, lower is better)"),
                       ("gspo.b1.peer_iteration", "mlx-lm-lora's GRPO iteration (time)"),
                       ("rewards.cold_completions_s", "reward scoring, cold cache")]:
        b, o = val(key, "bundled"), val(key, "openblas")
        if b and o:
            w(f"- {label}: {fmt(b)} -> {fmt(o)} ({fmt(o / b)}x)")
    w("")
    w("## 6. Projection: Qwen3-0.6B on an Apple M-series laptop (a PROJECTION, not a measurement)")
    w("")
    w("Nightly minutes for 32 prompts x 8 completions x 180 tokens plus the updates and the reward, from the "
      "roofline bound of each chip (Apple's published memory bandwidth and GPU float32 rate) divided by the "
      "fraction of the bound we reached here (batched decode from `roofline.py`, training from `gspo.py`), "
      "weights in float32 as `Policy.open` casts them. It assumes our code reaches the same share of the bound "
      "on Metal as on this CPU, which nothing here measures (`bench/projection.py`). Read the OpenBLAS column: "
      "with fast matmuls our fixed costs (MLX's elementwise ops, the sampler) take the same large share "
      "as they would next to a GPU's matmuls; the bundled-BLAS fractions are high only because its slow "
      "matmuls hide those costs, so that column is the optimistic one.")
    w("")
    w("| chip | from the OpenBLAS fractions | from the bundled-BLAS fractions | at the bound |")
    w("| --- | --- | --- | --- |")
    chips = sorted({k.split(".")[1] for (k, _) in r if k.startswith("projection.")},
                   key=lambda c: [k for (k, _) in r].index(f"projection.{c}.nightly_min"))
    for chip in chips:
        key = f"projection.{chip}.nightly_min"
        n = note(key, "openblas") or note(key, "bundled")
        bound = re.search(r"at the bound ([\d.]+) min", n)
        w(f"| {n.split(',')[0].replace('PROJECTION ', '')} | {fmt(val(key, 'openblas'))} min | "
          f"{fmt(val(key, 'bundled'))} min | {bound.group(1) if bound else '—'} min |")
    w("")
    w("## Machine, libraries, BLAS")
    w("")
    out.extend(machine())
    out.extend(versions())
    out.extend(blas_lines())
    w("")
    w("## The model")
    w("")
    w(f"A randomly initialised Qwen3-architecture model written by `varro.engine.model.tiny.write_tiny_model` "
      f"(`bench/common.py`): {', '.join(f'{k} {v}' for k, v in MODEL_SHAPE.items())}, tied embeddings, "
      "float32, 30.3M parameters; its byte-level BPE tokenizer is trained on the shipped sample text plus "
      "seeded pseudo-words, to reach the 8,192-token vocabulary. Built once into `bench/.models/`. The prompts "
      "are Varro's real forecast prompts for the first sample headlines (123 to 192 tokens).")
    w("")
    w("EOS: a random model samples its EOS now and then, which would let contenders stop early and do different "
      "amounts of work. Every contender gets a tokenizer whose EOS set is empty (`common.no_eos`), so every "
      "completion runs to its token limit; the rates count the tokens each contender returned (the notes show "
      "the counts).")
    w("")
    w("## Commands")
    w("")
    w("`bench/run_all` ran, in this order (each benchmark also runs alone with the same command):")
    w("")
    w("```")
    w((folder / "commands.txt").read_text().rstrip())
    w("```")
    w("")
    secs = [(k.split()[1], k.split()[2], v) for k, v in info.items() if k.startswith("seconds ")]
    w("Seconds per benchmark: " + ", ".join(f"{b} {n} {s}" for b, n, s in secs) + ".")
    w("")
    # Hand-written sections: the analysis first, then any other bench/*.md (e.g. scale_out.md).
    extra = sorted(BENCH_DIR.glob("*.md"), key=lambda p: (p.name != "analysis.md", p.name))
    for section in extra:
        w(section.read_text().rstrip())
        w("")
    print("\n".join(line for line in out if line is not None))


if __name__ == "__main__":
    main()
