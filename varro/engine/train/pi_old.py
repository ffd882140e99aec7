"""Where the off-policy minibatches' pi_old comes from: the sampler's stored log-probs, or a pass.

The sampler's untruncated log-probs stand in when a check pass on a few rows finds them within
`pi_old_tolerance` of the trainer's own float32 pass, over all ranks; otherwise the pass runs on every row
(docs/training.md, step 3, has the measurements).
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import numpy as np

from varro.engine.core.config import TrainConfig
from varro.engine.core.rollout import Rollout
from varro.engine.model.distributed import World
from varro.engine.train.batching import Chunk, make_chunks, stack_rows


def has_policy_logprobs(r: Rollout) -> bool:
    """Whether the sampler stored `r`'s untruncated log-probs, one per completion token."""
    return r.policy_logprobs is not None and len(r.policy_logprobs) == len(r.completion_tokens)


def pi_old_gap(passes: list[Chunk], by_row: dict[int, mx.array]) -> float:
    """The largest |mean log pi_old - mean stored log-prob| over the rows of `passes` (0 for none): the
    error the sampler's values would put into a row's length-normalised log-ratio."""
    gaps = [abs(float(np.mean(np.array(by_row[id(r)], dtype=np.float64))) - float(np.mean(r.policy_logprobs)))
            for p in passes for r in p.source]
    return float(np.max(gaps)) if gaps else 0.0  # a NaN stays NaN


def set_pi_old(later: list[Chunk], cfg: TrainConfig, world: World,
               rows_logprobs: Callable[[list[Chunk]], dict[int, mx.array]],
               pad_id: int = 0) -> tuple[str | None, float | None]:
    """Step 3's pi_old: every chunk of `later` (the minibatches after the first) gets its old_logp; returns
    the day's `pi_old_source` ("sampler" or "pass"; None when no chunk needs one) and `pi_old_gap`.
    `rows_logprobs(passes)` is the current weights' pass, by id(row).

    With `pi_old` "auto" and every row's untruncated log-probs stored by the sampler, the pass runs on
    `pi_old_check_rows` rows of each of the first `pi_old_check_prompts` prompts alone (the sampler's and
    the pass's numerics differ by the base's dtype and decode, not by row, so a few rows show it); the
    largest gap between a row's mean log-prob from that pass and from the sampler (the error it would put
    in the sequence's log-ratio), over all ranks, decides for every rank at once: within
    `pi_old_tolerance` the other rows take the sampler's values, otherwise the pass. A row with none
    stored (sampled before they were, or greedily) makes the whole day take the pass; "pass" takes it
    always (and logs the gap on every row, when stored).
    """
    source, gap = None, None
    if not later:  # one minibatch: no step is off-policy
        return source, gap
    passes = make_chunks([r for c in later for r in c.source], pad_id)
    missing = not all(has_policy_logprobs(r) for p in passes for r in p.source)
    if cfg.pi_old == "auto":
        per = cfg.pi_old_check_rows or None
        check = [r for p in passes[: cfg.pi_old_check_prompts] for r in p.source[:per]]
    else:
        check = [r for p in passes for r in p.source]
    in_check = {id(r) for r in check}
    rest = [r for p in passes for r in p.source if id(r) not in in_check]
    # taken over all ranks, so every rank decides alike: a row without stored values on any rank, and
    # rows left after the check on any rank
    flags = world.all_max(mx.array([float(missing), float(bool(rest))])).tolist()
    missing, decide = flags[0] > 0, flags[1] > 0 and flags[0] == 0
    checked = make_chunks(check, pad_id) if decide else passes
    by_row = rows_logprobs(checked)
    if not missing:
        gap = world.all_max(mx.array(pi_old_gap(checked, by_row))).item()
    source = "pass"
    if decide:
        if gap <= cfg.pi_old_tolerance:  # NaN falls back
            source = "sampler"
            by_row.update({id(r): mx.array(r.policy_logprobs, dtype=mx.float32) for r in rest})
        elif rest:
            by_row.update(rows_logprobs(make_chunks(rest, pad_id)))
    for c in later:
        c.old_logp = stack_rows(c, by_row)
    mx.eval([c.old_logp for c in later])
    return source, gap
