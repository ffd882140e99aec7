"""The GSPO training loop over one day's scored rollout groups.

Objective, every log-prob at the sampling temperature T, for the G completions y_i of a prompt x:
    A_i  = (r_i - mean_j r_j) / std_j r_j,    s_i = (pi_theta(y_i|x) / pi_old(y_i|x)) ** (1/|y_i|)
    loss = -(1/N) sum_i min(s_i A_i, clip(s_i, 1 - 3e-4, 1 + 4e-4) A_i) + beta (1/N) sum_i k2_i
with k2_i the sequence's mean of 0.5 (log pi_theta - log pi_ref)^2, the leash to the base model. How a day
runs, the exact loss and every departure from the paper (the leash, pi_old the untruncated policy at T, an
optional importance weight): docs/training.md.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from varro.engine.core.config import TrainConfig
from varro.engine.core.faults import failpoint
from varro.engine.core.rollout import Rollout
from varro.engine.model.distributed import SOLO, World
from varro.engine.model.head import HEAD_CHUNK
from varro.engine.model.loading import adapters_off, base_dtype, first_trainable_layer, lora_modules
from varro.engine.train.batching import Chunk, Minibatch, RowStates, kl_chunks, make_chunks
from varro.engine.train.errors import TrainingError
from varro.engine.train.gspo import group_advantages, sequence_mean
from varro.engine.train.health import HealthPass
from varro.engine.train.logprobs import completion_logprobs, pass_logprobs, pass_piece_rows, prefix_kv
from varro.engine.train.pi_old import set_pi_old
from varro.engine.train.trunk import Trunk


# loss(logp, old_logp, ref_logp, mask, advantages, sampler_logp) -> (loss, metrics); see Trainer
LossFn = Callable[[mx.array, mx.array, mx.array | None, mx.array, mx.array, mx.array | None],
                  tuple[mx.array, dict[str, mx.array]]]
PI_OLD_SOURCES = ("auto", "pass")  # TrainConfig.pi_old
REQUIRED_METRICS = ("kl",)  # the KL guard reads it from every step row
KL_METRICS = ("kl", "kl_penalty")  # the loss's metrics from the reference log-probs
OPTIONAL_METRICS = ("clip_fraction", "ratio_mean", "sampler_gap")  # None in the row when the loss has none
SHARED_PREFIX_MODELS = {"qwen3", "qwen2", "llama"}  # full causal attention: PrefixCache's mask is exact


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


def make_optimizer(cfg: TrainConfig) -> optim.Optimizer:
    """AdamW with bias correction: without it (MLX's default) the first steps are ~3x the configured rate
    (1/sqrt(1 - 0.999) / (1/(1 - 0.9)) at step 1) and the excess fades over about a thousand steps."""
    return optim.AdamW(learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, bias_correction=True)


class Trainer:
    """Holds the policy, its optimizer and the step counter; `train_day` runs steps 1-4 of docs/training.md.

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

    `keep_states`: run the layers below the first trainable one once per row for the day and start every
    pass and step above them (varro.engine.train.trunk), and keep the reference pass's final hidden
    states for the end-of-day pass, which then runs only the policy on those rows; False computes every
    forward in full, the path tests/engine/train/test_trunk.py compares against.
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
        keep_states: bool = True,
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
        self.keep_states = keep_states
        self.trunk: Trunk | None = None  # the frozen layers' output for the prepared day's rows
        self.ref_states: RowStates | None = None  # the reference's final hidden states of the rows it measured
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
        start = self.trunk.prompt(c) if self.trunk else None
        kv = prefix_kv(model, c.head, start)
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
                    return prefix_kv(model, c.head, start)[cut:]

                _, prompt_grads = mx.vjp(prompt_kv, list(arrays), kv_grads)
                flat = iter(prompt_grads)  # tree_map visits the leaves in tree_flatten's order
                acc.grads = tree_map(lambda g: g + next(flat), acc.grads)
                mx.eval(acc.grads)
        finally:
            # the originals: after a failed transform `params` may still hold its tracers
            model.update(tree_unflatten(list(zip(names, arrays))))

    def _loss_on(self, c: Chunk, kv: list[mx.array], weight: float):
        logp, entropy = completion_logprobs(self.model, kv, c.inputs, c.targets, self.temperature,
                                            with_entropy=True, head_chunk=self.head_chunk, for_grad=True,
                                            frozen=self.trunk.rows(c) if self.trunk else None)
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
        self.trunk, self.ref_states = None, None
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
        self.trunk = self._build_trunk([r for mb in batches for c in mb.chunks for r in c.source])
        # The passes take each prompt once over all its rows, whichever minibatch holds them. The
        # first minibatch steps from the weights that sampled, so its pi_old is its own forward
        # (old_logp None: the loss stops its gradient) and pi_old skips it.
        self._set_pi_old([c for mb in batches[1:] for c in mb.chunks])
        if self.cfg.beta != 0.0 and self.reference is None:
            raise TrainingError("beta > 0 needs a reference: LoRA layers or base weights")
        if self.reference is not None:  # also at beta 0: the KL guard needs the KL measured
            measured = kl_chunks(batches, self.cfg.kl_prompts if self.cfg.beta == 0.0 else 0)
            passes = make_chunks([r for c in measured for r in c.source], self.pad_id)
            self.ref_states = RowStates("the reference's final hidden states") if self.keep_states else None
            with self.reference():
                for c, ref in zip(measured, self._pass_logprobs(measured, passes, keep=self.ref_states)):
                    c.ref_logp = ref
        return batches

    def _build_trunk(self, rows: list[Rollout]) -> Trunk | None:
        """The frozen layers' output for this rank's `rows` (None when `keep_states` is off or no layer is
        frozen), each prompt's rows as many at a time as a no-gradient pass takes."""
        if not self.keep_states:
            return None
        dtype_bytes = base_dtype(self.model).size
        return Trunk.build(self.model, rows, self.pad_id,
                           lambda p: pass_piece_rows(self.model, p, dtype_bytes, self.head_chunk))

    def _set_pi_old(self, later: list[Chunk]) -> None:
        """Step 3's pi_old: every chunk of `later` gets its old_logp, and the day its `pi_old_source` and
        `pi_old_gap` (see varro.engine.train.pi_old)."""
        self.pi_old_source, self.pi_old_gap = None, None
        self.pi_old_source, self.pi_old_gap = set_pi_old(later, self.cfg, self.world, self._rows_logprobs,
                                                         self.pad_id)

    def final_health(self, batches: list[Minibatch]) -> dict[str, float | None]:
        """The current weights on every row of `batches`: `kl_after`, `kl_after_k3` and `entropy_after`, over all
        ranks (the KLs None without a reference); see varro.engine.train.health."""
        return HealthPass(self.model, self.reference, self.world, self.temperature, self.head_chunk,
                          self.pad_id, self.trunk, self.ref_states).measure(batches)

    def _rows_logprobs(self, passes: list[Chunk]) -> dict[int, mx.array]:
        """The current weights' log-probs of every row of `passes` by id(row), each (len(completion),)."""
        return {id(r): logp[i, : len(r.completion_tokens)]
                for p, logp in zip(passes, self._pass_logprobs(passes, passes)) for i, r in enumerate(p.source)}

    def _pass_logprobs(self, chunks: list[Chunk], passes: list[Chunk],
                       keep: RowStates | None = None) -> list[mx.array]:
        """The current weights' log-probs of every chunk's rows, computed over `passes` (the same rows grouped by
        prompt), without gradients: one (n, T) array per chunk (see logprobs.pass_logprobs)."""
        return pass_logprobs(self.model, chunks, passes, self.temperature, self.head_chunk, self.trunk, keep)

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
        try:
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
        finally:
            self.trunk, self.ref_states = None, None  # the day's states, by its rows: never carried over
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

