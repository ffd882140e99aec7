"""The output head taken a vocabulary chunk at a time (varro.engine.model.head) against the whole
vocabulary's log-softmax: its values, its custom gradient, and a training day through each."""

import copy

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from support.helpers import assert_step_rows_equal, scored_groups, tiny_config
from varro.engine.model.head import Head, chunked_logprobs, exp, output_head
from varro.engine.run.policy import Policy

N, L, D, V, T = 3, 5, 16, 50, 0.7
CHUNKS = [1, 7, 10, 50, 64]  # one row; 7 does not divide V; 10 does; all of V; more than V


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def arrays(seed=0):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(N, L, D)).astype(np.float32)
    weight = (rng.normal(size=(V, D)) * 0.8).astype(np.float32)  # logits of a few units: a peaked softmax
    targets = rng.integers(0, V, size=(N, L)).astype(np.int32)
    targets[0, 0], targets[0, 1] = 0, V - 1  # the first and the last row of the weight
    return hidden, weight, targets


def plain_logprobs(hidden, weight, targets):
    """The whole vocabulary's log-softmax at T, as the trainer's plain path takes it."""
    lp = nn.log_softmax((hidden @ weight.T) * (1.0 / T), axis=-1)
    return mx.take_along_axis(lp, targets[..., None], axis=-1).squeeze(-1)


def test_the_sweeps_exp_is_e_to_the_x_within_a_few_ulps():
    x = np.concatenate([np.linspace(-87, 88, 200_001), [0.0, -1e-8, 1e-8]]).astype(np.float32)
    got = np.array(exp(mx.array(x)))
    want = np.exp(x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=5e-6)  # the product x log2(e) is rounded once: |x| ulps of it
    near = np.abs(x) < 20  # where a softmax's mass is
    np.testing.assert_allclose(got[near], want[near], rtol=1e-6)
    assert np.array(exp(mx.array([-np.inf, np.inf, np.nan]))).tolist()[:2] == [0.0, np.inf]
    assert np.isnan(np.array(exp(mx.array([np.nan])))[0])


@pytest.mark.parametrize("chunk", CHUNKS)
def test_values_and_entropy_equal_a_numpy_reference(chunk):
    h, w, t = arrays()
    lp = np_log_softmax(h.astype(np.float64) @ w.T.astype(np.float64) / T)  # (N, L, V)
    want = np.take_along_axis(lp, t[..., None], axis=-1)[..., 0]
    want_entropy = -(np.exp(lp) * lp).sum(axis=-1)
    got, entropy = chunked_logprobs(mx.array(h), Head((mx.array(w),)), mx.array(t), T, chunk, with_entropy=True)
    np.testing.assert_allclose(np.array(got), want, atol=1e-5)
    np.testing.assert_allclose(np.array(entropy), want_entropy, atol=1e-5)
    assert want_entropy.min() < 1.0 < want_entropy.max()  # peaked and flat positions both occur


@pytest.mark.parametrize("chunk", CHUNKS)
def test_gradients_equal_the_whole_vocabularys(chunk):
    h, w, t = (mx.array(a) for a in arrays(1))
    g = mx.array(np.random.default_rng(2).normal(size=(N, L)).astype(np.float32))  # an arbitrary cotangent

    def chunked(h, w):
        return (chunked_logprobs(h, Head((w,), trains=True), t, T, chunk) * g).sum()

    def plain(h, w):
        return (plain_logprobs(h, w, t) * g).sum()

    got = mx.grad(chunked, argnums=(0, 1))(h, w)
    want = mx.grad(plain, argnums=(0, 1))(h, w)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-6)
        assert np.abs(np.array(b)).max() > 1e-2  # a gradient worth comparing


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("for_grad", [False, True])
def test_a_frozen_heads_gradient_by_either_route(chunk, for_grad):
    """A frozen head's hidden-state gradient, from E_p[W] gathered in the forward (for_grad) or from a
    second sweep, is the whole vocabulary's; its weight's gradient is zero."""
    h, w, t = (mx.array(a) for a in arrays(3))
    g = mx.array(np.random.default_rng(4).normal(size=(N, L)).astype(np.float32))

    def chunked(h, w):
        return (chunked_logprobs(h, Head((w,)), t, T, chunk, for_grad=for_grad) * g).sum()

    got, got_w = mx.grad(chunked, argnums=(0, 1))(h, w)
    want = mx.grad(lambda h: (plain_logprobs(h, w, t) * g).sum())(h)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-4, atol=1e-6)
    assert not np.array(got_w).any()


def small_model(tie: bool, quantize: bool):
    from mlx_lm.models.qwen3 import Model, ModelArgs

    args = ModelArgs(model_type="qwen3", hidden_size=64, num_hidden_layers=1, intermediate_size=128,
                     num_attention_heads=4, rms_norm_eps=1e-6, vocab_size=300, num_key_value_heads=2,
                     max_position_embeddings=256, head_dim=16, tie_word_embeddings=tie, rope_theta=1e4)
    mx.random.seed(4)
    model = Model(args)
    if quantize:
        nn.quantize(model, group_size=32, bits=4)
    return model


@pytest.mark.parametrize("tie,quantize", [(True, False), (False, False), (True, True), (False, True)])
@pytest.mark.parametrize("for_grad", [False, True])
def test_the_models_own_head_tied_or_not_quantized_or_not(tie, quantize, for_grad):
    model = small_model(tie, quantize)
    head = output_head(model)
    assert (head.quant is not None) == quantize and head.trains == (not quantize) and head.vocab == 300
    inputs = mx.random.randint(0, 300, (2, 6))
    targets = mx.random.randint(0, 300, (2, 6))
    hidden = model.model(inputs)

    def plain(h):
        logits = model.model.embed_tokens.as_linear(h) if tie else model.lm_head(h)
        lp = nn.log_softmax(logits.astype(mx.float32) * (1.0 / T), axis=-1)
        return mx.take_along_axis(lp, targets[..., None], axis=-1).squeeze(-1)

    np.testing.assert_allclose(np.array(chunked_logprobs(hidden, head, targets, T, 64)), np.array(plain(hidden)),
                               atol=1e-5)
    np.testing.assert_allclose(np.array(plain(hidden)), np.array(
        mx.take_along_axis(nn.log_softmax(model(inputs) * (1.0 / T), axis=-1), targets[..., None], axis=-1)
        .squeeze(-1)), atol=1e-5)  # and `plain` is the model's own forward
    frozen = Head(head.arrays, head.quant)  # the embedding as LoRA leaves it
    got = mx.grad(lambda h: chunked_logprobs(h, frozen, targets, T, 64, for_grad=for_grad).sum())(hidden)
    want = mx.grad(lambda h: plain(h).sum())(hidden)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-4, atol=1e-6)


def test_a_head_with_adapters_is_left_to_the_plain_path():
    from mlx_lm.tuner.lora import LoRALinear

    model = small_model(tie=False, quantize=False)
    model.lm_head = LoRALinear.from_base(model.lm_head, r=4)
    assert output_head(model) is None


def test_the_sweep_never_holds_the_whole_vocabularys_logits():
    """The chunks run one after another (mx.depends orders them): without that, MLX computes every
    chunk's logits before the first reduction and the peak is the whole vocabulary's."""
    rng = np.random.default_rng(5)
    n, length, vocab, chunk = 2, 64, 65536, 1024
    h = mx.array(rng.normal(size=(n, length, 64)).astype(np.float32))
    w = mx.array(rng.normal(size=(vocab, 64)).astype(np.float32))
    t = mx.array(rng.integers(0, vocab, size=(n, length)).astype(np.int32))
    whole = n * length * vocab * 4
    mx.eval(h, w, t)

    def peak(fn):
        mx.reset_peak_memory()
        before = mx.get_active_memory()
        mx.eval(fn())
        return mx.get_peak_memory() - before

    assert peak(lambda: chunked_logprobs(h, Head((w,)), t, T, chunk, with_entropy=True)) < whole / 4
    for for_grad in (False, True):
        assert peak(lambda: mx.grad(lambda h: chunked_logprobs(h, Head((w,)), t, T, chunk, for_grad=for_grad)
                                    .sum())(h)) < whole / 4
    assert peak(lambda: plain_logprobs(h, w, t)) >= whole  # the plain path does hold them


def day(tmp_path, model_path, name, head_chunk, fine_tune="lora", groups=None):
    """(policy, step rows, groups) of one training day on the tiny model with the head in `head_chunk` rows."""
    cfg = tiny_config(model_path, minibatches=2, beta=0.05, learning_rate=2e-2, micro_batch=3)
    cfg.model.fine_tune = fine_tune
    pol = Policy.open(cfg, tmp_path / name)
    pol.trainer.head_chunk = head_chunk
    groups = groups if groups is not None else scored_groups(pol, seed=7)
    rows = pol.trainer.train_day(copy.deepcopy(groups))
    return pol, rows, groups


@pytest.mark.parametrize("fine_tune", ["lora", "full"])
def test_a_training_day_equals_the_whole_vocabulary_heads(tiny_model_path, tmp_path, fine_tune):
    """Every metric of every step row, and the weights the day ends with, are those of the plain head (the
    whole vocabulary's logits, autodiff's gradient) up to float32 rounding: the pi_old and reference
    passes, the update's loss, ratio, KL and entropy, the custom gradient (of the tied embedding too, with
    full fine-tuning), and the end-of-day health."""
    plain, want, groups = day(tmp_path, tiny_model_path, "plain", 0, fine_tune)
    chunked, got, _ = day(tmp_path, tiny_model_path, "chunked", 100, fine_tune, groups)  # V 1024: 11 chunks
    assert output_head(chunked.model) is not None
    assert len(got) == len(want) == 2 and not any(r["skipped"] for r in got)
    assert abs(want[1]["ratio_mean"] - 1.0) > 1e-4 and want[1]["kl"] > 1e-6  # the second step is off-policy
    assert want[1]["kl_after"] > 1e-5 and want[1]["kl_after_k3"] > 1e-5  # the health pass has a KL to compare
    assert_step_rows_equal(got, want)
    after, before = dict(tree_flatten(chunked.model.parameters())), dict(tree_flatten(plain.model.parameters()))
    moved = dict(tree_flatten(plain.model.trainable_parameters()))
    assert after.keys() == before.keys()
    for k in moved:  # Adam divides by the gradient's own size: a near-zero entry's rounding can move it by a
        # share of a whole step, so the weights agree to 5e-3 of the learning rate (2e-2), where a sign or
        # scale error in the head's gradient moves them by whole steps
        np.testing.assert_allclose(np.array(after[k]), np.array(before[k]), rtol=1e-4, atol=1e-4, err_msg=k)
    if fine_tune == "full":
        assert "model.embed_tokens.weight" in moved
