"""Cadence features against hand-written references, and score_cadence against the base model's logits."""

import math

import mlx.core as mx
import numpy as np
import pytest

from support.helpers import open_policy
from varro.engine.eval.cadence import (FEATURES, cadence_distance, cadence_features, mean_features, score_cadence,
                           template_share, token_surprisal)
from varro.engine.model.loading import lora_modules

# 20 positions: a wavy baseline with spikes at 3, 9 and 19 (the last token).
BASE = [2.0, 2.3, 1.8, 2.1, 1.9, 2.2, 2.0, 1.7, 2.4, 2.1, 1.9, 2.0, 2.2, 1.8, 2.3, 2.1, 1.9, 2.0, 2.2, 1.8]
SPIKES = (3, 9, 19)
ENTROPY = [3.0 + 0.1 * i for i in range(20)]


def with_spikes(positions, height=8.0):
    s = list(BASE)
    for p in positions:
        s[p] = height
    return s


def reference(s, h):
    """Plain-Python reference of the four surprisal features."""
    n = len(s)
    mean = sum(s) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in s) / n)
    spikes = [i for i, x in enumerate(s) if x > mean + std]
    gaps = [b - a for a, b in zip(spikes, spikes[1:])]
    drops = [h[i] - h[i + 1] for i in spikes if i + 1 < n]
    return {
        "mean_surprisal": mean,
        "spike_rate": 100 * len(spikes) / n,
        "spike_gap": sum(gaps) / len(gaps) if gaps else None,
        "entropy_drop": sum(drops) / len(drops) if drops else None,
    }, spikes


def assert_features_equal(got, want):
    assert set(want) <= set(got)
    for k, v in want.items():
        if v is None:
            assert got[k] is None, k
        else:
            assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


def test_three_spikes_one_at_the_last_token():
    s, h = with_spikes(SPIKES), list(ENTROPY)
    h[4], h[10] = 1.0, 0.5  # the entropy falls right after the first two spikes
    want, spikes = reference(s, h)
    assert spikes == list(SPIKES)  # the hand-made sequence really has the spikes it claims
    got = cadence_features(np.array(s), np.array(h), "")
    assert_features_equal(got, want)
    # and by hand: 3 spikes in 20 tokens, gaps 6 and 10, drops 3.3-1.0 and 3.9-0.5 (19 has no next token)
    assert got["spike_rate"] == pytest.approx(15.0)
    assert got["spike_gap"] == pytest.approx(8.0)
    assert got["entropy_drop"] == pytest.approx(((3.3 - 1.0) + (3.9 - 0.5)) / 2)
    assert got["mean_surprisal"] == pytest.approx((sum(BASE) - BASE[3] - BASE[9] - BASE[19] + 24) / 20)


def test_no_spike_in_a_flat_text():
    got = cadence_features(np.full(20, 2.5), np.array(ENTROPY), "")
    assert got["spike_rate"] == 0.0 and got["spike_gap"] is None and got["entropy_drop"] is None
    assert got["mean_surprisal"] == pytest.approx(2.5)


def test_one_spike_has_a_drop_but_no_gap():
    s, h = with_spikes([5]), np.array(ENTROPY)
    want, spikes = reference(s, h)
    assert spikes == [5]
    got = cadence_features(np.array(s), h, "")
    assert_features_equal(got, want)
    assert got["spike_gap"] is None and got["entropy_drop"] == pytest.approx(-0.1)
    assert got["spike_rate"] == pytest.approx(5.0)


def test_only_spike_at_the_last_token_has_no_drop():
    s = with_spikes([19])
    got = cadence_features(np.array(s), np.array(ENTROPY), "")
    assert got["spike_rate"] == pytest.approx(5.0)
    assert got["entropy_drop"] is None and got["spike_gap"] is None


def test_empty_surprisal_and_mismatched_arrays():
    got = cadence_features(np.zeros(0), np.zeros(0), "")
    assert all(got[k] is None for k in FEATURES)
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        cadence_features(np.zeros(3), np.zeros(2), "x")


def test_sentence_cv_and_hapax_ratio_by_hand():
    text = "The cat saw the dog. And the Cat ran. It was a very long and tiring day for everyone!"
    got = cadence_features(np.zeros(0), np.zeros(0), text)
    lengths = np.array([5.0, 4.0, 10.0])
    assert got["sentence_cv"] == pytest.approx(np.sqrt(((lengths - lengths.mean()) ** 2).mean()) / lengths.mean())
    # types: the x3, cat x2, and x2, the other 12 words once each -> 12 of 15 types
    assert got["hapax_ratio"] == pytest.approx(12 / 15)
    one = cadence_features(np.zeros(0), np.zeros(0), "Just one sentence here")
    assert one["sentence_cv"] is None and one["hapax_ratio"] == pytest.approx(1.0)
    none = cadence_features(np.zeros(0), np.zeros(0), "... !")
    assert none["sentence_cv"] is None and none["hapax_ratio"] is None


def direct(model, seq, start):
    """-log_softmax of the full pass at seq[start:], and the entropy there, in float64 NumPy."""
    logits = np.array(model(mx.array([seq], dtype=mx.int32)).astype(mx.float32), dtype=np.float64)[0]  # (T, V)
    logits = logits[start - 1 : len(seq) - 1]
    logits = logits - logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    s = -logp[np.arange(len(seq) - start), seq[start:]]
    h = -(np.exp(logp) * logp).sum(axis=-1)
    return s, h


TEXTS = ["The port strike ended on Tuesday. Prices rose again, and the bank waited.",
         "Central bank officials said little. The market moved anyway!"]


@pytest.fixture(scope="module")
def policy(tiny_model_path, tmp_path_factory):
    return open_policy(tiny_model_path, tmp_path_factory.mktemp("run"))


def test_score_cadence_matches_the_logits_without_and_with_a_prompt(policy):
    model, tok = policy.model, policy.tokenizer
    prompt = tok.encode("Write about prices.", add_special_tokens=False)
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        for p, start in (([], 1), (prompt, len(prompt))):
            s, h = token_surprisal(model, ids, p)
            want_s, want_h = direct(model, p + ids, start)
            assert s.shape == (len(ids) - (0 if p else 1),)
            np.testing.assert_allclose(s, want_s, atol=1e-4, rtol=1e-4)
            np.testing.assert_allclose(h, want_h, atol=1e-4, rtol=1e-4)
    for p, start in ((None, 1), (prompt, len(prompt))):
        got = score_cadence(model, tok, TEXTS + [""], prompt_tokens=p)
        for text, feats in zip(TEXTS, got):
            ids = tok.encode(text, add_special_tokens=False)
            want_s, want_h = direct(model, (p or []) + ids, start)
            want = cadence_features(want_s, want_h, text)
            for k in FEATURES:
                assert feats[k] == pytest.approx(want[k], abs=1e-4, rel=1e-4), k
            assert feats["mean_surprisal"] > 0
        assert all(got[-1][k] is None for k in FEATURES)


def test_score_cadence_scores_the_base_model_not_the_adapters(policy):
    model, tok = policy.model, policy.tokenizer
    before = score_cadence(model, tok, TEXTS)
    ids = mx.array([tok.encode(TEXTS[0], add_special_tokens=False)], dtype=mx.int32)
    base_logits = np.array(model(ids))
    layers = lora_modules(model)
    saved = [m.lora_b for m in layers]
    try:
        for i, m in enumerate(layers):
            m.lora_b = mx.random.normal(m.lora_b.shape, key=mx.random.key(i)) * 0.5
        tuned_logits = np.array(model(ids))
        assert np.abs(tuned_logits - base_logits).max() > 1e-2  # the adapters really change the model
        after = score_cadence(model, tok, TEXTS)
        for b, a in zip(before, after):
            for k in FEATURES:
                assert a[k] == pytest.approx(b[k], abs=1e-5), k
        # scoring switched the adapters back on afterwards
        np.testing.assert_allclose(np.array(model(ids)), tuned_logits, atol=1e-6)
    finally:
        for m, b in zip(layers, saved):
            m.lora_b = b


def test_cadence_distance_by_hand():
    human = [{"mean_surprisal": 1.0, "spike_rate": 4.0, "hapax_ratio": 0.5, "spike_gap": 10.0},
             {"mean_surprisal": 2.0, "spike_rate": 4.0, "hapax_ratio": 0.7, "spike_gap": 12.0},
             {"mean_surprisal": 3.0, "spike_rate": 4.0, "hapax_ratio": None, "spike_gap": 14.0}]
    feats = {"mean_surprisal": 3.0, "spike_rate": 9.0, "hapax_ratio": 0.9, "spike_gap": None}
    # mean_surprisal: z = (3 - 2) / sqrt(2/3); spike_rate: human std 0, skipped; hapax: z = (0.9 - 0.6) / 0.1
    want = math.sqrt((1.5 + 9.0) / 2)
    keys = ("mean_surprisal", "spike_rate", "hapax_ratio", "spike_gap")
    assert cadence_distance(feats, human, keys) == pytest.approx(want)
    assert cadence_distance({"mean_surprisal": 2.0}, human, keys) == pytest.approx(0.0)
    assert cadence_distance({"spike_rate": 9.0, "spike_gap": None}, human, keys) is None
    day = mean_features([feats, {"mean_surprisal": 1.0, "spike_rate": None, "hapax_ratio": 0.5, "spike_gap": None}],
                        keys)
    assert day == pytest.approx({"mean_surprisal": 2.0, "spike_rate": 9.0, "hapax_ratio": 0.7, "spike_gap": None})


def unit(rng, n, d=256):
    v = rng.normal(size=(n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_template_share_one_text_for_every_prompt_and_distinct_texts():
    rng = np.random.default_rng(0)
    ids = [p for p in "abc" for _ in range(4)]
    same = np.repeat(unit(rng, 1), 12, axis=0)
    assert template_share(same, ids) == 1.0
    assert template_share(unit(rng, 12), ids) == 0.0
    assert template_share(same, ["a"] * 12) is None


def test_template_share_counts_only_other_prompts():
    rng = np.random.default_rng(1)
    u = unit(rng, 4)
    # a and b share u[0]; a repeats u[1] within itself, which must not count
    vecs = np.stack([u[0], u[1], u[1], u[0], u[2], u[3]])
    ids = ["a", "a", "a", "b", "b", "b"]
    assert template_share(vecs, ids) == pytest.approx(2 / 6)
    near = np.stack([u[0], u[0] * 0.8 + u[1] * 0.6])  # cosine 0.8 (u nearly orthogonal in 256 dims)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    cos = float(near[0] @ near[1])
    assert template_share(near, ["a", "b"], threshold=cos - 1e-3) == 1.0
    assert template_share(near, ["a", "b"], threshold=cos + 1e-3) == 0.0
    with pytest.raises(ValueError):
        template_share(vecs, ids[:5])
