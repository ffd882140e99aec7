"""Cascade decode attention (sampling.attention) against MLX's own attention over the joined arrays."""

import mlx.core as mx
import numpy as np
import pytest

from varro.engine.sampling.attention import cascade_attention, prompt_runs
from varro.engine.sampling.kvcache import SharedPrefixBatchCache


def joined_reference(queries, scale, prefix_keys, prefix_values, prefix_start, prompt_of_row, keys, values):
    """Each row alone: its prompt's positions then its own, through mx.fast.scaled_dot_product_attention."""
    n, t = queries.shape[2], keys.shape[2]
    out = []
    for r, j in enumerate(prompt_of_row):
        k = mx.concatenate([prefix_keys[j : j + 1, :, prefix_start[j] :], keys[r : r + 1]], axis=2)
        v = mx.concatenate([prefix_values[j : j + 1, :, prefix_start[j] :], values[r : r + 1]], axis=2)
        width = k.shape[2] - t
        # query i sits at own position t - n + i: it sees the prefix and own positions up to its own
        mask = mx.arange(width + t)[None, :] <= (width + t - n + mx.arange(n))[:, None]
        out.append(mx.fast.scaled_dot_product_attention(queries[r : r + 1], k, v, scale=scale, mask=mask))
    return mx.concatenate(out, axis=0)


@pytest.mark.parametrize("prompt_of_row", [[0, 0, 1, 1, 1, 2], [1, 0, 0, 2, 1, 1]])
@pytest.mark.parametrize("n", [1, 3])
def test_cascade_attention_equals_attention_over_each_rows_joined_keys(prompt_of_row, n):
    rng = np.random.default_rng(len(prompt_of_row) + n)
    heads, kv_heads, dim, width, t = 4, 2, 8, 7, 5
    rows = len(prompt_of_row)

    def normal(*shape):
        return mx.array(rng.normal(size=shape).astype(np.float32))

    prefix_keys, prefix_values = normal(3, kv_heads, width, dim), normal(3, kv_heads, width, dim)
    keys, values = normal(rows, kv_heads, t, dim), normal(rows, kv_heads, t, dim)
    queries = normal(rows, heads, n, dim) * 3.0  # peaked scores: a wrong position or head shows
    starts = [0, 2, 6]  # prompts of 7, 5 and 1 positions (left padding)
    ours = cascade_attention(queries, dim**-0.5, prefix_keys, prefix_values, starts, prompt_runs(prompt_of_row),
                             keys, values)
    reference = joined_reference(queries, dim**-0.5, prefix_keys, prefix_values, starts, prompt_of_row, keys, values)
    assert ours.shape == (rows, heads, n, dim)
    np.testing.assert_allclose(np.array(ours), np.array(reference), rtol=1e-5, atol=1e-5)


def test_prompt_runs_are_maximal_runs_of_one_prompt():
    assert prompt_runs([0, 0, 1, 1, 1, 2]) == [(0, 0, 2), (1, 2, 5), (2, 5, 6)]
    assert prompt_runs([1, 0, 0, 1]) == [(1, 0, 1), (0, 1, 3), (1, 3, 4)]
    assert prompt_runs([]) == []


def test_a_cascading_cache_whose_attend_is_never_called_refuses_the_next_step():
    """Regression guard: a model whose attention call is not routed would attend to its newest position
    only; the cache stops the decode instead of sampling from that."""
    prefix = mx.zeros((1, 2, 4, 8))
    cache = SharedPrefixBatchCache(prefix, prefix, mx.array([0, 0]), [0, 0], completion_tokens=3, cascading=True)
    new = mx.ones((2, 2, 1, 8))
    cache.update_and_fetch(new, new)
    cache.attend(mx.ones((2, 4, 1, 8)), 0.5)
    cache.update_and_fetch(new, new)  # attend ran in between: fine
    with pytest.raises(RuntimeError, match="did not call the cascading cache's attend"):
        cache.update_and_fetch(new, new)
