"""The trainer's no-gradient passes and update step, before and after the chunked output head.

Before: the pi_old pass cut each prompt's group into pieces of as many rows as
keep their float32 logits over the whole vocabulary under 256 MiB (2 rows at
151,936 ids and 180 tokens), and every pass and step took the whole
vocabulary's logits (`head_chunk` 0, the plain head). After: the blocks run
over the whole group at once (`memory.pass_rows`) and the head takes
`HEAD_CHUNK` vocabulary rows at a time (varro.engine.model.head).

The model is bench/memory_estimate.py's: randomly initialised, Qwen3-0.6B's
widths and vocabulary (hidden 1024, 16 query and 8 key-value heads, MLP 3072,
151,936 ids, tied embeddings), float32, with `--layers` blocks and LoRA on all
of them; one prompt's group of random tokens (a random model's rows are as
good as any for timing). Per variant and repeat, in turn, so a busy machine
slows both alike:

- pi_old: `Trainer._pass_logprobs` over the group, per completion position;
- health: `Trainer.final_health` (policy and reference) over the group;
- update: one `Trainer._update` over the first `--update-rows` rows
  (micro-batch 1, the default), per completion position.

Each figure is the best of `--repeats` (the median beside it), with the peak
of mx.get_peak_memory() above what was held before it (reset in between), and
for the after variant the memory guard's pass estimate (`memory.pass_bytes`)
against the larger measured pass peak.

Then the passes a day can skip (issue 28), on a day of `--day-prompts` prompts
(groups of `--day-group` rows of `--day-tokens` tokens) split into `--minibatches`
parts, with the LoRA B matrices set to small random values so the policy is
not the reference, at beta 0:

- pi_old: `Trainer._set_pi_old` over the later minibatches with `pi_old`
  "pass" (every row) against "auto" (the agreement check on
  `pi_old_check_prompts` prompts, the others from stored values that agree)
  and against "auto" whose check fails (the fallback: the check, then the
  pass on the other rows);
- reference: the reference pass over every row against the `kl_prompts`
  largest prompts of each minibatch (`train.kl_chunks`), and the relative
  error of each minibatch's KL (k3, per sequence then averaged) from the
  subsample against the one from every row.

    scripts/env python bench/passes.py                     # 2 blocks, 8 x 96 tokens, 2 repeats: ~5 min of CPU
    scripts/env python bench/passes.py --layers 4 --tokens 180 --repeats 3
"""

from __future__ import annotations

import gc
import statistics
import time

import mlx.core as mx
import numpy as np
from common import emit, group_parser
from memory_estimate import VOCAB, qwen3_06b

from varro.engine.core.config import Config
from varro.engine.train.gspo import gspo_objective
from varro.engine.model.head import HEAD_CHUNK
from varro.engine.model.memory import ModelShape, pass_bytes
from varro.engine.model.loading import apply_lora
from varro.engine.core.rollout import Rollout
from varro.engine.train import health as health_pass, logprobs
from varro.engine.train.batching import make_chunks
from varro.engine.train.trainer import Trainer, make_optimizer

BENCH = "passes"
OLD_PASS_LOGITS_BYTES = 256 * 2**20  # before: a pass's piece took the rows whose float32 logits fit this
NEW_PASS_ROWS = logprobs.pass_piece_rows


def old_pass_rows(model, p, dtype_bytes: int, head_chunk: int, health: bool = False) -> int:
    """The rows per piece of the passes before this change, from the whole vocabulary's logits alone (the
    health pass a third of them, for its 6 whole-vocabulary arrays)."""
    rows = max(1, min(p.rows, OLD_PASS_LOGITS_BYTES // (4 * VOCAB * int(p.inputs.shape[1]))))
    return max(1, rows * 2 // 6) if health else rows


def use_pass_rows(fn) -> None:
    """Make the passes (the trainer's and the end-of-day health pass) cut their pieces with `fn`."""
    logprobs.pass_piece_rows = health_pass.pass_piece_rows = fn


def trainer_for(layers: int) -> Trainer:
    model = qwen3_06b(layers)
    cfg = Config()
    cfg.model.lora_layers = layers
    apply_lora(model, cfg.model)
    cfg.train.minibatches = 1
    return Trainer(model, cfg.train, make_optimizer(cfg.train), gspo_objective(cfg.train), temperature=0.7)


def group(size: int, prompt_tokens: int, tokens: int, seed: int = 0) -> list[Rollout]:
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, VOCAB, prompt_tokens).tolist()
    return [Rollout("p", i, prompt, rng.integers(0, VOCAB, tokens).tolist(), "", "length", reward=float(i % 3))
            for i in range(size)]


RESET_PEAK = mx.reset_peak_memory  # the update's own reset is stubbed out while it is measured


def measure(fn) -> tuple[float, int]:
    """(seconds, peak bytes above what MLX held before) of one call."""
    gc.collect()
    before = mx.get_active_memory()
    RESET_PEAK()
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic, mx.get_peak_memory() - before


def run_variant(trainer: Trainer, rows: list[Rollout], update_rows: int, after: bool) -> dict[str, tuple[float, int]]:
    """The three measurements of one variant: {name: (seconds, peak bytes)}."""
    trainer.head_chunk = HEAD_CHUNK if after else 0
    use_pass_rows(NEW_PASS_ROWS if after else old_pass_rows)
    try:
        batches = trainer.prepare([rows])  # advantages and the reference pass
        chunks = batches[0].chunks
        out = {"pi_old": measure(lambda: trainer._pass_logprobs(chunks, chunks)),
               "health": measure(lambda: trainer.final_health(batches))}
        (small,) = trainer.prepare([rows[:update_rows]])
        mx.reset_peak_memory = lambda: None  # _update resets the peak itself, after its setup
        try:
            out["update"] = measure(lambda: trainer._update(small, 0))
        finally:
            mx.reset_peak_memory = RESET_PEAK
        return out
    finally:
        use_pass_rows(NEW_PASS_ROWS)


def day_groups(prompts: int, size: int, prompt_tokens: int, tokens: int) -> list[list[Rollout]]:
    """`prompts` groups of `size` random rows, each under its own random prompt."""
    return [[Rollout(f"p{k}", r.group_index, r.prompt_tokens, r.completion_tokens, "", "length", reward=r.reward)
             for r in group(size, prompt_tokens, tokens, seed=k)] for k in range(prompts)]


def perturb_adapters(trainer: Trainer, scale: float = 0.002) -> None:
    """Small random LoRA B matrices (zero at the start), so the policy's KL to the reference is not zero."""
    from mlx.utils import tree_flatten, tree_unflatten

    rng = np.random.default_rng(1)
    trainer.model.update(tree_unflatten([(k, mx.array(rng.normal(0, scale, v.shape).astype(np.float32)))
                                         for k, v in tree_flatten(trainer.model.trainable_parameters())
                                         if k.endswith("lora_b")]))


def unpassed_batches(trainer: Trainer, groups: list[list[Rollout]]):
    """The day's minibatches as `prepare` cuts them, without its passes."""
    set_pi_old, reference = trainer._set_pi_old, trainer.reference
    trainer._set_pi_old, trainer.reference = (lambda later: None), None
    try:
        return trainer.prepare(groups)
    finally:
        trainer._set_pi_old, trainer.reference = set_pi_old, reference


def mean_k3(logp: list[mx.array], ref: list[mx.array], chunks) -> float:
    """The KL metric as the loss logs it, over `chunks`: mean over rows of each row's mean k3."""
    per_row = []
    for lp, rf, c in zip(logp, ref, chunks):
        d = np.array(rf - lp, dtype=np.float64)
        m = np.array(c.mask, dtype=np.float64)
        per_row += list(((np.exp(d) - d - 1) * m).sum(1) / m.sum(1))
    return float(np.mean(per_row))


def run_savings(trainer: Trainer, groups: list[list[Rollout]], repeats: int) -> dict:
    """{name: [seconds per repeat]} of the pi_old and reference passes with and without the skips, plus the
    KL subsample's relative errors per minibatch and what the auto check decided."""
    from varro.engine.train.batching import kl_chunks

    cfg = trainer.cfg
    batches = unpassed_batches(trainer, groups)
    later = [c for mb in batches[1:] for c in mb.chunks]
    chunks = [c for mb in batches for c in mb.chunks]
    passes = make_chunks([r for c in chunks for r in c.source])
    by_row = trainer._rows_logprobs(passes)  # the sampler's stored values, as a float32 sampler would agree
    for p in passes:
        for r in p.source:
            r.policy_logprobs = np.array(by_row[id(r)]).tolist()
    sub = kl_chunks(batches, cfg.kl_prompts)
    times: dict[str, list[float]] = {"pi_old.pass": [], "pi_old.auto": [], "pi_old.fallback": [],
                                     "reference.full": [], "reference.subsample": []}
    tolerance = cfg.pi_old_tolerance
    for _ in range(repeats):
        for source in ("pass", "auto", "fallback"):
            cfg.pi_old = "pass" if source == "pass" else "auto"
            cfg.pi_old_tolerance = -1.0 if source == "fallback" else tolerance  # fallback: the check fails
            times[f"pi_old.{source}"].append(measure(lambda: trainer._set_pi_old(later))[0])
            if source == "auto":
                decided, gap = trainer.pi_old_source, trainer.pi_old_gap
        cfg.pi_old_tolerance = tolerance
        for name, measured in (("full", chunks), ("subsample", sub)):
            p = make_chunks([r for c in measured for r in c.source])
            with trainer.reference():
                times[f"reference.{name}"].append(measure(lambda: trainer._pass_logprobs(measured, p))[0])
    with trainer.reference():
        ref = trainer._pass_logprobs(chunks, passes)
    logp = trainer._pass_logprobs(chunks, passes)
    by_chunk = {id(c): (lp, rf) for c, lp, rf in zip(chunks, logp, ref)}
    errors, kls = [], []
    for mb in batches:
        full = mean_k3(*zip(*(by_chunk[id(c)] for c in mb.chunks)), mb.chunks)
        part = [c for c in mb.chunks if any(c is s for s in sub)]
        errors.append(abs(mean_k3(*zip(*(by_chunk[id(c)] for c in part)), part) - full) / full)
        kls.append(full)
    return {"times": times, "kl_errors": errors, "kl": kls, "gap": gap, "auto": decided,
            "rows": (sum(p.rows for p in make_chunks([r for c in later for r in c.source])),
                     sum(c.rows for c in sub), sum(c.rows for c in chunks))}


def report_savings(out: dict, a, setup: str) -> None:
    t = out["times"]
    best = {k: min(v) for k, v in t.items()}
    later_rows, sub_rows, rows = out["rows"]
    for k, v in t.items():
        emit(BENCH, f"{k}_s", best[k], "s", f"median {statistics.median(v):.2f} s; {setup}")
    emit(BENCH, "pi_old.auto_saving", 1 - best["pi_old.auto"] / best["pi_old.pass"], "share",
         f"of the pi_old pass over {later_rows} later rows; check on {a.check_prompts} prompts, "
         f"gap {out['gap']:.2e}, auto took pi_old from the {out['auto']}")
    emit(BENCH, "pi_old.fallback_overhead", best["pi_old.fallback"] / best["pi_old.pass"] - 1, "share",
         "auto whose check fails (then the pass on the other rows) against the pass alone")
    emit(BENCH, "reference.subsample_saving", 1 - best["reference.subsample"] / best["reference.full"], "share",
         f"of the reference pass; {sub_rows} of {rows} rows ({a.kl_prompts} prompts per minibatch)")
    errs = out["kl_errors"]
    emit(BENCH, "reference.subsample_kl_error_max", max(errs), "relative",
         f"per minibatch, mean {np.mean(errs):.3f}; full-pass KL {min(out['kl']):.3g}..{max(out['kl']):.3g}")


def main() -> None:
    ap = group_parser(__doc__, "rows of the prompt's group", 96, "completion tokens per row")
    ap.add_argument("--update-rows", type=int, default=2, help="rows of the timed update step")
    ap.add_argument("--day-prompts", type=int, default=16, help="prompts of the skipped-passes day")
    ap.add_argument("--day-group", type=int, default=4, help="rows of each of its groups")
    ap.add_argument("--day-tokens", type=int, default=32, help="completion tokens per row of that day")
    ap.add_argument("--minibatches", type=int, default=4)
    ap.add_argument("--check-prompts", type=int, default=2, help="pi_old_check_prompts")
    ap.add_argument("--kl-prompts", type=int, default=2, help="kl_prompts")
    ap.add_argument("--only-savings", action="store_true", help="skip the before/after figures")
    a = ap.parse_args()
    trainer = trainer_for(a.layers)
    if not a.only_savings:
        before_after(trainer, a)
    cfg = trainer.cfg
    cfg.minibatches, cfg.beta, cfg.pi_old_check_prompts, cfg.kl_prompts = (a.minibatches, 0.0, a.check_prompts,
                                                                           a.kl_prompts)
    perturb_adapters(trainer)
    groups = day_groups(a.day_prompts, a.day_group, a.prompt_tokens, a.day_tokens)
    run_savings(trainer, [g[:4] for g in groups[:4]], 1)  # warm-up
    setup = (f"{a.layers} blocks, {a.day_prompts} prompts x {a.day_group} rows x {a.day_tokens} tokens, prompt "
             f"{a.prompt_tokens}, {a.minibatches} minibatches; best of {a.repeats}")
    report_savings(run_savings(trainer, groups, a.repeats), a, setup)


def before_after(trainer: Trainer, a) -> None:
    """The pi_old, health and update figures before and after the chunked head (the module docstring)."""
    rows = group(a.group, a.prompt_tokens, a.tokens)
    run_variant(trainer, rows[:3], 2, True)  # warm-up: first-call costs out of the figures
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(a.repeats):
        for name in runs:
            runs[name].append(run_variant(trainer, rows, a.update_rows, name == "after"))
    positions = {"pi_old": a.group * a.tokens, "health": a.group * a.tokens, "update": a.update_rows * a.tokens}
    setup = (f"{a.layers} blocks of Qwen3-0.6B's widths, vocabulary {VOCAB}, float32, LoRA on every block; "
             f"prompt {a.prompt_tokens} tokens, group {a.group} x {a.tokens}; best of {a.repeats}")
    for what, n in positions.items():
        for name, rs in runs.items():
            secs = [r[what][0] for r in rs]
            peak = max(r[what][1] for r in rs)
            emit(BENCH, f"{what}.{name}_ms_per_position", min(secs) / n * 1e3, "ms",
                 f"median {statistics.median(secs) / n * 1e3:.2f} ms; {setup}")
            emit(BENCH, f"{what}.{name}_peak", peak / 1e6, "MB", "above what was held before the call")
        best = {name: min(r[what][0] for r in rs) for name, rs in runs.items()}
        emit(BENCH, f"{what}.speedup", best["before"] / best["after"], "x", "before / after, best of each")
    shape = ModelShape.from_model(trainer.model)
    estimate = pass_bytes(shape, a.group, a.prompt_tokens, a.tokens)
    measured = max(r[w][1] for r in runs["after"] for w in ("pi_old", "health"))
    emit(BENCH, "after.pass_estimate", estimate / 1e6, "MB",
         f"memory.pass_bytes; measured {measured / 1e6:.0f} MB, estimate {estimate / measured:.2f}x")


if __name__ == "__main__":
    main()
