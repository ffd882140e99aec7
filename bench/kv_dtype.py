"""A decode step's time with the KV cache in the base's float32 or in bf16 (issue 28, sampling memory).

A float32 model of Qwen3-0.6B's widths with `--layers` blocks decodes one token
for `--rows` rows over a cache of `--positions` positions held three ways:
float32 (mlx-lm's BatchKVCache), bf16 cast back to float32 for attention each
step (`cast`), and bf16 handed to attention as it is (`mixed`: MLX promotes).
Prints the median time of each through the blocks (the output head, the same
for all three, left out), interleaved, and the cache's bytes.

Usage: scripts/env python bench/kv_dtype.py [--layers 4] [--rows 32] [--positions 280] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx
from common import QWEN3_06B
from mlx_lm.models.cache import BatchKVCache
from mlx_lm.models.qwen3 import Model, ModelArgs


class Bf16Cache(BatchKVCache):
    """BatchKVCache storing bf16; `cast` returns float32 copies to attention, else the bf16 arrays."""

    def __init__(self, left_padding, cast: bool):
        super().__init__(left_padding)
        self.cast = cast

    def update_and_fetch(self, keys, values):
        k, v = super().update_and_fetch(keys.astype(mx.bfloat16), values.astype(mx.bfloat16))
        return (k.astype(mx.float32), v.astype(mx.float32)) if self.cast else (k, v)


def filled(model, kind: str, rows: int, positions: int) -> list:
    args = model.args
    shape = (rows, args.num_key_value_heads, positions, args.head_dim)
    dtype = mx.float32 if kind == "float32" else mx.bfloat16
    caches = []
    for _ in range(args.num_hidden_layers):
        c = BatchKVCache([0] * rows) if kind == "float32" else Bf16Cache([0] * rows, cast=kind == "cast")
        c.update_and_fetch(mx.random.normal(shape).astype(dtype), mx.random.normal(shape).astype(dtype))
        mx.eval(c.keys, c.values)
        caches.append(c)
    return caches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--positions", type=int, default=280)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    mx.random.seed(0)
    model = Model(ModelArgs.from_dict({**QWEN3_06B, "num_hidden_layers": a.layers}))
    mx.eval(model.parameters())
    kinds = ["float32", "cast", "mixed"]
    caches = {k: filled(model, k, a.rows, a.positions) for k in kinds}
    tokens = mx.zeros((a.rows, 1), dtype=mx.int32)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(a.repeats):
        for k in kinds:
            start = time.perf_counter()
            mx.eval(model.model(tokens, cache=caches[k]))  # the blocks: the head does not read the cache
            times[k].append(time.perf_counter() - start)
            for c in caches[k]:
                c.trim(1)  # the next repeat decodes at the same position
    for k in kinds:
        print(f"{k:8s} cache {sum(c.nbytes for c in caches[k]) / 1e6:.0f} MB, decode step "
              f"{statistics.median(times[k]) * 1e3:.1f} ms (median of {a.repeats})", flush=True)


if __name__ == "__main__":
    main()
