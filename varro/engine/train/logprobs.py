"""Log-probabilities of completions at the sampling temperature T, each prompt run once.

A prompt's keys and values (prefix_kv, PrefixCache) serve all of its completions, and the output head runs a
vocabulary chunk at a time (varro.engine.model.head). `pass_logprobs` is the no-gradient pass (pi_old, the
reference) over whole prompts, their rows cut into pieces that fit PASS_BYTES.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import mlx.core as mx
import mlx.nn as nn

from varro.engine.model.frozen import Frozen, replaying
from varro.engine.model.head import HEAD_CHUNK, chunked_logprobs, output_head
from varro.engine.model.loading import base_dtype
from varro.engine.model.memory import pass_position_bytes, pass_rows
from varro.engine.train.batching import Chunk, RowStates, stack_rows

if TYPE_CHECKING:
    from varro.engine.train.trunk import Trunk


def _picked(logits: mx.array, targets: mx.array, temperature: float = 1.0, with_entropy: bool = False):
    """log_softmax(logits / T) at `targets`, (N, L); with `with_entropy` also the distribution's entropy
    at each position, (N, L), without gradient."""
    logits = logits.astype(mx.float32)  # (N, L, V)
    if temperature != 1.0:
        logits = logits * (1.0 / temperature)
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1)  # (N, L)
    norm = mx.logsumexp(logits, axis=-1, keepdims=True)  # (N, L, 1)
    logp = picked - norm.squeeze(-1)
    if not with_entropy:
        return logp
    full = mx.stop_gradient(logits - norm)  # (N, L, V)
    return logp, -(mx.exp(full) * full).sum(axis=-1)


def token_logprobs(model: nn.Module, inputs: mx.array, targets: mx.array, temperature: float = 1.0) -> mx.array:
    """log pi_T(targets | inputs) per position in float32, the plain full pass at temperature T: (N, L) -> (N, L)."""
    return _picked(model(inputs), targets, temperature)


class PrefixCache:
    """A per-layer KV cache for one shared prefix under a batch of continuations.

    Filled by the prefix's pass (batch 1, `keys` None) or given its keys and
    values; a continuation's pass broadcasts them over its own batch and appends
    its own, keeping nothing. Built from plain array ops, so gradients flow
    into the prefix's keys and values too. mlx-lm's "causal" mask is aligned to
    the last query, so each continuation position sees the whole prefix and its
    own earlier positions.
    """

    def __init__(self, keys: mx.array | None = None, values: mx.array | None = None):
        self.keys, self.values = keys, values
        self.offset = 0 if keys is None else keys.shape[2]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys is None:
            self.keys, self.values = keys, values
            self.offset = keys.shape[2]
            return keys, values
        n = keys.shape[0]
        fixed = lambda a: mx.broadcast_to(a, (n, *a.shape[1:]))  # noqa: E731
        return (mx.concatenate([fixed(self.keys), keys], axis=2),
                mx.concatenate([fixed(self.values), values], axis=2))


def prefix_kv(model: nn.Module, head: mx.array, frozen: Frozen | None = None) -> list[mx.array | None]:
    """Every layer's keys and values of `head` (batch 1), flat: [k0, v0, k1, v1, ...]; [] when empty. With
    `frozen` (the frozen layers' output for `head`, see train/trunk.py) the layers below `frozen.start`
    are not run and their entries are None."""
    if not head.shape[1]:
        return []
    cache = [PrefixCache() for _ in model.layers]
    with replaying(model, frozen):
        model(head, cache=cache)  # fills the caches; the prompt's logits are never evaluated
    return [a for c in cache for a in (c.keys, c.values)]


def forward_hidden(model: nn.Module, kv: list, inputs: mx.array, frozen: Frozen | None = None,
                   logits: bool = False) -> mx.array:
    """The final (normed) hidden states of `inputs`, (n, T, D), on top of the prompt's `kv` from prefix_kv
    (with `logits`, the whole vocabulary's logits, (n, T, V)); with `frozen`, from the frozen layers'
    output for `inputs`."""
    cache = [PrefixCache(k, v) for k, v in zip(kv[::2], kv[1::2])] if kv else None
    with replaying(model, frozen):
        return (model if logits else model.model)(inputs, cache=cache)


def completion_logprobs(model: nn.Module, kv: list[mx.array], inputs: mx.array, targets: mx.array,
                        temperature: float = 1.0, with_entropy: bool = False, head_chunk: int = HEAD_CHUNK,
                        for_grad: bool = False, frozen: Frozen | None = None,
                        on_hidden: Callable[[mx.array], None] | None = None):
    """log pi_T(targets | prompt, inputs), (n, T), on top of the prompt's `kv` from prefix_kv (and the
    per-position entropy of pi_T with `with_entropy`). The output head runs `head_chunk` vocabulary rows
    at a time (varro.engine.model.head; `for_grad`: a gradient will be taken, see chunked_logprobs); 0,
    or a head it cannot chunk, takes the whole vocabulary's logits. `frozen`: the frozen layers' output
    for `inputs` (train/trunk.py); `on_hidden` is handed the final hidden states where the head is
    chunked (never on the whole-vocabulary path)."""
    head = output_head(model) if head_chunk > 0 else None
    if head is None:
        return _picked(forward_hidden(model, kv, inputs, frozen, logits=True), targets, temperature, with_entropy)
    hidden = forward_hidden(model, kv, inputs, frozen)  # (n, T, D), after the final norm
    if on_hidden is not None:
        on_hidden(hidden)
    return chunked_logprobs(hidden, head, targets, temperature, head_chunk, with_entropy, for_grad)


def chunk_logprobs(model: nn.Module, chunk: Chunk, temperature: float = 1.0) -> mx.array:
    """log pi_T(completion tokens) of a Chunk, (n, T): the prompt runs once, the completions on top of it."""
    return completion_logprobs(model, prefix_kv(model, chunk.head), chunk.inputs, chunk.targets, temperature)


def pass_piece_rows(model: nn.Module, p: Chunk, dtype_bytes: int, head_chunk: int, health: bool = False) -> int:
    """Rows per piece of a no-gradient pass over the prompt `p` (see pass_rows); `health`: the end-of-day
    pass, which sweeps two heads."""
    a, width = model.args, int(p.inputs.shape[1])
    chunk = head_chunk if output_head(model) is not None else 0
    per = pass_position_bytes(a.hidden_size, a.intermediate_size, a.num_attention_heads, a.vocab_size,
                              int(p.head.shape[1]) + 1 + width, dtype_bytes, chunk, health)
    return pass_rows(per, width, p.rows)


def pass_logprobs(model: nn.Module, chunks: list[Chunk], passes: list[Chunk], temperature: float,
                  head_chunk: int, trunk: Trunk | None = None, keep: RowStates | None = None) -> list[mx.array]:
    """The current weights' log-probs of every chunk's rows, computed over `passes` (the same rows
    grouped by prompt), without gradients: one (n, T) array per chunk. Each prompt's rows run through
    the blocks together (all of them unless their transients pass PASS_BYTES); only the output head
    is cut, into vocabulary chunks. With `trunk` the blocks start at its first trainable layer; `keep`
    gets every row's final hidden states (with a chunked head; the reference's, for the health pass)."""
    by_row = {}
    dtype_bytes = base_dtype(model).size
    for p in passes:
        kv = prefix_kv(model, p.head, trunk.prompt(p) if trunk else None)
        for piece in p.pieces(pass_piece_rows(model, p, dtype_bytes, head_chunk)):
            held = [] if keep is not None else None
            logp = mx.stop_gradient(completion_logprobs(model, kv, piece.inputs, piece.targets, temperature,
                                                        head_chunk=head_chunk,
                                                        frozen=trunk.rows(piece) if trunk else None,
                                                        on_hidden=None if held is None else held.append))
            mx.eval(logp, held)
            if held:
                keep.put(piece, mx.stop_gradient(held[0]))
            for i, r in enumerate(piece.source):
                by_row[id(r)] = logp[i, : len(r.completion_tokens)]
    out = [stack_rows(c, by_row) for c in chunks]
    mx.eval(out)
    return out
