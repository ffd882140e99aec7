"""The engine learns: on a toy reward, fresh samples after training beat those before."""

import numpy as np

from support.helpers import COMMON, open_policy
from support.toy import toy_reward

PROMPTS = [(f"p{i}", f"Write about story {i}.") for i in range(4)]
MARGIN = 1.0  # target words per completion; before training the mean is about 0.1


def mean_reward(policy, seeds=(999, 998, 997)):
    """The toy reward over fresh samples of every prompt, one group per seed: 3 x 4 x group_size completions,
    so a lucky draw moves the mean less than the margin."""
    groups = [g for seed in seeds for g in policy.sample(PROMPTS, seed=seed)]
    return float(np.mean([toy_reward(r.text, COMMON) for g in groups for r in g]))


def test_gspo_raises_the_toy_reward(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", learning_rate=5e-3, beta=0.02)
    pol.config.sampling.max_tokens = 16
    before = mean_reward(pol)
    for it in range(12):  # 8 met the margin on 4 of 6 seed offsets, 12 on 6 of 6 (at least +1.36)
        groups = pol.sample(PROMPTS, seed=100 + it)
        for g in groups:
            for r in g:
                r.reward = toy_reward(r.text, COMMON)
        rows = pol.trainer.train_day(groups)
        assert rows and not any(r["skipped"] for r in rows)
    after = mean_reward(pol)
    assert after >= before + MARGIN, (before, after)
