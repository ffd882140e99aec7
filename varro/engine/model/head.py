"""The output head's log-probabilities, taken over the vocabulary a chunk at a time.

`chunked_logprobs` gives log softmax(h W^T / T) at the targets (and the entropy) from an online log-sum-exp
over `chunk` rows of W at a time, so the (N, L, V) logits never exist at once, with a custom VJP for its
gradient; `chunked_kl` sweeps two heads together for the end-of-day exact KL; `output_head` finds a model's
head (None: the caller takes the plain path). The derivation and the sizes: docs/training.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

HEAD_CHUNK = 4096  # vocabulary rows per chunk: Qwen3's 151,936 ids in 38 chunks; 0 means the plain head
# (N, L, chunk) float32 arrays alive at the peak, measured with mx.get_peak_memory at Qwen3's vocabulary:
# MLX allocates a few operations ahead of the ones running, so about three chunks are in flight, two
# arrays each, in a forward sweep
SWEEP_COPIES = 6
GRAD_COPIES = 10  # the same in a differentiated sweep with the entropy: its forward and the backward's
KL_COPIES = 12  # the same in chunked_kl's sweep over two heads


LOG2_E = 1.4426950408889634


def exp(x: mx.array) -> mx.array:
    """e**x as 2**(x log2 e), for the vocabulary-wide sweeps. MLX's CPU build for x86 computes `mx.exp`
    one element at a time through its polynomial (its SIMD width there is 1), 10 to 20 ns an element
    here, while `mx.power` runs at 6 to 7 (a chunk's fold over 8 x 180 x 4096 logits: 115 ms with mx.exp, 50 with
    this). The product x log2(e) is rounded once, as mx.exp's own polynomial rounds it: against float64
    both are within 1e-6 relative where |x| < 20 and 4e-6 out to 88 (tests/engine/model/test_logprob_head.py).
    On Apple silicon's GPU both are one instruction."""
    return mx.power(2.0, x * LOG2_E)


@dataclass(frozen=True)
class Head:
    """A model's output projection as arrays: a dense (V, D) weight, or a quantized weight with its scales
    (and biases) and its quantization settings in `quant`."""

    arrays: tuple[mx.array, ...]
    quant: dict | None = None  # group_size, bits, mode of a quantized head; None for a dense one
    trains: bool = False  # the weight trains (full fine-tuning): the backward gives its gradient, else zeros

    @property
    def vocab(self) -> int:
        return int(self.arrays[0].shape[0])

    def logits(self, hidden: mx.array, arrays: tuple[mx.array, ...], lo: int, hi: int) -> mx.array:
        """hidden @ W[lo:hi]^T, (N, L, hi - lo), in the dtype mlx-lm's head gives; `arrays` stand in for
        self.arrays (the traced copies under a gradient)."""
        rows = [a[lo:hi] for a in arrays]
        if self.quant is None:
            return hidden @ rows[0].T
        return mx.quantized_matmul(hidden, rows[0], rows[1], rows[2] if len(rows) > 2 else None,
                                   transpose=True, **self.quant)

    def rows_at(self, arrays: tuple[mx.array, ...], targets: mx.array) -> mx.array:
        """The weight's rows at `targets`, (N, L, D): each target's output embedding."""
        if self.quant is None:
            return arrays[0][targets]
        biases = arrays[2][targets] if len(arrays) > 2 else None
        return mx.dequantize(arrays[0][targets], arrays[1][targets], biases, **self.quant)

    def back(self, dz: mx.array, arrays: tuple[mx.array, ...], lo: int, hi: int) -> mx.array:
        """dz @ W[lo:hi], (N, L, D): the hidden states' gradient through one chunk."""
        rows = [a[lo:hi] for a in arrays]
        if self.quant is None:
            return dz @ rows[0]
        return mx.quantized_matmul(dz, rows[0], rows[1], rows[2] if len(rows) > 2 else None,
                                   transpose=False, **self.quant)


def output_head(model: nn.Module) -> Head | None:
    """The head of an mlx-lm causal LM whose `model.model(inputs, cache)` gives the final, normed hidden
    states: `lm_head`, or the tied embedding's `as_linear`. None for a head this module cannot sweep in
    chunks (a LoRA-adapted or biased one, or a model laid out otherwise)."""
    if not isinstance(getattr(model, "model", None), nn.Module):
        return None
    layer = model.lm_head if "lm_head" in model else getattr(model.model, "embed_tokens", None)
    if type(layer) in (nn.Linear, nn.Embedding) and "bias" not in layer:
        return Head((layer.weight,), trains="weight" in layer.trainable_parameters())
    if type(layer) in (nn.QuantizedLinear, nn.QuantizedEmbedding) and "bias" not in layer:
        arrays = (layer.weight, layer.scales) + ((layer.biases,) if layer.get("biases") is not None else ())
        return Head(arrays, {"group_size": layer.group_size, "bits": layer.bits, "mode": layer.mode})
    return None


def chunked_logprobs(hidden: mx.array, head: Head, targets: mx.array, temperature: float = 1.0,
                     chunk: int = HEAD_CHUNK, with_entropy: bool = False, for_grad: bool = False):
    """log softmax(hidden W^T / T) at `targets` in float32, (N, L), from the final hidden states (N, L, D),
    with `chunk` vocabulary rows at a time; with `with_entropy` also the entropy of softmax(z / T) at each
    position, (N, L), without gradient. Differentiable in `hidden`, and in the weight of a head that
    `trains` (a frozen head's weight gets a zero gradient, never computed).

    `for_grad` says a gradient will be taken: for a frozen head the sweep then also gathers E_p[W] =
    softmax(z) W, so the hidden states' gradient, g / T (W[target] - E_p[W]), needs no second sweep
    (one more matmul a chunk in the forward, where a second sweep takes two). Without it, or for a head
    that trains, the backward sweeps the chunks again; the gradient is the same either way."""
    if chunk < 1:
        raise ValueError(f"chunked_logprobs needs a chunk of at least 1 vocabulary row, got {chunk}")
    scale = 1.0 / temperature
    bounds = [(lo, min(lo + chunk, head.vocab)) for lo in range(0, head.vocab, chunk)]
    gather = for_grad and not head.trains

    @mx.custom_function
    def logprobs(hidden, *arrays):
        return _sweep(hidden, arrays, head, targets, scale, bounds, with_entropy, gather)

    @logprobs.vjp
    def logprobs_vjp(primals, cotangents, outputs):
        hidden, *arrays = primals
        gs = (cotangents[0] * scale)[..., None]  # (N, L, 1)
        if gather:
            dhidden = (gs * (head.rows_at(arrays, targets).astype(mx.float32) - outputs[3])).astype(hidden.dtype)
            return (dhidden, *(mx.zeros_like(a) for a in arrays))
        return _sweep_back(hidden, tuple(arrays), head, targets, scale, bounds, gs, outputs[1])

    logp, _, entropy, *_ = logprobs(hidden, *head.arrays)
    return (logp, mx.stop_gradient(entropy)) if with_entropy else logp


def _scaled(hidden, arrays, head: Head, scale: float, lo: int, hi: int) -> mx.array:
    """One chunk's float32 logits at temperature T: (N, L, hi - lo)."""
    z = head.logits(hidden, arrays, lo, hi).astype(mx.float32)
    return z * scale if scale != 1.0 else z


class _Fold:
    """One softmax over the vocabulary, folded in a chunk of logits z at a time: the running maximum m, the
    sum s of exp(z - m), the targets' logits, a = sum exp(z - m) (z - m) for the entropy, and b = sum
    exp(z - m) w for the expectation of a given w. When m rises by d, the old terms are rescaled by
    exp(-d) (and a's shifted by d)."""

    def __init__(self, targets: mx.array | None):
        self.targets = targets  # None: fold the log-sum-exp alone, picking nothing
        self.m = None
        self.s = self.a = self.b = self.u = self.picked = 0.0

    def add(self, z: mx.array, lo: int, hi: int, entropy: bool = False, w: mx.array | None = None,
            project=None) -> None:
        """Fold in the chunk z = logits[..., lo:hi]; `project(e)`, when given, maps the chunk's (N, L, c)
        weights e to (N, L, D) (e W[lo:hi]), summed into u like b."""
        top = z.max(axis=-1)
        m = top if self.m is None else mx.maximum(self.m, top)
        drop = mx.zeros_like(m) if self.m is None else m - self.m  # >= 0
        r = exp(-drop)  # (N, L)
        shifted = z - m[..., None]
        e = exp(shifted)
        if entropy:  # each old e^(z-m)(z-m) becomes r e^(z-m) ((z-m) - drop)
            self.a = r * (self.a - drop * self.s) + (e * shifted).sum(axis=-1)
        if w is not None:
            self.b = r * self.b + (e * w).sum(axis=-1)
        if project is not None:
            self.u = r[..., None] * self.u + project(e).astype(mx.float32)
        self.s = r * self.s + e.sum(axis=-1)
        t = self.targets
        if t is None:
            self.m = m
            return
        here = mx.take_along_axis(z, mx.clip(t - lo, 0, hi - lo - 1)[..., None], axis=-1).squeeze(-1)
        self.picked = mx.where((t >= lo) & (t < hi), here, self.picked)
        self.m = m

    def after(self, x: mx.array) -> mx.array:
        """`x` made to wait for the chunks folded so far: the next chunk's logits are computed after this
        one's reductions, so only a few chunks are ever alive (MLX would otherwise compute them all first)."""
        if self.m is None:
            return x
        return mx.depends(x, [v for v in (self.s, self.a, self.b, self.u, self.picked) if isinstance(v, mx.array)])

    @property
    def lse(self) -> mx.array:
        return self.m + mx.log(self.s)

    @property
    def logp(self) -> mx.array:
        return self.picked - self.lse

    @property
    def entropy(self) -> mx.array:
        return mx.log(self.s) - self.a / self.s

    @property
    def mean(self) -> mx.array:
        """The expectation of w under the softmax."""
        return self.b / self.s

    @property
    def projected(self) -> mx.array:
        """The expectation of the projected rows under the softmax, (N, L, D): E_p[W] for the head's rows."""
        return self.u / self.s[..., None]


def _sweep(hidden, arrays, head: Head, targets, scale: float, bounds, with_entropy: bool, gather: bool):
    """(log-prob at the targets, log-sum-exp, entropy or zeros), each (N, L), and with `gather` E_p[W],
    (N, L, D), in one sweep over the chunks."""
    fold = _Fold(targets)
    for lo, hi in bounds:
        project = (lambda e, lo=lo, hi=hi: head.back(e.astype(hidden.dtype), arrays, lo, hi)) if gather else None
        fold.add(_scaled(fold.after(hidden), arrays, head, scale, lo, hi), lo, hi, entropy=with_entropy,
                 project=project)
    lse = fold.lse
    out = (fold.picked - lse, lse, fold.entropy if with_entropy else mx.zeros_like(lse))
    return out + (fold.projected,) if gather else out


def chunked_logsumexp(z: mx.array, chunk: int = HEAD_CHUNK) -> mx.array:
    """log sum exp(z) over the last axis, (..., V) -> (...), folded `chunk` entries at a time as
    `chunked_logprobs` folds the head's logits: the sampler's pi_T takes its normaliser so, to agree with
    the trainer's pass. A float32 sum over the whole row at once is not interchangeable with it: on the
    CPU MLX adds the row's exps in order, so each tail term is rounded against a running total near the
    top token's, a bias that grows with the vocabulary and the peak (SmolLM2-135M at T 0.7: its log-sum-exp
    1.8e-5 low on average, up to 1.0e-4, against 2.6e-6 and 1.3e-5 for 4096-entry chunks; float64 reference)."""
    fold = _Fold(None)
    for lo in range(0, z.shape[-1], chunk):
        hi = min(lo + chunk, z.shape[-1])
        fold.add(z[..., lo:hi], lo, hi)
    return fold.lse


def chunked_kl(hidden: mx.array, head: Head, ref_hidden: mx.array, ref_head: Head, targets: mx.array,
               temperature: float = 1.0, chunk: int = HEAD_CHUNK) -> dict[str, mx.array]:
    """The exact KL(pi || ref) over the vocabulary at each position, in one sweep over both heads' chunks:
    E_pi[z - z_ref] - (lse - lse_ref) with z = logits / T. Returns (N, L) arrays, without gradient: `kl`,
    `entropy` (pi's), `logp` and `ref_logp` (at the targets)."""
    if chunk < 1:
        raise ValueError(f"chunked_kl needs a chunk of at least 1 vocabulary row, got {chunk}")
    if head.vocab != ref_head.vocab:
        raise ValueError(f"the policy's head has {head.vocab} rows and the reference's {ref_head.vocab}")
    scale = 1.0 / temperature
    pol, ref = _Fold(targets), _Fold(targets)
    for lo in range(0, head.vocab, chunk):
        hi = min(lo + chunk, head.vocab)
        z = _scaled(pol.after(ref.after(hidden)), head.arrays, head, scale, lo, hi)
        z_ref = _scaled(pol.after(ref.after(ref_hidden)), ref_head.arrays, ref_head, scale, lo, hi)
        pol.add(z, lo, hi, entropy=True, w=z - z_ref)
        ref.add(z_ref, lo, hi)
    out = {"kl": pol.mean - (pol.lse - ref.lse), "entropy": pol.entropy, "logp": pol.logp, "ref_logp": ref.logp}
    return {k: mx.stop_gradient(v) for k, v in out.items()}


def _sweep_back(hidden, arrays, head: Head, targets, scale: float, bounds, gs, lse):
    """The cotangents of (hidden, *arrays) for the log-probs' cotangent over T, `gs` (N, L, 1), chunk by
    chunk, recomputing each chunk's softmax from the forward's log-sum-exp `lse`."""
    flat = hidden.reshape(-1, hidden.shape[-1])  # (N L, D)
    dhidden = None
    dweight = []  # the weight's gradient, a chunk of rows at a time
    for lo, hi in bounds:
        after = hidden if dhidden is None else mx.depends(hidden, dhidden)
        z = _scaled(after, arrays, head, scale, lo, hi)
        onehot = (mx.arange(lo, hi)[None, None, :] == targets[..., None]).astype(mx.float32)
        dz = ((onehot - exp(z - lse[..., None])) * gs).astype(hidden.dtype)  # (N, L, c)
        part = head.back(dz, arrays, lo, hi)
        if head.trains:
            rows = dz.reshape(-1, hi - lo).T @ flat  # (c, D)
            dweight.append(rows)
            # the chunk's weight rows before the next chunk's logits: otherwise every dz waits for its
            # rows until the end, and the whole (N, L, V) gradient is alive at once
            part = mx.depends(part, rows)
        dhidden = part if dhidden is None else dhidden + part
    if not head.trains:  # frozen (LoRA on the blocks, or a quantized head): no weight gradient is computed
        return (dhidden, *(mx.zeros_like(a) for a in arrays))
    return dhidden, mx.concatenate(dweight).astype(arrays[0].dtype)
