"""Batched group sampling against mlx-lm's own single-sequence generation."""

import numpy as np
import pytest
from mlx_lm import load
from mlx_lm.generate import generate_step
from mlx_lm.sample_utils import apply_top_k, apply_top_p, make_sampler
import mlx.core as mx

from varro.engine.core.config import SamplingConfig
from varro.engine.model.loading import chat_prompt_tokens
from varro.engine.sampling import rollouts
from varro.engine.sampling.rollouts import (PromptInput, group_candidates, make_group_sampler, make_keyed_sampler,
                                   sample_groups)


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    return load(str(tiny_model_path))


def reference_greedy(model, tok, tokens, max_tokens):
    out = []
    for token, _ in generate_step(mx.array(tokens), model, max_tokens=max_tokens, sampler=make_sampler(0.0)):
        out.append(int(token))
        if token in tok.eos_token_ids:
            break
    return out


def test_greedy_groups_equal_single_sequence_generation(loaded):
    model, tok = loaded
    texts = ["Forecast the port strike.", "What will the central bank do next week about rates?", "Oil."]
    prompts = [PromptInput(f"p{i}", chat_prompt_tokens(tok, t)) for i, t in enumerate(texts)]
    groups = sample_groups(model, tok, prompts, group_size=3, max_tokens=12, temp=0.0)
    assert [len(g) for g in groups] == [3, 3, 3]
    for p, g in zip(prompts, groups):
        want = reference_greedy(model, tok, p.tokens, 12)
        for r in g:
            assert r.prompt_id == p.prompt_id
            assert r.prompt_tokens == p.tokens
            assert r.completion_tokens == want


def test_sampling_is_seeded_and_keeps_exact_ids(loaded):
    model, tok = loaded
    prompts = [PromptInput("a", chat_prompt_tokens(tok, "Write about markets.")),
               PromptInput("b", chat_prompt_tokens(tok, "Write about the port."))]
    g1 = sample_groups(model, tok, prompts, group_size=4, max_tokens=10, temp=1.0, seed=7)
    g2 = sample_groups(model, tok, prompts, group_size=4, max_tokens=10, temp=1.0, seed=7)
    g3 = sample_groups(model, tok, prompts, group_size=4, max_tokens=10, temp=1.0, seed=8)
    ids = lambda gs: [r.completion_tokens for g in gs for r in g]  # noqa: E731
    assert ids(g1) == ids(g2)
    assert ids(g1) != ids(g3)
    # completions within a group differ (it is sampling, not copying one sample)
    assert len({tuple(r.completion_tokens) for r in g1[0]}) > 1
    eos = set(tok.eos_token_ids)
    for r in (r for g in g1 for r in g):
        assert 1 <= len(r.completion_tokens) <= 10
        body = r.completion_tokens[:-1] if r.finish_reason == "stop" else r.completion_tokens
        if r.finish_reason == "stop":
            assert r.completion_tokens[-1] in eos
        assert r.text == tok.decode(body)


@pytest.mark.parametrize("profile", ["tight", "default"])  # top-k with top-p, and top-p alone
def test_a_prompts_group_does_not_depend_on_the_prompts_decoded_beside_it(loaded, profile):
    # Regression: one seeded stream fed the whole batch, so a prompt's completions changed with the other
    # prompts of the call and the decode batch, and two ranks sharing a day's prompts sampled another day
    model, tok = loaded
    texts = {"a": "Write about markets.", "b": "What will the central bank do next week about rates?",
             "c": "Oil.", "d": "Write about the port."}
    prompts = [PromptInput(pid, chat_prompt_tokens(tok, t)) for pid, t in texts.items()]
    knobs = SamplingConfig(profile=profile).sampler_settings()

    def completions(ps, seed=7, decode_batch=0):
        groups = sample_groups(model, tok, ps, group_size=4, max_tokens=12, seed=seed, decode_batch=decode_batch,
                               **knobs)
        return {(r.prompt_id, r.group_index): r.completion_tokens for g in groups for r in g}

    together = completions(prompts)
    assert completions(prompts[3:] + prompts[:1]) == {k: v for k, v in together.items() if k[0] in "da"}
    assert completions(prompts[::-1], decode_batch=1) == together
    assert {**completions(prompts[0::2]), **completions(prompts[1::2])} == together  # two ranks' halves
    assert completions(prompts, seed=8) != together
    assert all(len({tuple(together[pid, g]) for g in range(4)}) > 1 for pid in texts)  # each row its own key


def test_rejects_empty_prompt(loaded):
    model, tok = loaded
    with pytest.raises(ValueError, match="no tokens"):
        sample_groups(model, tok, [PromptInput("x", [])], group_size=2, max_tokens=4, temp=1.0)


def test_top_k_sampling_through_the_batch_generator_equals_greedy(loaded):
    # top_k=1 leaves one candidate, so make_group_sampler inside BatchGenerator must decode greedily
    model, tok = loaded
    prompts = [PromptInput("a", chat_prompt_tokens(tok, "Forecast the port strike.")),
               PromptInput("b", chat_prompt_tokens(tok, "Oil."))]
    groups = sample_groups(model, tok, prompts, group_size=3, max_tokens=10, temp=1.0, top_p=0.9, top_k=1, seed=3)
    for p, g in zip(prompts, groups):
        want = reference_greedy(model, tok, p.tokens, 10)
        assert [r.completion_tokens for r in g] == [want] * 3


def test_default_profile_samples_without_mlx_lm_sampler_and_is_seeded(loaded, monkeypatch):
    import mlx_lm.sample_utils

    def refuse(**_):
        raise AssertionError("the default profile should not build mlx-lm's full-sort sampler")

    monkeypatch.setattr(mlx_lm.sample_utils, "make_sampler", refuse)
    model, tok = loaded
    knobs = SamplingConfig().sampler_settings()
    prompts = [PromptInput("a", chat_prompt_tokens(tok, "Write about markets."))]
    g1 = sample_groups(model, tok, prompts, group_size=4, max_tokens=8, seed=5, **knobs)
    g2 = sample_groups(model, tok, prompts, group_size=4, max_tokens=8, seed=5, **knobs)
    assert [r.completion_tokens for r in g1[0]] == [r.completion_tokens for r in g2[0]]
    assert all(0 <= t < 512 for r in g1[0] for t in r.completion_tokens)


def kept_mask(logprobs: mx.array, top_p: float, top_k: int) -> np.ndarray:
    """group_candidates' finite entries as a dense (B, V) boolean mask."""
    ids, kept = group_candidates(logprobs, top_p, top_k)
    mask = np.zeros(logprobs.shape, dtype=bool)
    np.put_along_axis(mask, np.array(ids), np.isfinite(np.array(kept)), axis=-1)
    return mask


def mlx_lm_mask(logprobs: mx.array, top_p: float, top_k: int) -> np.ndarray:
    """What make_sampler keeps: apply_top_p, then apply_top_k, in that order."""
    if 0 < top_p < 1:
        logprobs = apply_top_p(logprobs, top_p)
    if top_k < logprobs.shape[-1]:
        logprobs = apply_top_k(logprobs, top_k)
    return np.isfinite(np.array(logprobs))


def nucleus_then_top_k(logprobs: np.ndarray, top_p: float, top_k: int) -> np.ndarray:
    """NumPy reference: keep the tokens whose higher-ranked mass is below top_p (the one that
    crosses it included) and their ties, then the top_k largest of those (rows with no tie
    at the k-th)."""
    mask = np.zeros(logprobs.shape, dtype=bool)
    for row, out in zip(logprobs.astype(np.float64), mask):
        order = np.argsort(-row)
        above = np.concatenate([[0.0], np.cumsum(np.exp(row[order]))[:-1]])
        n = int((above < top_p).sum()) if top_p < 1 else len(row)
        n = int((row >= row[order[n - 1]]).sum())
        out[order[: min(n, top_k)]] = True
    return mask


def nucleus_size(row: np.ndarray, top_p: float) -> int:
    """How many tokens top-p alone keeps from a row of distinct log-probs."""
    descending = np.sort(np.exp(row.astype(np.float64)))[::-1]
    return int((np.cumsum(descending) - descending < top_p).sum())


def random_logprobs(seed: int, rows: int, vocab: int) -> mx.array:
    """Rows from flat to peaked, normalised like BatchGenerator's log-softmax."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(0.5, 8.0, rows)[:, None]
    logits = mx.array((rng.normal(size=(rows, vocab)) * scales).astype(np.float32))
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


@pytest.mark.parametrize("top_p", [0.3, 0.6, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("top_k", [1, 2, 7, 40, 300, 999])
def test_candidates_equal_mlx_lm_top_p_then_top_k(top_p, top_k):
    lp = random_logprobs(6, 12, 1000)
    rows = np.array(lp)
    ranked = -np.sort(-rows, axis=-1)
    if top_k < rows.shape[-1]:  # no tie at the k-th largest, where either cut is arbitrary
        assert (ranked[:, top_k - 1] > ranked[:, top_k]).all()
    # mlx-lm divides by its float32 sum of the row, which is 1 only to ~1e-6, so the two
    # could differ for a token whose higher-ranked mass is that close to top_p; none is here
    if top_p < 1:
        above = np.cumsum(np.sort(np.exp(rows.astype(np.float64)), axis=-1)[:, ::-1], axis=-1)
        assert np.abs(above - top_p).min() > 1e-5
    ours = kept_mask(lp, top_p, top_k)
    np.testing.assert_array_equal(ours, mlx_lm_mask(lp, top_p, top_k))
    np.testing.assert_array_equal(ours, nucleus_then_top_k(rows, top_p, top_k))
    assert (ours.sum(-1) >= 1).all()


def test_candidate_cases_cover_both_cuts():
    # the parametrised grid above sees rows where top_p cuts inside the top k and rows where top_k cuts first
    rows = np.array(random_logprobs(6, 12, 1000))
    sizes = [nucleus_size(r, 0.9) for r in rows]
    assert min(sizes) < 40 < max(sizes)


def test_candidates_when_top_k_meets_the_nucleus_exactly():
    lp = random_logprobs(1, 6, 1000)
    for r, row in enumerate(np.array(lp)):
        m = nucleus_size(row, 0.9)
        for k in (m - 1, m, m + 1):
            if 0 < k < lp.shape[-1]:
                one = lp[r : r + 1]
                np.testing.assert_array_equal(kept_mask(one, 0.9, k), mlx_lm_mask(one, 0.9, k))
                assert kept_mask(one, 0.9, k).sum() == min(m, k)


def test_nucleus_boundary_and_ties_on_exact_probabilities():
    # powers of two, so every mass is exact: the token whose higher-ranked mass equals top_p
    # is dropped, the one that crosses it is kept, and ties of the last kept token are kept too
    probs = np.array([2.0**-3, 2.0**-7, 2.0**-1, 2.0**-5, 2.0**-2, 2.0**-7, 2.0**-4, 2.0**-6])
    lp = mx.array(np.log(probs).astype(np.float32))[None]
    assert np.exp(np.array(lp)).sum() == 1.0
    rank = np.argsort(-probs, kind="stable")  # 2, 4, 0, 6, 3, 7, then the tied 1 and 5
    cases = [(0.75, 7, rank[:2]), (0.7500001, 7, rank[:3]), (0.98, 7, rank[:6]),
             (0.99, 8, rank[:8]), (0.99, 3, rank[:3]), (1.0, 2, rank[:2])]
    for top_p, top_k, want in cases:
        expected = np.zeros((1, 8), dtype=bool)
        expected[0, want] = True
        np.testing.assert_array_equal(kept_mask(lp, top_p, top_k), expected, err_msg=f"{top_p=} {top_k=}")
        np.testing.assert_array_equal(mlx_lm_mask(lp, top_p, top_k), expected, err_msg=f"{top_p=} {top_k=}")


@pytest.mark.parametrize("keyed", [False, True])  # MLX's global generator, or an explicit key (sample_groups')
def test_group_sampler_draws_follow_the_kept_distribution(keyed):
    temp, top_p, top_k, n = 0.7, 0.9, 10, 20_000
    lp = random_logprobs(2, 5, 50)[mx.array([0, 3])]
    rows = np.array(lp)
    # row 0 is flat enough that top_k cuts first, row 1 peaked enough that top_p cuts inside the top 10
    assert nucleus_size(rows[0], top_p) > top_k > nucleus_size(rows[1], top_p) > 1
    mx.random.seed(11)
    many = mx.repeat(lp, n, axis=0)
    if keyed:
        got, logq = make_keyed_sampler(temp, top_p, top_k)(many, mx.random.key(11))
        logq = np.array(logq).reshape(2, n)
    else:
        got, logq = make_group_sampler(temp, top_p, top_k)(many), None
    draws = np.array(got).reshape(2, n)
    assert draws.dtype == np.uint32
    for i, (row, got, keep) in enumerate(zip(rows, draws, nucleus_then_top_k(rows, top_p, top_k))):
        counts = np.bincount(got, minlength=row.size)
        assert counts[~keep].sum() == 0
        q = np.where(keep, np.exp(row.astype(np.float64) / temp), 0.0)
        q /= q.sum()
        if logq is not None:  # the keyed draw's log q is the drawn token's under the kept distribution
            np.testing.assert_allclose(logq[i], np.log(q[got]), rtol=1e-5, atol=1e-6)
        sigma = np.sqrt(n * q * (1 - q))
        assert (np.abs(counts - n * q) <= 5 * sigma + 1e-9).all(), (counts[keep], (n * q)[keep])


def test_greedy_and_top_p_only_keep_mlx_lm_sampler():
    lp = random_logprobs(3, 4, 100)
    np.testing.assert_array_equal(np.array(make_group_sampler(0.0, 0.9, 40)(lp)), np.array(mx.argmax(lp, axis=-1)))
    mx.random.seed(4)
    ours = make_group_sampler(1.0, 0.9, 0)(lp)
    mx.random.seed(4)
    np.testing.assert_array_equal(np.array(ours), np.array(make_sampler(temp=1.0, top_p=0.9)(lp)))


def test_untruncated_logprobs_are_the_whole_vocabularys_log_softmax_at_the_temperature():
    from varro.engine.sampling.rollouts import untruncated_logprobs

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4, 50))
    lp1 = logits - np.log(np.exp(logits).sum(-1, keepdims=True))  # what BatchGenerator hands over (T = 1)
    tokens = np.array([0, 7, 49, 3])
    for temp in (0.7, 1.0, 1.3):
        scaled = lp1 / temp
        want = (scaled - np.log(np.exp(scaled).sum(-1, keepdims=True)))[np.arange(4), tokens]
        got = untruncated_logprobs(mx.array(lp1, dtype=mx.float32), mx.array(tokens), temp)
        np.testing.assert_allclose(np.array(got), want, atol=1e-5)
    assert untruncated_logprobs(mx.array(lp1, dtype=mx.float32), mx.array(tokens), 0.0) is None  # greedy


class ManyStops:
    """`tok` with a quarter of the vocabulary ending a completion, so rows finish at different steps and
    leave the decode batch (its filter) while the others decode on."""

    def __init__(self, tok, vocab: int):
        self._tok = tok
        self.eos_token_ids = sorted(set(tok.eos_token_ids) | set(range(vocab // 4, vocab // 2)))

    def decode(self, ids):
        return self._tok.decode(ids)


def mlx_lm_batch_cache(monkeypatch):
    """sample_groups with mlx-lm's own BatchKVCache: every row its own copy of its prompt."""
    monkeypatch.setattr(rollouts, "prompt_caches", lambda cache, *args: cache)


def test_shared_prefix_cache_samples_what_mlx_lm_cache_samples(loaded, monkeypatch):
    """Prompts of different lengths (left padding), rows finishing early (filter, padding trimmed): each
    prompt held once gives the same token ids as mlx-lm's cache and log-probs within float32 rounding (its
    own attention sums in another order); handing attention the joined arrays gives them bit for bit."""
    model, tok = loaded
    stops = ManyStops(tok, model.args.vocab_size)
    texts = ["Forecast the port strike.", "What will the central bank do next week about rates and the currency?",
             "Oil.", "x"]
    prompts = [PromptInput(f"p{i}", chat_prompt_tokens(tok, t)) for i, t in enumerate(texts)]

    def run(**kw):
        groups = sample_groups(model, stops, prompts, group_size=4, max_tokens=24, temp=1.0, top_k=20, seed=3,
                               **kw)
        return [(r.completion_tokens, r.sampler_logprobs, r.policy_logprobs, r.finish_reason)
                for g in groups for r in g]

    shared, sized = run(), run(share_prefix=False)
    monkeypatch.setattr(rollouts, "use_cascade", lambda model: False)
    joined = run()
    monkeypatch.undo()
    mlx_lm_batch_cache(monkeypatch)
    theirs = run()
    lengths = sorted({len(t) for t, *_ in theirs})
    assert len(lengths) > 3 and lengths[-1] == 24  # rows left the batch at several steps, some ran to the end
    assert joined == theirs
    assert sized == theirs
    assert [(t, f) for t, _, _, f in shared] == [(t, f) for t, _, _, f in theirs]
    for column in (1, 2):
        ours = np.concatenate([row[column] for row in shared])
        exact = np.concatenate([row[column] for row in theirs])
        np.testing.assert_allclose(ours, exact, rtol=0, atol=1e-5)


def test_shared_prefix_cache_holds_each_prompt_once(loaded, monkeypatch):
    """Regression (issue 28): mlx-lm's batch cache held each prompt once per row, 256 positions at a time,
    and a finished row's filter copied it; the shared cache holds a group's long prompt once."""
    import gc

    model, tok = loaded
    stops = ManyStops(tok, model.args.vocab_size)
    rng = np.random.default_rng(0)
    prompts = [PromptInput(f"p{i}", rng.integers(0, stops.eos_token_ids[0] - 1, 300).tolist()) for i in range(3)]

    def peak(**kw):
        gc.collect()
        before = mx.get_active_memory()
        mx.reset_peak_memory()
        sample_groups(model, stops, prompts, group_size=8, max_tokens=20, temp=1.0, top_k=20, seed=0, **kw)
        return mx.get_peak_memory() - before

    ours = peak()
    mlx_lm_batch_cache(monkeypatch)
    theirs = peak()
    per_position = 2 * 2 * 2 * 16 * 4  # 2 layers, keys and values, 2 kv heads of 16, float32
    assert theirs >= 24 * (299 + 256) * per_position  # every row its prompt and one 256-position step
    assert ours < 0.5 * theirs
