"""The end-of-day health pass: the final weights' KL to the reference and their entropy, on every kept row.

The guards judge the weights the day would keep, not those each step started from: `kl_after` (the exact
per-token KL over the whole vocabulary), `kl_after_k3` beside it, and `entropy_after` at the sampling
temperature, each averaged per sequence, then over sequences and ranks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from varro.engine.model.distributed import World
from varro.engine.model.head import chunked_kl, chunked_logprobs, output_head
from varro.engine.model.loading import base_dtype
from varro.engine.train.batching import Chunk, Minibatch, RowStates, make_chunks
from varro.engine.train.gspo import sequence_mean
from varro.engine.train.logprobs import forward_hidden, pass_piece_rows, prefix_kv
from varro.engine.train.trunk import Trunk


@dataclass
class HealthPass:
    """The trainer's model and reference (LoRA off, or the base weights; None: no KL), over all ranks of
    `world`, at the sampling temperature, the output head `head_chunk` vocabulary rows at a time."""

    model: nn.Module
    reference: Callable[[], contextlib.AbstractContextManager] | None
    world: World
    temperature: float
    head_chunk: int
    pad_id: int = 0
    trunk: Trunk | None = None  # the frozen layers' output for every row (train/trunk.py)
    ref_states: RowStates | None = None  # the reference pass's final hidden states, where it measured

    def measure(self, batches: list[Minibatch]) -> dict[str, float | None]:
        """The current weights on every row of `batches`, averaged per sequence then over sequences (over all
        ranks): `kl_after`, the exact per-token KL(pi || ref) summed over the vocabulary at each completion
        position; `kl_after_k3`, its k3 estimate from the completion tokens alone; `entropy_after`, the
        policy's entropy at the sampling temperature. The KLs are None without a reference.

        These are the weights the day would keep, so the guards judge them (the steps' own `kl` and `entropy`
        measure the weights before each step). Each piece sweeps its policy and reference heads together
        (see _health_stats); the reference is switched on per piece, and runs only for rows whose final
        states the reference pass did not keep (its weights do not change during the day).
        """
        chunks = [c for mb in batches for c in mb.chunks]
        if not chunks:
            return {"kl_after": None, "kl_after_k3": None, "entropy_after": None}
        ref = self.reference
        dtype_bytes = base_dtype(self.model).size
        sums = mx.zeros(4)  # exact KL, k3 KL, entropy, sequences
        for p in make_chunks([r for c in chunks for r in c.source], self.pad_id):
            start = self.trunk.prompt(p) if self.trunk else None
            kv, kv_ref = prefix_kv(self.model, p.head, start), None
            if ref is not None and not self._kept(p):
                with ref():
                    kv_ref = prefix_kv(self.model, p.head, start)
                    mx.eval(kv_ref)
            for piece in p.pieces(pass_piece_rows(self.model, p, dtype_bytes, self.head_chunk, health=True)):
                stats = self._health_stats(kv, kv_ref, piece)  # each (n, T)
                mask = piece.mask
                entropy = sequence_mean(stats["entropy"], mask)
                kl = k3 = mx.zeros_like(entropy)
                if ref is not None:
                    kl = sequence_mean(stats["kl"], mask)
                    d = mx.where(mask > 0, stats["ref_logp"] - stats["logp"], 0.0)
                    k3 = sequence_mean(mx.exp(d) - d - 1.0, mask)
                sums = sums + mx.stack([kl.sum(), k3.sum(), entropy.sum(), mx.array(float(piece.rows))])
                mx.eval(sums)
        kl_sum, k3_sum, ent_sum, n = np.array(self.world.all_sum(sums)).tolist()
        has_ref = ref is not None
        return {"kl_after": kl_sum / n if has_ref else None, "kl_after_k3": k3_sum / n if has_ref else None,
                "entropy_after": ent_sum / n}

    def _health_stats(self, kv: list[mx.array], kv_ref: list[mx.array] | None, piece: Chunk) -> dict[str, mx.array]:
        """`piece`'s per-position entropy and log-probs at the targets under the policy and, with `kv_ref`,
        the reference's log-probs and the exact KL: (n, T) arrays, without gradient. The heads are swept a
        vocabulary chunk at a time (chunked_kl); without a chunked head, over the whole vocabulary."""
        head = output_head(self.model) if self.head_chunk > 0 else None
        if head is None:
            return self._whole_vocabulary_stats(kv, kv_ref, piece)
        hidden = self._hidden(kv, piece)
        if self.reference is None:
            logp, entropy = chunked_logprobs(hidden, head, piece.targets, self.temperature, self.head_chunk,
                                             with_entropy=True)
            return {"entropy": entropy, "logp": mx.stop_gradient(logp)}
        with self.reference():
            ref_head = output_head(self.model)
            ref_hidden = self.ref_states.stack(piece) if self._kept(piece) else self._hidden(kv_ref, piece)
            mx.eval(ref_hidden, ref_head.arrays)  # the reference's weights are only in place here
        return chunked_kl(hidden, head, ref_hidden, ref_head, piece.targets, self.temperature, self.head_chunk)

    def _kept(self, c: Chunk) -> bool:
        """Whether the reference pass kept the final states of all of `c`'s rows."""
        return self.ref_states is not None and self.ref_states.covers(c)

    def _whole_vocabulary_stats(self, kv: list[mx.array], kv_ref: list[mx.array] | None,
                                piece: Chunk) -> dict[str, mx.array]:
        """_health_stats from the whole vocabulary's log-softmax of each model."""
        pick = lambda a: mx.take_along_axis(a, piece.targets[..., None], axis=-1).squeeze(-1)  # noqa: E731
        lp = self._log_softmax(kv, piece)
        out = {"entropy": -(mx.exp(lp) * lp).sum(axis=-1), "logp": pick(lp)}
        mx.eval(lp, out)
        if kv_ref is None:
            return out
        with self.reference():
            lr = self._log_softmax(kv_ref, piece)
            mx.eval(lr)
        return {**out, "kl": (mx.exp(lp) * (lp - lr)).sum(axis=-1), "ref_logp": pick(lr)}

    def _hidden(self, kv: list[mx.array], piece: Chunk) -> mx.array:
        """The final (normed) hidden states at `piece`'s positions on top of the prompt's `kv`, (n, T, D)."""
        frozen = self.trunk.rows(piece) if self.trunk else None
        return mx.stop_gradient(forward_hidden(self.model, kv, piece.inputs, frozen))

    def _log_softmax(self, kv: list[mx.array], piece: Chunk) -> mx.array:
        """log pi_T over the whole vocabulary at each of `piece`'s positions, (n, T, V), without gradient."""
        frozen = self.trunk.rows(piece) if self.trunk else None
        logits = forward_hidden(self.model, kv, piece.inputs, frozen, logits=True).astype(mx.float32)
        logits = logits * (1.0 / self.temperature)
        return mx.stop_gradient(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
