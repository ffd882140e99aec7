"""The frozen trunk: the layers below the first trainable one, run once per row for the whole day.

With LoRA on the top `lora_layers` blocks (16 of Qwen3-0.6B's 28), the blocks below give every pass of
the day the same output: pi_old, the reference (adapters off changes nothing there), each update's
forward and the end-of-day health pass. `Trunk.build` runs them once over each prompt and its rows and
keeps their output; every later pass starts at the first trainable layer from it
(varro.engine.model.frozen). It holds rows x completion positions x hidden in the base's dtype (23.6 MB for
4 x 8 x 180 at Qwen3-0.6B's float32 shape), counted by the memory guard's training estimate.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from varro.engine.core.rollout import Rollout
from varro.engine.model.frozen import Frozen, recording
from varro.engine.model.loading import first_trainable_layer
from varro.engine.train.batching import Chunk, RowStates, make_chunks
from varro.engine.train.errors import TrainingError
from varro.engine.train.logprobs import PrefixCache


class Trunk:
    """Layer `start`'s input for each prompt (without its last token) and each completion position of the
    rows it was built on."""

    def __init__(self, start: int):
        self.start = start
        self._prompts: dict[tuple[int, ...], mx.array] = {}  # prompt tokens -> (1, P - 1, D)
        self._rows = RowStates("the frozen layers' output")

    @classmethod
    def build(cls, model: nn.Module, rows: list[Rollout], pad_id: int,
              piece_rows: Callable[[Chunk], int]) -> Trunk | None:
        """The trunk of `rows` under `model`, each prompt once and its rows `piece_rows(prompt)` at a time;
        None when no layer is frozen below a trainable one (full fine-tuning, or nothing trains)."""
        start = first_trainable_layer(model)
        if not 0 < start < len(model.layers):
            return None
        trunk = cls(start)
        for p in make_chunks(rows, pad_id):
            has_head = bool(p.head.shape[1])
            cache = [PrefixCache() for _ in model.layers] if has_head else None
            with recording(model, start) as rec:
                if has_head:
                    model(p.head, cache=cache)  # fills the frozen layers' caches; the logits are never evaluated
                    mx.eval(rec.out)
                    trunk._prompts[_key(p)] = rec.out
                for piece in p.pieces(piece_rows(p)):
                    model(piece.inputs, cache=cache)
                    mx.eval(rec.out)
                    trunk._rows.put(piece, rec.out)
        return trunk

    def prompt(self, c: Chunk) -> Frozen | None:
        """What a forward of `c`'s prompt head starts from; None for a one-token prompt (no head)."""
        if not c.head.shape[1]:
            return None
        held = self._prompts.get(_key(c))
        if held is None:
            raise TrainingError(f"the trunk was not built on prompt {c.source[0].prompt_id!r}")
        return Frozen(self.start, held)

    def rows(self, c: Chunk) -> Frozen:
        """What a forward of `c`'s rows (a chunk or a piece of one) starts from, (n, T, D), zero on padding."""
        return Frozen(self.start, self._rows.stack(c))

    def nbytes(self) -> int:
        return sum(h.nbytes for h in self._prompts.values()) + self._rows.nbytes()


def _key(c: Chunk) -> tuple[int, ...]:
    return tuple(c.source[0].prompt_tokens)
