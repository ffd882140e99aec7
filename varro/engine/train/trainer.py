"""The GSPO training loop over one day's scored rollout groups.

Objective (varro.gspo has the exact formula): group-normalised advantages, a
length-normalised sequence-level importance ratio s_i = (pi_theta(y_i|x) /
pi_old(y_i|x)) ** (1/|y_i|), clipped to [1 - 3e-4, 1 + 4e-4], the loss averaged
per sequence, plus beta times the per-sequence k2 leash to the base model, whose
gradient is that of the reverse KL(pi_theta || pi_ref) that `kl` logs (k3).
Every log-prob is taken at the sampling temperature T: log_softmax(logits / T).

How a day's update runs:
1. Rewards -> advantages per group; groups whose reward std is at most
   `flat_std` are dropped (flat, or nearly so: no signal) and counted.
2. The kept rollouts, shuffled group by group (groups in random order, each
   group's rows in random order, so a group's rows stay together), are split
   into `minibatches` parts. Within a part, the rows that share a prompt form
   one chunk: the prompt runs once at batch 1 and the completions run on top of
   its keys and values, with the output head and log-softmax taken at
   completion positions only, `head_chunk` vocabulary rows at a time
   (varro.engine.model.head: an online log-sum-exp with a custom gradient),
   so the (rows, T, V) logits never exist at once.
3. pi_old: the untruncated policy at T under the weights at the start of the
   day's update (the latest checkpoint, which sampled the rows). The first
   minibatch's rows take their own forward (gradient stopped), as that step
   starts from those very weights. For the later ones it comes from one of two
   sources (`pi_old`, see Trainer._set_pi_old). "pass": one float32 pass per
   prompt over all its kept rows at once (fewer only when their activations
   would pass PASS_BYTES), before any update. "auto" (the default): the
   sampler stored each token's log pi_T from its own decode
   (`Rollout.policy_logprobs`); the pass runs on `pi_old_check_prompts`
   prompts' rows, and when every checked row's mean log-prob (what the
   length-normalised ratio uses) is within `pi_old_tolerance` of the stored
   one, over all ranks, the other rows take the stored values and their pass
   is skipped; otherwise (other weights, another temperature, a base that
   decodes differently) the pass runs on them too. A row without stored
   values makes the day take the pass. Each step row logs `pi_old_source`
   ("sampler" or "pass") and `pi_old_gap`, the largest gap measured.
   The sampler normalises as the pass's head does, 4096 ids at a time
   (logprob_head.chunked_logsumexp): one float32 log-sum-exp over the whole row,
   which MLX's CPU sums in order, made SmolLM2-135M's gap 4.2e-5 (median 2.7e-5),
   and the check always failed. Measured (bench/pi_old_gap.py: float32, tight
   profile, 32 rows of ~60 tokens): SmolLM2-135M's gap is 1.3e-6, median 4.6e-7
   (1.6e-6 between two batchings of the pass itself); the tiny model's 2.3e-7
   (1.9e-7). The tolerance, 1e-5, is 1/70 of the clip's width.
   The reference log-probs come from the same weights with the LoRA adapters
   switched off (scale 0), so no second model is held in memory. With full
   fine-tuning the base weights are read back from disk for that pass. The
   reference pass runs whenever there is a reference, so the KL is measured
   even with beta = 0; there the reference log-probs feed only the `kl` (and
   `kl_penalty`) metric, not the loss, so the pass covers the `kl_prompts`
   largest prompts of each minibatch (kl_chunks) and each step's `kl` is the
   mean over those rows alone: against every row's, a relative error of up
   to 17% (mean 5%) over 12 steps of the tiny model at 2 of 4 prompts per
   minibatch, and up to 18% (mean 6%) on bench/passes.py's day, where it saves
   two thirds of the reference pass. The KL guard's limit is far above a
   day's KL, and the end-of-day pass (step 6) still measures every row. At
   beta > 0 it covers every row.
4. Each part takes one AdamW step (bias correction on: the first step has the
   configured size, where MLX's default would take about 3x it). Per chunk, the
   completions are differentiated `micro_batch` rows at a time and the prompt's
   backward runs once (see Trainer._chunk_grads); the chunks' losses are weighted
   by their share of the part's rows and their gradients summed, so the step is
   that of the part's mean loss while peak memory holds one micro-batch's (or the
   prompt's) activations. Every part after the first is off-policy: the ratio
   moves away from 1 and the clip acts (the clip fraction is logged per step).
5. A non-finite loss or gradient norm skips that step, keeps the weights, and is
   recorded in the step row.
6. After the last step one more pass measures the final weights on every kept
   row (the day's last step row): `kl_after`, the exact per-token KL to the
   base over the whole vocabulary (`kl_after_k3` beside it), and
   `entropy_after`, so the guards judge the weights the day would keep, not
   those each step started from. Each step also logs the k3 KL and the mean
   per-token entropy at T of the weights before it, from the update's forward.

The sampler and pi_old. Rollouts are drawn from q: the policy at temperature T,
truncated to the top-k / top-p candidates and renormalised; each token's log q
is stored with the rollout. pi_old here is the untruncated policy at T, so
log q - log pi_old = -log(candidate mass) >= 0 plus numerics; each step logs
its mean per token (`sampler_gap`). Correcting for it with a truncated
importance weight w_i = min(exp(-gap_i), C) (TRL's vLLM importance-sampling
correction at sequence level) is available as `is_cap` and off by default,
decided by measurement (bench/sampler_gap.py, the warm demo model, 16 prompts x
8 completions): with the tight profile the gap is 0.090 nats per token (0.407
against a temperature-1 pass, what the trainer used before), so w_i is 0.914 +-
0.017 (min 0.879) across sequences; with `default` (top-p 0.95 alone) 0.051 and
w_i = 0.950 for every sequence. The weight is a near-constant rescale of the
step, not a correction that reorders which sequences count.

Departures from the paper: the KL leash (the paper has none); the truncated
importance weight (off by default); the sequence ratio is taken against the
untruncated policy at T (the training code's own float32 pass, or the
sampler's untruncated log-probs where a check finds them equal to it within
`pi_old_tolerance`), not the sampler's truncated log q.

The trainer takes its collaborators, as mlx-lm's `tuner.trainer.train` does:
`Trainer(model, cfg, optimizer, loss, ...)` is handed the optimizer (the Policy
builds AdamW with `make_optimizer`) and the loss already bound to its knobs
(`varro.engine.train.gspo.gspo_objective(cfg)`, the objective above; any function of
the same six arrays will do), and `train_day(groups, callbacks)` reports every
step row to each `TrainingCallback`, any of which may stop the day. The progress
bar and the collapse guards (varro.engine.train.guards) hang on those callbacks; the
loop itself checks nothing.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from varro.engine.core.config import TrainConfig
from varro.engine.core.faults import failpoint
from varro.engine.train.gspo import group_advantages, sequence_mean
from varro.engine.model.head import HEAD_CHUNK, chunked_kl, chunked_logprobs, output_head
from varro.engine.model.memory import pass_position_bytes, pass_rows
from varro.engine.model.loading import adapters_off, base_dtype, first_trainable_layer, lora_modules
from varro.engine.model.distributed import SOLO, World
from varro.engine.core.records import Rollout
from varro.engine.core.errors import UserError

# loss(logp, old_logp, ref_logp, mask, advantages, sampler_logp) -> (loss, metrics); see Trainer
LossFn = Callable[[mx.array, mx.array, mx.array | None, mx.array, mx.array, mx.array | None],
                  tuple[mx.array, dict[str, mx.array]]]
PI_OLD_SOURCES = ("auto", "pass")  # TrainConfig.pi_old
REQUIRED_METRICS = ("kl",)  # the KL guard reads it from every step row
KL_METRICS = ("kl", "kl_penalty")  # the loss's metrics from the reference log-probs
OPTIONAL_METRICS = ("clip_fraction", "ratio_mean", "sampler_gap")  # None in the row when the loss has none
SHARED_PREFIX_MODELS = {"qwen3", "qwen2", "llama"}  # full causal attention: PrefixCache's mask is exact


class TrainingError(RuntimeError, UserError):
    pass


class TrainingCallback:
    """What `Trainer.train_day` tells about its day; override the hooks you need (mlx-lm's
    `TrainingCallback` shape). The defaults do nothing and never stop the day."""

    def on_step(self, row: dict) -> bool | None:
        """After every optimizer step, skipped or not, with its row (`kl_after` still None: it is only
        known at the day's end). True stops the day after this step."""
        return None

    def on_day_end(self, rows: list[dict]) -> None:
        """Once per `train_day`, with its final rows (the last one's `kl_after` set); [] when nothing
        trained."""


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


def has_policy_logprobs(r: Rollout) -> bool:
    """Whether the sampler stored `r`'s untruncated log-probs, one per completion token."""
    return r.policy_logprobs is not None and len(r.policy_logprobs) == len(r.completion_tokens)


def stack_rows(c: Chunk, by_row: dict[int, mx.array]) -> mx.array:
    """`c`'s rows' log-probs from `by_row` (by id(row), each (len(completion),)), zero-padded: (n, T)."""
    width = c.inputs.shape[1]
    return mx.stack([mx.pad(by_row[id(r)], (0, width - len(r.completion_tokens))) for r in c.source])


def pi_old_gap(passes: list[Chunk], by_row: dict[int, mx.array]) -> float:
    """The largest |mean log pi_old - mean stored log-prob| over the rows of `passes` (0 for none): the
    error the sampler's values would put into a row's length-normalised log-ratio."""
    gaps = [abs(float(np.mean(np.array(by_row[id(r)], dtype=np.float64))) - float(np.mean(r.policy_logprobs)))
            for p in passes for r in p.source]
    return float(np.max(gaps)) if gaps else 0.0  # a NaN stays NaN


def kl_chunks(batches: list[Minibatch], prompts: int) -> list[Chunk]:
    """The chunks the reference pass covers: the `prompts` largest of each minibatch (at least one, so
    every step measures its KL; ties in order), or every chunk when `prompts` is 0."""
    if prompts <= 0:
        return [c for mb in batches for c in mb.chunks]
    return [c for mb in batches for c in sorted(mb.chunks, key=lambda c: -c.rows)[:prompts]]


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


def prefix_kv(model: nn.Module, head: mx.array) -> list[mx.array]:
    """Every layer's keys and values of `head` (batch 1), flat: [k0, v0, k1, v1, ...]; [] when empty."""
    if not head.shape[1]:
        return []
    cache = [PrefixCache() for _ in model.layers]
    model(head, cache=cache)  # fills the caches; the prompt's logits are never evaluated
    return [a for c in cache for a in (c.keys, c.values)]


def completion_logprobs(model: nn.Module, kv: list[mx.array], inputs: mx.array, targets: mx.array,
                        temperature: float = 1.0, with_entropy: bool = False, head_chunk: int = HEAD_CHUNK,
                        for_grad: bool = False):
    """log pi_T(targets | prompt, inputs), (n, T), on top of the prompt's `kv` from prefix_kv (and the
    per-position entropy of pi_T with `with_entropy`). The output head runs `head_chunk` vocabulary rows
    at a time (varro.engine.model.head; `for_grad`: a gradient will be taken, see chunked_logprobs); 0,
    or a head it cannot chunk, takes the whole vocabulary's logits."""
    cache = [PrefixCache(k, v) for k, v in zip(kv[::2], kv[1::2])] if kv else None
    head = output_head(model) if head_chunk > 0 else None
    if head is None:
        return _picked(model(inputs, cache=cache), targets, temperature, with_entropy)
    hidden = model.model(inputs, cache=cache)  # (n, T, D), after the final norm
    return chunked_logprobs(hidden, head, targets, temperature, head_chunk, with_entropy, for_grad)


def chunk_logprobs(model: nn.Module, chunk: Chunk, temperature: float = 1.0) -> mx.array:
    """log pi_T(completion tokens) of a Chunk, (n, T): the prompt runs once, the completions on top of it."""
    return completion_logprobs(model, prefix_kv(model, chunk.head), chunk.inputs, chunk.targets, temperature)


class Accumulator:
    """One step's running sums: the weighted loss, the row-weighted metrics and the gradient.

    Each metric is the weighted mean over the pieces that reported it (its sum over the weight of those
    pieces), so a metric one piece leaves out is neither dropped nor diluted by the others.
    """

    def __init__(self):
        self.loss = mx.array(0.0)
        self.sums: dict[str, mx.array] = {}
        self.weights: dict[str, float] = {}
        self.grads = None

    def add(self, loss: mx.array, metrics: dict[str, mx.array], frac: float, grads) -> None:
        self.loss = self.loss + loss
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * frac
            self.weights[k] = self.weights.get(k, 0.0) + frac
        self.grads = grads if self.grads is None else tree_map(mx.add, self.grads, grads)

    @property
    def metrics(self) -> dict[str, mx.array]:
        return {k: s / self.weights[k] if self.weights[k] > 0 else s for k, s in self.sums.items()}

    def state(self) -> list:
        return [self.loss, self.sums, self.grads]


@contextlib.contextmanager
def base_weights_from(model: nn.Module, model_id: str) -> Iterator[None]:
    """Full fine-tuning: swap the base weights in from disk for the reference pass."""
    from mlx_lm.utils import load_model
    from mlx_lm.utils import _download

    current = tree_flatten(model.parameters())
    base, _ = load_model(_download(model_id))
    base.set_dtype(mx.float32)
    try:
        model.update(base.parameters())
        yield
    finally:
        model.update(tree_unflatten(current))
        del base


def make_optimizer(cfg: TrainConfig) -> optim.Optimizer:
    """AdamW with bias correction: without it (MLX's default) the first steps are ~3x the configured rate
    (1/sqrt(1 - 0.999) / (1/(1 - 0.9)) at step 1) and the excess fades over about a thousand steps."""
    return optim.AdamW(learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, bias_correction=True)


class Trainer:
    """Holds the policy, its optimizer and the step counter; `train_day` runs steps 1-4 above.

    Collaborators are passed in, none is built here: `optimizer` (an mlx
    Optimizer, initialised here on the trainable parameters unless a restore
    follows; the Policy passes `make_optimizer(cfg)`) and `loss`, called once per
    micro-batch as `loss(logp, old_logp, ref_logp, mask, advantages, sampler_logp)`
    with the (n, T) log-probs at temperature T (`logp` differentiable; `ref_logp`
    None without a reference, `sampler_logp` None when a row has no stored log q),
    the (n, T) completion mask and the (n,) advantages, and returning
    (scalar loss, metrics). Its knobs are bound beforehand (see
    varro.engine.train.gspo.gspo_objective); `cfg` here only shapes the loop (seed,
    flat_std, minibatches, micro_batch, grad_clip, learning_rate, pi_old and
    its check, and beta: a KL leash needs a reference, and at beta 0 the
    reference pass covers only `kl_prompts` prompts per minibatch, so a loss
    handed here must not use `ref_logp` at beta 0 other than for metrics).

    Metrics the step row reads from the loss, each a scalar averaged over the
    rows: `kl` is required (the KL guard reads it on every step; a loss without
    it raises TrainingError before any weight moves); `clip_fraction`,
    `ratio_mean` and `sampler_gap` are optional and None in the row when absent.
    The trainer adds `entropy` itself. Other metrics are accumulated and ignored.

    `head_chunk` is the vocabulary rows the output head takes at a time in every
    pass and step (varro.engine.model.head); 0 takes the whole vocabulary's
    logits at once, the plain path tests/engine/model/test_logprob_head.py compares against.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        optimizer: optim.Optimizer,
        loss: LossFn,
        pad_id: int = 0,
        reference: Callable[[], contextlib.AbstractContextManager] | None = None,
        world: World = SOLO,
        temperature: float = 1.0,
        head_chunk: int = HEAD_CHUNK,
    ):
        model_type = getattr(getattr(model, "args", None), "model_type", None)
        if model_type not in SHARED_PREFIX_MODELS:
            raise TrainingError(f"training shares each prompt's keys and values across its completions, which "
                                f"is exact for {sorted(SHARED_PREFIX_MODELS)} (full causal attention); "
                                f"{model_type!r} is not one of them")
        if not isinstance(optimizer, optim.Optimizer):
            raise TrainingError(f"the trainer needs an mlx Optimizer (e.g. make_optimizer(cfg)), got {optimizer!r}")
        if not callable(loss):
            raise TrainingError(f"the trainer needs a loss function (e.g. gspo_objective(cfg)), got {loss!r}")
        self.world = world
        self.model = model
        self.cfg = cfg
        self.pad_id = pad_id
        self.loss = loss
        if reference is None and lora_modules(model):
            reference = lambda: adapters_off(model)  # noqa: E731
        self.reference = reference
        if not temperature > 0:
            raise TrainingError(f"training needs a sampling temperature above 0, got {temperature}")
        self.temperature = float(temperature)  # every pass's log-probs are at the sampler's temperature
        self.head_chunk = head_chunk  # vocabulary rows the output head takes at a time (0: all at once)
        self.optimizer = optimizer
        self.optimizer.init(model.trainable_parameters())
        self.step = 0
        self.rng = np.random.default_rng(cfg.seed)
        self.flat_groups = 0  # groups the last prepare() dropped as flat
        self.groups = 0  # groups it was given
        self.pi_old_source: str | None = None  # where its pi_old came from: "sampler", "pass" (None: not needed)
        self.pi_old_gap: float | None = None  # the largest per-sequence mean log-prob gap it measured (see _set_pi_old)
        if cfg.pi_old not in PI_OLD_SOURCES:
            raise TrainingError(f"pi_old must be one of {PI_OLD_SOURCES}, got {cfg.pi_old!r}")

    def obey_config(self) -> None:
        """After restoring optimizer state, the configured learning rate wins over the stored one."""
        self.optimizer.learning_rate = mx.array(self.cfg.learning_rate, dtype=mx.float32)

    def _chunk_grads(self, c: Chunk, rows_frac: float, share: float, acc: Accumulator) -> None:
        """Add one chunk's loss, metrics and gradient to `acc`, weighted by `rows_frac` (its share of this
        rank's rows in the minibatch) and the loss also by `share` (this rank's share of the minibatch).

        The prompt runs forward once; the completions are differentiated
        `micro_batch` rows at a time on top of its keys and values (so the peak
        holds one piece's activations), each piece giving the gradient for the
        weights and for the prompt's keys and values; then one backward pass
        through the prompt (a vjp that recomputes its forward) turns the summed
        key/value gradients into the prompt's share of the weight gradient.
        The keys and values of layers below the first trainable one depend on
        no trainable weight, so they stay constants and no backward runs there.
        """
        model = self.model
        params = model.trainable_parameters()
        names, arrays = zip(*tree_flatten(params))
        kv = prefix_kv(model, c.head)
        mx.eval(kv)
        cut = 2 * first_trainable_layer(model) if kv else 0
        fixed, free = kv[:cut], kv[cut:]
        kv_grads = None
        try:
            for piece in c.pieces(self.cfg.micro_batch):
                frac = piece.rows / c.rows

                def piece_loss(p, free, piece=piece, scale=frac * rows_frac * share):
                    model.update(p)
                    return self._loss_on(piece, fixed + free, scale)

                (p_loss, p_metrics), (p_grads, p_kv) = mx.value_and_grad(piece_loss, argnums=(0, 1))(params, free)
                acc.add(p_loss, p_metrics, frac * rows_frac, p_grads)
                kv_grads = p_kv if kv_grads is None else [a + b for a, b in zip(kv_grads, p_kv)]
                mx.eval(acc.state(), kv_grads)
            if free:
                def prompt_kv(*weights):
                    model.update(tree_unflatten(list(zip(names, weights))))
                    return prefix_kv(model, c.head)[cut:]

                _, prompt_grads = mx.vjp(prompt_kv, list(arrays), kv_grads)
                flat = iter(prompt_grads)  # tree_map visits the leaves in tree_flatten's order
                acc.grads = tree_map(lambda g: g + next(flat), acc.grads)
                mx.eval(acc.grads)
        finally:
            # the originals: after a failed transform `params` may still hold its tracers
            model.update(tree_unflatten(list(zip(names, arrays))))

    def _loss_on(self, c: Chunk, kv: list[mx.array], weight: float):
        logp, entropy = completion_logprobs(self.model, kv, c.inputs, c.targets, self.temperature,
                                            with_entropy=True, head_chunk=self.head_chunk, for_grad=True)
        loss, metrics = self.loss(
            logp,
            mx.stop_gradient(logp) if c.old_logp is None else c.old_logp,  # None: on-policy, see prepare
            c.ref_logp,
            c.mask,
            c.advantages,
            c.sampler_logp,
        )
        metrics = {k: v if isinstance(v, mx.array) else mx.array(v, dtype=mx.float32) for k, v in metrics.items()}
        if c.ref_logp is None and self.reference is not None:
            # left out of the beta-0 reference subsample (kl_chunks): its KL was not measured, and the
            # accumulator averages each metric over the pieces that report it
            metrics = {k: v for k, v in metrics.items() if k not in KL_METRICS}
        # the policy's mean per-token entropy at T on these rows, per sequence then averaged
        metrics = {**metrics, "entropy": sequence_mean(entropy, c.mask.astype(entropy.dtype)).mean()}
        # A chunk's mean is weighted by its share of the minibatch's rows (and each rank's by its
        # share of the ranks), so the summed gradients, averaged over ranks, are the global mean's.
        return loss * weight, metrics

    def prepare(self, groups: list[list[Rollout]]) -> list[Minibatch]:
        """Steps 1-3: advantages, drop flat groups, split, and the pi_old / reference passes."""
        if any(r.reward is None for g in groups for r in g):
            raise TrainingError("every rollout needs a reward before training")
        kept_groups: list[list[Rollout]] = []
        for g in groups:
            adv = group_advantages([r.reward for r in g], len(g), tol=self.cfg.flat_std,
                                   scale_std=self.cfg.advantage_std)
            for r, a in zip(g, adv):
                r.advantage = float(a)
            if np.any(adv != 0.0):
                kept_groups.append(g)
        self.groups, self.flat_groups = len(groups), len(groups) - len(kept_groups)
        if not kept_groups:
            return []
        kept = [r for g in kept_groups for r in g]
        starts = np.cumsum([0] + [len(g) for g in kept_groups])
        order = np.concatenate([starts[i] + self.rng.permutation(len(kept_groups[i]))
                                for i in self.rng.permutation(len(kept_groups))])
        w = self.world
        if len(kept) < w.size:
            raise TrainingError(f"{len(kept)} sequences cannot be shared by {w.size} ranks")
        parts = np.array_split(order, min(self.cfg.minibatches, len(kept) // w.size))
        batches = []
        for part in parts:
            # the same global minibatches as alone, each cut into contiguous runs per rank, so a
            # prompt's rows mostly stay on one rank and its prompt runs there alone
            mine = np.array_split(part, w.size)[w.rank]
            rows = [kept[i] for i in mine]
            batches.append(Minibatch(
                chunks=make_chunks(rows, self.pad_id),
                rewards=np.array([r.reward for r in rows], dtype=np.float64),
                share=len(mine) * w.size / len(part),
                total=len(part),
            ))
        # The passes take each prompt once over all its rows, whichever minibatch holds them. The
        # first minibatch steps from the weights that sampled, so its pi_old is its own forward
        # (old_logp None: the loss stops its gradient) and pi_old skips it.
        self._set_pi_old([c for mb in batches[1:] for c in mb.chunks])
        if self.cfg.beta != 0.0 and self.reference is None:
            raise TrainingError("beta > 0 needs a reference: LoRA layers or base weights")
        if self.reference is not None:  # also at beta 0: the KL guard needs the KL measured
            measured = kl_chunks(batches, self.cfg.kl_prompts if self.cfg.beta == 0.0 else 0)
            passes = make_chunks([r for c in measured for r in c.source], self.pad_id)
            with self.reference():
                for c, ref in zip(measured, self._pass_logprobs(measured, passes)):
                    c.ref_logp = ref
        return batches

    def _set_pi_old(self, later: list[Chunk]) -> None:
        """Step 3's pi_old: every chunk of `later` (the minibatches after the first) gets its old_logp, and
        the day its `pi_old_source` ("sampler" or "pass"; None when no chunk needs one) and `pi_old_gap`.

        With `pi_old` "auto" and every row's untruncated log-probs stored by the sampler, the pass runs on
        the first `pi_old_check_prompts` prompts alone; the largest gap between a row's mean log-prob from
        that pass and from the sampler (the error it would put in the sequence's log-ratio), over all ranks,
        decides for every rank at once: within `pi_old_tolerance` the other rows take the sampler's
        values, otherwise the pass. A row with none stored (sampled before they were, or greedily) makes
        the whole day take the pass; "pass" takes it always (and logs the gap on every row, when stored).
        """
        self.pi_old_source, self.pi_old_gap = None, None
        if not later:  # one minibatch: no step is off-policy
            return
        passes = make_chunks([r for c in later for r in c.source], self.pad_id)
        k = self.cfg.pi_old_check_prompts if self.cfg.pi_old == "auto" else len(passes)
        missing = not all(has_policy_logprobs(r) for p in passes for r in p.source)
        # taken over all ranks, so every rank decides alike: a row without stored values on any rank, and
        # rows left after the check on any rank
        flags = self.world.all_max(mx.array([float(missing), float(len(passes) > k)])).tolist()
        missing, decide = flags[0] > 0, flags[1] > 0 and flags[0] == 0
        checked = passes[:k] if decide else passes
        by_row = self._rows_logprobs(checked)
        if not missing:
            self.pi_old_gap = self.world.all_max(mx.array(pi_old_gap(checked, by_row))).item()
        self.pi_old_source = "pass"
        if decide:
            if self.pi_old_gap <= self.cfg.pi_old_tolerance:  # NaN falls back
                self.pi_old_source = "sampler"
                by_row.update({id(r): mx.array(r.policy_logprobs, dtype=mx.float32)
                               for p in passes[k:] for r in p.source})
            else:
                by_row.update(self._rows_logprobs(passes[k:]))
        for c in later:
            c.old_logp = stack_rows(c, by_row)
        mx.eval([c.old_logp for c in later])

    def final_health(self, batches: list[Minibatch]) -> dict[str, float | None]:
        """The current weights on every row of `batches`, averaged per sequence then over sequences (over all
        ranks): `kl_after`, the exact per-token KL(pi || ref) summed over the vocabulary at each completion
        position; `kl_after_k3`, its k3 estimate from the completion tokens alone; `entropy_after`, the
        policy's entropy at the sampling temperature. The KLs are None without a reference.

        These are the weights the day would keep, so the guards judge them (the steps' own `kl` and `entropy`
        measure the weights before each step). Each piece sweeps its policy and reference heads together
        (see _health_stats); the reference is switched on per piece.
        """
        chunks = [c for mb in batches for c in mb.chunks]
        if not chunks:
            return {"kl_after": None, "kl_after_k3": None, "entropy_after": None}
        ref = self.reference
        dtype_bytes = base_dtype(self.model).size
        sums = mx.zeros(4)  # exact KL, k3 KL, entropy, sequences
        for p in make_chunks([r for c in chunks for r in c.source], self.pad_id):
            kv, kv_ref = prefix_kv(self.model, p.head), None
            if ref is not None:
                with ref():
                    kv_ref = prefix_kv(self.model, p.head)
                    mx.eval(kv_ref)
            for piece in p.pieces(self._pass_rows(p, dtype_bytes, health=True)):
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
        if kv_ref is None:
            logp, entropy = chunked_logprobs(hidden, head, piece.targets, self.temperature, self.head_chunk,
                                             with_entropy=True)
            return {"entropy": entropy, "logp": mx.stop_gradient(logp)}
        with self.reference():
            ref_hidden, ref_head = self._hidden(kv_ref, piece), output_head(self.model)
            mx.eval(ref_hidden, ref_head.arrays)  # the reference's weights are only in place here
        return chunked_kl(hidden, head, ref_hidden, ref_head, piece.targets, self.temperature, self.head_chunk)

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
        cache = [PrefixCache(k, v) for k, v in zip(kv[::2], kv[1::2])] if kv else None
        return mx.stop_gradient(self.model.model(piece.inputs, cache=cache))

    def _log_softmax(self, kv: list[mx.array], piece: Chunk) -> mx.array:
        """log pi_T over the whole vocabulary at each of `piece`'s positions, (n, T, V), without gradient."""
        cache = [PrefixCache(k, v) for k, v in zip(kv[::2], kv[1::2])] if kv else None
        logits = self.model(piece.inputs, cache=cache).astype(mx.float32) * (1.0 / self.temperature)
        return mx.stop_gradient(logits - mx.logsumexp(logits, axis=-1, keepdims=True))

    def _pass_rows(self, p: Chunk, dtype_bytes: int, health: bool = False) -> int:
        """Rows per piece of a no-gradient pass over the prompt `p` (see pass_rows); `health`: the end-of-day
        pass, which sweeps two heads."""
        a, width = self.model.args, int(p.inputs.shape[1])
        chunk = self.head_chunk if output_head(self.model) is not None else 0
        per = pass_position_bytes(a.hidden_size, a.intermediate_size, a.num_attention_heads, a.vocab_size,
                                  int(p.head.shape[1]) + 1 + width, dtype_bytes, chunk, health)
        return pass_rows(per, width, p.rows)

    def _rows_logprobs(self, passes: list[Chunk]) -> dict[int, mx.array]:
        """The current weights' log-probs of every row of `passes` by id(row), each (len(completion),)."""
        return {id(r): logp[i, : len(r.completion_tokens)]
                for p, logp in zip(passes, self._pass_logprobs(passes, passes)) for i, r in enumerate(p.source)}

    def _pass_logprobs(self, chunks: list[Chunk], passes: list[Chunk]) -> list[mx.array]:
        """The current weights' log-probs of every chunk's rows, computed over `passes` (the same rows
        grouped by prompt), without gradients: one (n, T) array per chunk. Each prompt's rows run through
        the blocks together (all of them unless their transients pass PASS_BYTES); only the output head
        is cut, into vocabulary chunks."""
        by_row = {}
        dtype_bytes = base_dtype(self.model).size
        for p in passes:
            kv = prefix_kv(self.model, p.head)
            for piece in p.pieces(self._pass_rows(p, dtype_bytes)):
                logp = mx.stop_gradient(completion_logprobs(self.model, kv, piece.inputs, piece.targets,
                                                            self.temperature, head_chunk=self.head_chunk))
                mx.eval(logp)
                for i, r in enumerate(piece.source):
                    by_row[id(r)] = logp[i, : len(r.completion_tokens)]
        out = [stack_rows(c, by_row) for c in chunks]
        mx.eval(out)
        return out

    def train_day(self, groups: list[list[Rollout]],
                  callbacks: Sequence[TrainingCallback] = ()) -> list[dict]:
        """Train on the day's scored groups; returns one row per optimizer step (see db `steps`).

        Every callback sees every step's row (`on_step`), in order; the day stops
        after the first step for which any of them returns True (the KL guard's
        way: see varro.engine.train.guards). The last row carries `kl_after`, the KL of
        the final weights (see final_health); every row carries the day's group
        counts. Then each callback's `on_day_end` gets the finished rows.
        """
        rows = []
        batches = self.prepare(groups)
        for k, mb in enumerate(batches):
            row = self._update(mb, k)
            row.update(groups=self.groups, flat_groups=self.flat_groups, pi_old_source=self.pi_old_source,
                       pi_old_gap=self.pi_old_gap)
            rows.append(row)
            stops = [cb.on_step(row) for cb in callbacks]  # all of them see the step, even after a stop
            if any(s is True for s in stops):
                break
        if rows:
            rows[-1].update(self.final_health(batches))
        for cb in callbacks:
            cb.on_day_end(rows)
        return rows

    def _update(self, mb: Minibatch, k: int) -> dict:
        mx.reset_peak_memory()
        tic = time.perf_counter()
        acc = Accumulator()
        for c in mb.chunks:  # one prompt at a time, into one running sum of the weighted gradients
            self._chunk_grads(c, c.rows / mb.rows, mb.share, acc)
        loss, metrics, grads = acc.loss, acc.metrics, acc.grads
        if self.world.distributed:
            from mlx.nn.utils import average_gradients

            grads = average_gradients(grads, group=self.world.group)
            n = mx.array(mb.rows / mb.total, dtype=mx.float32)
            loss = self.world.all_sum(loss) / self.world.size
            metrics = {k: self.world.all_sum(v * n) for k, v in metrics.items()}
        missing = [k for k in REQUIRED_METRICS if k not in metrics]
        if missing:
            name = getattr(self.loss, "__name__", repr(self.loss))
            raise TrainingError(f"the loss {name} returned metrics {sorted(metrics)} without {missing}: the "
                                "trainer's step row and the KL guard need them (return mx.array(0.0) if not measured)")
        grads, grad_norm = optim.clip_grad_norm(grads, self.cfg.grad_clip)
        mx.eval(loss, metrics, grad_norm)
        loss_v, norm_v = loss.item(), grad_norm.item()
        skip_reason = None
        if not math.isfinite(loss_v):
            skip_reason = f"non-finite loss {loss_v}"
        elif not math.isfinite(norm_v):
            skip_reason = f"non-finite gradient norm {norm_v}"
        else:
            self.optimizer.update(self.model, grads)
            mx.eval(self.model.trainable_parameters(), self.optimizer.state)
            failpoint("train.step")
        self.step += 1
        optional = lambda k: metrics[k].item() if k in metrics else None  # noqa: E731
        return {
            "step": self.step,
            "minibatch": k,
            "sequences": mb.total or mb.rows,
            "loss": loss_v if math.isfinite(loss_v) else None,
            "kl": metrics["kl"].item(),
            "kl_after": None,
            "kl_after_k3": None,
            "entropy_after": None,
            "entropy": metrics["entropy"].item(),
            "sampler_gap": optional("sampler_gap"),
            "clip_fraction": optional("clip_fraction"),
            "ratio_mean": optional("ratio_mean"),
            "reward_mean": self._global_mean(mb.rewards),
            "reward_std": float(np.sqrt(max(0.0, self._global_mean(mb.rewards ** 2)
                                             - self._global_mean(mb.rewards) ** 2))),
            "grad_norm": norm_v if math.isfinite(norm_v) else None,
            "learning_rate": float(self.optimizer.learning_rate.item()),
            "duration_ms": (time.perf_counter() - tic) * 1000.0,
            "peak_memory_mb": mx.get_peak_memory() / 1e6,
            "skipped": int(skip_reason is not None),
            "skip_reason": skip_reason,
        }

    def _global_mean(self, values: np.ndarray) -> float:
        """The mean of `values` over the whole minibatch, across ranks."""
        local = mx.array([float(values.sum()), float(len(values))])
        total = np.array(self.world.all_sum(local))
        return float(total[0] / total[1])

