"""Data parallelism over MLX's own distributed backend (`mx.distributed`, started by `mlx.launch`).

Every rank runs the same nightly command. Rank 0 alone touches the database
and writes checkpoints; it sends the other ranks what they need (the day's
training groups, the prompts, the resumed weights) and gathers what they
produce (their rollouts). Gradients are averaged with mlx's
`average_gradients`. Small Python objects travel as JSON bytes in uint8 arrays.
A rank that dies makes the collective calls of the others fail, so the whole
step fails and the re-run resumes as usual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from varro.engine.core.rollout import Rollout


@dataclass
class World:
    group: Any | None  # mx.distributed.Group, None when running alone
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def all_sum(self, x: mx.array) -> mx.array:
        return mx.distributed.all_sum(x, group=self.group) if self.distributed else x

    def all_max(self, x: mx.array) -> mx.array:
        return mx.distributed.all_max(x, group=self.group) if self.distributed else x

    def gather_json(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
        lengths = mx.distributed.all_gather(mx.array([len(data)], dtype=mx.int32), group=self.group)
        lengths = [int(v) for v in np.array(lengths)]
        padded = np.zeros(max(lengths), dtype=np.uint8)
        padded[: len(data)] = data
        rows = np.array(mx.distributed.all_gather(mx.array(padded)[None], group=self.group))
        return [json.loads(bytes(rows[i, : lengths[i]]).decode()) for i in range(self.size)]

    def broadcast_json(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (the others pass anything, e.g. None)."""
        return self.gather_json(obj if self.is_main else None)[0]

    def broadcast_tree(self, tree: Any) -> Any:
        """Rank 0's arrays on every rank: the others contribute zeros to a sum."""
        if not self.distributed:
            return tree
        flat = sorted(tree_flatten(tree), key=lambda kv: kv[0])  # the same order on every rank
        out = [(k, mx.distributed.all_sum(v if self.is_main else mx.zeros_like(v), group=self.group))
               for k, v in flat]
        mx.eval([v for _, v in out])
        return tree_unflatten(out)


def init_world() -> World:
    """The world this process belongs to: one process unless started by mlx.launch."""
    group = mx.distributed.init()
    if group.size() == 1:
        return World(None)
    return World(group, group.rank(), group.size())


SOLO = World(None)


def rollouts_to_json(groups: list[list]) -> list[list[dict]]:
    return [[{"prompt_id": r.prompt_id, "group_index": r.group_index, "prompt_tokens": r.prompt_tokens,
              "completion_tokens": r.completion_tokens, "text": r.text, "finish_reason": r.finish_reason,
              "reward": r.reward, "sampler_logprobs": r.sampler_logprobs,
              "policy_logprobs": r.policy_logprobs, "checkpoint": r.checkpoint}
             for r in g] for g in groups]


def rollouts_from_json(data: list[list[dict]]) -> list[list]:
    return [[Rollout(**r) for r in g] for g in data]
