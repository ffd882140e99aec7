"""A day's rows packed for training: one Chunk per prompt, and the minibatches that hold them.

A chunk holds its prompt once and its completions right-padded beside it, with their advantages and, once
the passes ran, their pi_old and reference log-probs; the helpers here fill a chunk's rows from per-row
log-probs and pick the chunks the reference pass covers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import mlx.core as mx
import numpy as np

from varro.engine.core.rollout import Rollout
from varro.engine.train.errors import TrainingError


@dataclass
class Chunk:
    """The rows of one minibatch that share a prompt."""

    head: mx.array  # (1, P - 1) the prompt without its last token; (1, 0) for a one-token prompt
    inputs: mx.array  # (n, T) the prompt's last token, then each completion minus its last token, right-padded
    targets: mx.array  # (n, T) the completion tokens
    mask: mx.array  # (n, T) 1.0 on completion tokens, 0.0 on padding
    advantages: mx.array  # (n,)
    old_logp: mx.array | None = None  # (n, T)
    ref_logp: mx.array | None = None  # (n, T)
    sampler_logp: mx.array | None = None  # (n, T) log q of the sampler; None when a row has none stored
    source: list[Rollout] = field(default_factory=list, repr=False)  # the rows, in order

    @property
    def rows(self) -> int:
        return int(self.inputs.shape[0])

    def pieces(self, size: int) -> Iterator[Chunk]:
        """The chunk's rows `size` at a time (all at once when size < 1), each with the same prompt."""
        size = size if size > 0 else self.rows
        for i in range(0, self.rows, size):
            rows = self.source[i : i + size]
            width = max(len(r.completion_tokens) for r in rows)  # the piece's own longest row
            take = lambda a: None if a is None else a[i : i + size, :width]  # noqa: E731
            yield Chunk(self.head, take(self.inputs), take(self.targets), take(self.mask),
                        self.advantages[i : i + size], take(self.old_logp), take(self.ref_logp),
                        take(self.sampler_logp), rows)


@dataclass
class Minibatch:
    chunks: list[Chunk]
    rewards: np.ndarray  # (N,) over this rank's rows
    share: float = 1.0  # this rank's sequences x ranks / the minibatch's sequences (1 when alone)
    total: int = 0  # sequences in the whole minibatch, over all ranks

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chunks)


def make_chunks(rollouts: list[Rollout], pad_id: int = 0) -> list[Chunk]:
    """Pack rollouts into one Chunk per prompt, in order of first appearance."""
    by_prompt: dict[tuple[int, ...], list[Rollout]] = {}
    for r in rollouts:
        if not r.prompt_tokens or not r.completion_tokens:
            raise TrainingError(f"rollout {r.prompt_id!r}/{r.group_index} has an empty prompt or completion")
        by_prompt.setdefault(tuple(r.prompt_tokens), []).append(r)
    return [_chunk(list(prompt), rows, pad_id) for prompt, rows in by_prompt.items()]


def _chunk(prompt: list[int], rows: list[Rollout], pad_id: int) -> Chunk:
    width = max(len(r.completion_tokens) for r in rows)
    inputs = np.full((len(rows), width), pad_id, dtype=np.int32)
    targets = np.full((len(rows), width), pad_id, dtype=np.int32)
    mask = np.zeros((len(rows), width), dtype=np.float32)
    have_q = all(r.sampler_logprobs is not None and len(r.sampler_logprobs) == len(r.completion_tokens)
                 for r in rows)
    logq = np.zeros((len(rows), width), dtype=np.float32)
    for i, r in enumerate(rows):
        n = len(r.completion_tokens)
        inputs[i, :n] = [prompt[-1]] + r.completion_tokens[:-1]
        targets[i, :n] = r.completion_tokens
        mask[i, :n] = 1.0
        if have_q:
            logq[i, :n] = r.sampler_logprobs
    return Chunk(
        head=mx.array([prompt[:-1]], dtype=mx.int32),
        inputs=mx.array(inputs),
        targets=mx.array(targets),
        mask=mx.array(mask),
        advantages=mx.array([r.advantage for r in rows], dtype=mx.float32),
        sampler_logp=mx.array(logq) if have_q else None,
        source=rows,
    )


def stack_rows(c: Chunk, by_row: dict[int, mx.array]) -> mx.array:
    """`c`'s rows' log-probs from `by_row` (by id(row), each (len(completion),)), zero-padded: (n, T)."""
    width = c.inputs.shape[1]
    return mx.stack([mx.pad(by_row[id(r)], (0, width - len(r.completion_tokens))) for r in c.source])


class RowStates:
    """Per-row arrays over completion positions, (len(completion), D), kept by row for one day and handed
    back stacked for any chunk (or piece) of those rows, zero on its padding."""

    def __init__(self, what: str):
        self.what = what  # named in the error for a row never put
        self._rows: dict[int, tuple[Rollout, mx.array]] = {}  # id(row) -> (the row, its states)

    def put(self, c: Chunk, states: mx.array) -> None:
        """Keep `states` (n, T, D) of `c`'s rows."""
        for i, r in enumerate(c.source):
            self._rows[id(r)] = (r, states[i, : len(r.completion_tokens)])

    def covers(self, c: Chunk) -> bool:
        return all(self._held(r) is not None for r in c.source)

    def stack(self, c: Chunk) -> mx.array:
        """`c`'s rows' states, (n, T, D), zero on padding (right padding: no earlier position sees it).
        Raises TrainingError for a row never put."""
        width = int(c.inputs.shape[1])
        states = []
        for r in c.source:
            h = self._held(r)
            if h is None:
                raise TrainingError(f"{self.what} was not computed for rollout {r.prompt_id!r}/{r.group_index}")
            states.append(mx.pad(h, [(0, width - h.shape[0]), (0, 0)]))
        return mx.stack(states)

    def nbytes(self) -> int:
        return sum(h.nbytes for _, h in self._rows.values())

    def _held(self, r: Rollout) -> mx.array | None:
        held = self._rows.get(id(r))
        return held[1] if held is not None and held[0] is r else None  # the same row, not a reused id


def kl_chunks(batches: list[Minibatch], prompts: int) -> list[Chunk]:
    """The chunks the reference pass covers: the `prompts` largest of each minibatch (at least one, so
    every step measures its KL; ties in order), or every chunk when `prompts` is 0."""
    if prompts <= 0:
        return [c for mb in batches for c in mb.chunks]
    return [c for mb in batches for c in sorted(mb.chunks, key=lambda c: -c.rows)[:prompts]]
