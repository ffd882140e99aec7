"""The rollout, as the engine passes it between its stages: a prompt's tokens and a sampled completion."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Rollout:
    prompt_id: str
    group_index: int
    prompt_tokens: list[int]
    completion_tokens: list[int]
    text: str
    finish_reason: str  # "stop" (EOS sampled) or "length"
    reward: float | None = None
    components: dict[str, float | None] = field(default_factory=dict)
    advantage: float | None = None
    id: int | None = None  # the rollouts row, once stored
    sampler_logprobs: list[float] | None = None  # log q(token) per completion token, as the sampler drew it
    # log pi_T(token) per completion token: the untruncated policy at the sampling temperature, from the
    # sampler's own forward (the trainer's pi_old when it agrees with a pass); None when greedy or not stored
    policy_logprobs: list[float] | None = None
    checkpoint: str | None = None  # the checkpoint that sampled it ("base" or a day), once stored


@dataclass
class PromptInput:
    prompt_id: str
    tokens: list[int]
