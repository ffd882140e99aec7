"""Rollouts: G completions per prompt, every group of a step decoded in one batch.

Each prompt is prefilled once and all groups decode together through mlx-lm's BatchGenerator
(varro.engine.sampling.kvcache); each completion draws with its own key (`row_key`), so it does not depend
on which prompts decode beside it. Kept with every row: the exact token ids, each token's log q under the
truncated distribution it was drawn from (`sampler_logprobs`) and its log pi_T over the whole vocabulary
(`policy_logprobs`, the trainer's pi_old when a check agrees), both in float32 (docs/training.md).
"""

from __future__ import annotations

import copy
import hashlib
from functools import partial
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from varro.engine.core.faults import failpoint
from varro.engine.sampling.attention import use_cascade
from varro.engine.sampling.kvcache import prompt_caches
from varro.engine.model.head import chunked_logsumexp
from varro.engine.core.rollout import PromptInput, Rollout


class Float32Logits:
    """`model` with its logits cast to float32 (a no-op on a float32 model), everything else delegated.

    mlx-lm's BatchGenerator normalises the logits in the model's dtype; handed this, it takes the
    log-softmax the sampler draws from, and the stored log q, in float32 over a bf16 or quantized base.
    """

    def __init__(self, model: nn.Module):
        self._base = model

    def __call__(self, *args, **kwargs) -> mx.array:
        return self._base(*args, **kwargs).astype(mx.float32)

    def __getattr__(self, name: str):
        return getattr(self._base, name)


def prefill(model: nn.Module, tokens: list[int], step_size: int = 512) -> list:
    """A KV cache holding `tokens` (batch 1), computed in chunks of `step_size`."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    for start in range(0, len(tokens), step_size):
        model(mx.array([tokens[start : start + step_size]]), cache=cache)
        mx.eval([c.state for c in cache])
    return cache


def group_candidates(logprobs: mx.array, top_p: float, top_k: int) -> tuple[mx.array, mx.array]:
    """The `top_k` most likely tokens of each row and their log-probs, -inf where dropped.

    Returns (token ids, log-probs), both (..., k) in no particular order. The finite
    entries are exactly the tokens mlx-lm's `make_sampler` keeps: top-p first, keeping
    each token whose higher-ranked mass is below `top_p` plus ties of the last one kept,
    then the `top_k` largest of those. `logprobs` must be normalised (log-softmax, as
    BatchGenerator passes them): the nucleus mass is not divided by the row's total,
    which mlx-lm sums in float32 (1 to about 1e-6), so a token whose higher-ranked mass
    is that close to `top_p` can fall on the other side. A `top_k` of the vocabulary
    size or more keeps the whole row (mlx-lm raises).
    """
    k = min(top_k, logprobs.shape[-1])
    ids = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[..., :k]  # (..., k)
    kept = mx.take_along_axis(logprobs, ids, axis=-1)  # (..., k)
    if 0 < top_p < 1:
        # apply_top_p's arithmetic on the k largest: within them its reverse cumsum
        # adds the same values in the same order
        ascending = mx.sort(kept, axis=-1)
        mass_above = mx.cumsum(mx.exp(ascending.astype(mx.float32)), axis=-1, reverse=True, inclusive=False)
        num_dropped = (mass_above >= top_p).sum(axis=-1, keepdims=True)  # < k: the top token has 0 above
        threshold = mx.take_along_axis(ascending, num_dropped, axis=-1)
        kept = mx.where(kept < threshold, -float("inf"), kept)
    return ids, kept


def draw_tokens(logprobs: mx.array, key: mx.array | None, temp: float, top_p: float, top_k: int) -> mx.array:
    """One token per row of `logprobs` (..., V) from mlx-lm's distribution at `temp` > 0, drawn with `key`
    (None: MLX's global generator): (...,) token ids (see draw_with_logq)."""
    return draw_with_logq(logprobs, key, temp, top_p, top_k)[0]


def draw_with_logq(logprobs: mx.array, key: mx.array | None, temp: float, top_p: float,
                   top_k: int) -> tuple[mx.array, mx.array]:
    """`draw_tokens`' token per row and its log q under the distribution it was drawn from (the
    candidates' log_softmax of logprobs / temp, -inf outside them): two (...,) arrays.

    With `top_k` > 0 the candidates are `group_candidates`', put in token-id order
    before the draw: the order argpartition leaves them in changes when two
    log-probs swap places over a last-bit difference (a batched forward pass
    rounds with the batch's rows), and the key's noise goes by position, so
    that order would change the token drawn. log q is then taken over those k
    candidates alone (the same values, in the same order, as over the whole row
    with the rest at -inf), so no second pass over the vocabulary is needed.
    Otherwise mlx-lm's top-p alone (`make_sampler`'s ops, so the same key draws
    the same token), and log q over the same truncated row.
    """
    from mlx_lm.sample_utils import apply_top_p

    if top_k > 0:
        ids, kept = group_candidates(logprobs, top_p, top_k)
        by_id = mx.argsort(ids, axis=-1)
        ids, kept = mx.take_along_axis(ids, by_id, axis=-1), mx.take_along_axis(kept, by_id, axis=-1)  # (..., k)
        scaled = kept * (1.0 / temp)
        choice = mx.random.categorical(scaled, key=key)[..., None]  # an index into the k
        logq = mx.take_along_axis(scaled, choice, axis=-1) - mx.logsumexp(scaled, axis=-1, keepdims=True)
        return mx.take_along_axis(ids, choice, axis=-1).squeeze(-1), logq.squeeze(-1)
    scaled = (apply_top_p(logprobs, top_p) if 0 < top_p < 1 else logprobs) * (1.0 / temp)
    token = mx.random.categorical(scaled, key=key)
    logq = mx.take_along_axis(scaled, token[..., None], axis=-1) - mx.logsumexp(scaled, axis=-1, keepdims=True)
    return token, logq.squeeze(-1)


def make_group_sampler(temp: float, top_p: float = 1.0, top_k: int = 0) -> Callable[[mx.array], mx.array]:
    """A batched sampler drawing from MLX's global generator, with mlx-lm's distribution, cheaper when `top_k` > 0.

    mlx-lm's `apply_top_p` sorts the whole vocabulary of every row each step (42% of
    a 32-row CPU decode step); with `top_k` > 0 this one partitions out the `top_k`
    largest and sorts only those. It keeps the same candidate set (`group_candidates`),
    so the distribution equals mlx-lm's; only the random draws differ. Greedy (`temp`
    0) is mlx-lm's `make_sampler`. `sample_groups` draws through `RowSampler`s instead,
    the same distribution with a key per completion.
    """
    from mlx_lm.sample_utils import make_sampler

    if temp == 0:
        return make_sampler(temp=0.0)

    @partial(mx.compile, inputs=mx.random.state, outputs=mx.random.state)
    def sampler(logprobs: mx.array) -> mx.array:
        return draw_tokens(logprobs, None, temp, top_p, top_k)

    return sampler


def make_keyed_sampler(temp: float, top_p: float = 1.0,
                       top_k: int = 0) -> Callable[[mx.array, mx.array], tuple[mx.array, mx.array]]:
    """`draw(logprobs, key)`: `draw_with_logq` at these settings (`temp` > 0), compiled, with an explicit
    key: (tokens, log q)."""
    if temp <= 0:
        raise ValueError(f"a keyed sampler needs a positive temperature, got {temp}")
    return mx.compile(lambda logprobs, key: draw_with_logq(logprobs, key, temp, top_p, top_k))


def row_key(seed: int, prompt_id: str, group_index: int) -> mx.array:
    """The random key of completion `group_index` of prompt `prompt_id` under `seed`: a stable hash of the
    three (not Python's salted `hash`), so any process, rank or batch that samples it draws the same tokens."""
    digest = hashlib.blake2b(f"{seed}\0{prompt_id}\0{group_index}".encode(), digest_size=8).digest()
    return mx.random.key(int.from_bytes(digest, "little"))


class RowSampler:
    """One completion's sampler for BatchGenerator: each call draws the row's next token with the next key
    of the completion's own stream (split off `key`), so its draws depend on nothing else in the batch.

    BatchGenerator calls it once per decode step with the row's (1, V) log-probs, in the row's token order
    (it draws one step ahead of the tokens it reports); `logq[t]` is then the log q of the row's t-th token,
    kept from its draw, (1,).
    """

    def __init__(self, draw: Callable[[mx.array, mx.array], tuple[mx.array, mx.array]], key: mx.array):
        self._draw = draw
        self._key = key
        self.logq: list[mx.array] = []

    def __call__(self, logprobs: mx.array) -> mx.array:
        self._key, step_key = mx.random.split(self._key)
        token, logq = self._draw(logprobs, step_key)
        self.logq.append(logq)
        return token


def group_samplers(draw: Callable[[mx.array, mx.array], tuple[mx.array, mx.array]] | None, seed: int, prompt_id: str,
                   group_size: int) -> list[RowSampler] | None:
    """A `RowSampler` for each completion of `prompt_id`'s group (BatchGenerator's `samplers`) drawing with
    `draw` (`make_keyed_sampler`); None when `draw` is (greedy: every row takes its argmax, no key needed)."""
    if draw is None:
        return None
    return [RowSampler(draw, row_key(seed, prompt_id, gi)) for gi in range(group_size)]


def untruncated_logprobs(logprobs: mx.array, tokens: mx.array, temp: float) -> mx.array | None:
    """log pi_T(token) of each row's sampled token under the whole vocabulary at temperature `temp`,
    log_softmax(logprobs / temp)[token], what the trainer's pi_old pass computes: (B, V), (B,) -> (B,).
    None when greedy (`temp` 0): the trainer refuses that temperature, and no finite value is pi_0."""
    if temp == 0:
        return None
    scaled = logprobs.astype(mx.float32) * (1.0 / temp)
    picked = mx.take_along_axis(scaled, tokens[:, None], axis=-1).squeeze(-1)
    return picked - chunked_logsumexp(scaled)  # the pass's normaliser, to its rounding (see there)


def sample_groups(
    model: nn.Module,
    tokenizer,
    prompts: list[PromptInput],
    group_size: int,
    max_tokens: int,
    temp: float,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    on_done: Callable[[int], None] | None = None,
    decode_batch: int = 0,
    share_prefix: bool = True,
) -> list[list[Rollout]]:
    """Sample `group_size` completions for each prompt; returns one list of Rollouts per prompt.

    `on_done(1)` is called as each completion finishes. `decode_batch` > 0 decodes
    that many prompts' groups together at a time (the memory guard's knob, see
    varro.engine.model.memory); 0 decodes all at once. Each completion draws with its
    own key from (`seed`, its prompt's id, its group index) (`row_key`; `seed`
    None: one drawn from MLX's global generator), so a seed gives the same
    completions for a prompt whatever the decode batch or the other prompts of
    the call, up to the float32 rounding of a batched forward pass (which can
    differ in the last bits with the batch's rows and so, rarely, flip a draw).
    `share_prefix` False decodes into mlx-lm's BatchKVCache (each row its own copy of
    its prompt), grown once to the work: the same tokens, more memory (kvcache.py).
    Raises ValueError for an empty prompt or non-positive sizes.
    """
    from mlx_lm.generate import BatchGenerator

    if group_size < 1 or max_tokens < 1:
        raise ValueError(f"group_size and max_tokens must be positive, got {group_size}, {max_tokens}")
    for p in prompts:
        if not p.tokens:
            raise ValueError(f"prompt {p.prompt_id!r} has no tokens")
    if not prompts:
        return []
    if seed is None:
        seed = int(mx.random.randint(0, 2**31 - 1, ()).item())
    if 0 < decode_batch < len(prompts):
        return [g for i in range(0, len(prompts), decode_batch)
                for g in sample_groups(model, tokenizer, prompts[i : i + decode_batch], group_size, max_tokens,
                                       temp, top_p, top_k, seed=seed, on_done=on_done,
                                       share_prefix=share_prefix)]
    total = len(prompts) * group_size
    gen = BatchGenerator(
        Float32Logits(model),
        max_tokens=max_tokens,
        stop_tokens=[[t] for t in tokenizer.eos_token_ids],
        # no batch-wide sampler: greedy (mlx-lm's default) or each row's RowSampler
        completion_batch_size=total,
        prefill_batch_size=total,
    )
    draw = make_keyed_sampler(temp, top_p, top_k) if temp > 0 else None
    cascade = share_prefix and use_cascade(model)
    owner: dict[int, tuple[int, int]] = {}
    row_sampler: dict[int, RowSampler] = {}  # each row's sampler, which kept its tokens' log q
    try:
        for pi, p in enumerate(prompts):
            head, last = p.tokens[:-1], p.tokens[-1:]
            caches = None
            if head:
                cache = prompt_caches(prefill(model, head), pi, max_tokens, share_prefix, cascade)
                caches = [copy.deepcopy(cache) for _ in range(group_size)]
            samplers = group_samplers(draw, seed, p.prompt_id, group_size)
            uids = gen.insert([last] * group_size, caches=caches, samplers=samplers)
            for gi, uid in enumerate(uids):
                owner[uid] = (pi, gi)
                if samplers is not None:
                    row_sampler[uid] = samplers[gi]
        tokens: dict[int, list[int]] = {uid: [] for uid in owner}
        logq: dict[int, list[float]] = {uid: [] for uid in owner}
        logpi: dict[int, list[float]] = {uid: [] for uid in owner}
        finish: dict[int, str] = {}
        while responses := gen.next_generated():
            # each row's log q(token), kept by its draw (0 when greedy), and one batched op for log
            # pi_T(token) from the log-probs it was drawn from
            step_logprobs = mx.stack([r.logprobs for r in responses])  # (B, V)
            step_tokens = mx.array([r.token for r in responses])  # (B,)
            lq = (mx.concatenate([row_sampler[r.uid].logq[len(tokens[r.uid])] for r in responses]) if row_sampler
                  else mx.zeros(step_tokens.shape, dtype=mx.float32))
            lp = untruncated_logprobs(step_logprobs, step_tokens, temp)
            mx.eval(lq, lp)
            lq, lp = lq.tolist(), [None] * len(responses) if lp is None else lp.tolist()
            for r, q, p in zip(responses, lq, lp):
                tokens[r.uid].append(r.token)
                logq[r.uid].append(q)
                logpi[r.uid].append(p)
                if r.finish_reason is not None:
                    finish[r.uid] = r.finish_reason
                    failpoint("sample.finished")
                    if on_done is not None:
                        on_done(1)
    finally:
        gen.close()

    eos = set(tokenizer.eos_token_ids)
    groups: list[list[Rollout]] = [[None] * group_size for _ in prompts]  # type: ignore[list-item]
    for uid, (pi, gi) in owner.items():
        ids = tokens[uid]
        text_ids = ids[:-1] if ids and ids[-1] in eos else ids
        groups[pi][gi] = Rollout(
            prompt_id=prompts[pi].prompt_id,
            group_index=gi,
            prompt_tokens=list(prompts[pi].tokens),
            completion_tokens=ids,
            text=tokenizer.decode(text_ids),
            finish_reason=finish.get(uid, "length"),
            sampler_logprobs=logq[uid],
            policy_logprobs=None if temp == 0 else logpi[uid],
        )
    return groups
