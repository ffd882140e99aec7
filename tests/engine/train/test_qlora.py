"""QLoRA and bf16 bases: the base keeps its own precision, the adapters and log-probs are float32."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from support.helpers import open_policy, scored_groups, tiny_config
from varro.engine.core.errors import UserError
from varro.engine.model.loading import adapters_off, lora_modules, quantized_modules
from varro.engine.run.policy import Policy
from varro.engine.train.batching import make_chunks
from varro.engine.train.errors import TrainingError
from varro.engine.train.logprobs import token_logprobs


@pytest.fixture(scope="module")
def q4_path(tiny_model_path, tmp_path_factory):
    """A 4-bit copy of the tiny model (bf16 scales, as mlx-community's are), made offline."""
    from mlx_lm import convert

    out = tmp_path_factory.mktemp("q4") / "tiny-4bit"
    convert(hf_path=str(tiny_model_path), mlx_path=str(out), dtype="bfloat16", quantize=True, q_bits=4,
            q_group_size=32)
    return out


@pytest.fixture(scope="module")
def bf16_path(tiny_model_path, tmp_path_factory):
    from mlx_lm import convert

    out = tmp_path_factory.mktemp("bf16") / "tiny-bf16"
    convert(hf_path=str(tiny_model_path), mlx_path=str(out), dtype="bfloat16")
    return out


def frozen(model) -> dict[str, mx.array]:
    trainable = {k for k, _ in tree_flatten(model.trainable_parameters())}
    return {k: a for k, a in tree_flatten(model.parameters()) if k not in trainable}


def prompt_logits(model, tokens: list[int]) -> np.ndarray:
    return np.array(model(mx.array([tokens])).astype(mx.float32))


def test_qlora_samples_trains_and_its_checkpoint_loads_in_mlx_lm(q4_path, tmp_path):
    from mlx_lm import load

    policy = open_policy(q4_path, tmp_path / "run", minibatches=1)
    model = policy.model
    assert quantized_modules(model), "the 4-bit base was dequantized"
    assert {type(m.linear) for m in lora_modules(model)} == {nn.QuantizedLinear}
    base_before = frozen(model)  # MLX arrays are immutable: an update can only replace them
    assert any(a.dtype == mx.uint32 for a in base_before.values())

    groups = scored_groups(policy, seed=0)
    rows = [r for g in groups for r in g]
    assert all(len(r.sampler_logprobs) == len(r.completion_tokens) for r in rows)
    (row,) = policy.trainer.train_day(groups)
    assert row["skipped"] == 0 and row["ratio_mean"] == pytest.approx(1.0, abs=1e-6)  # on-policy step

    # the update moved the adapters only; the base is bit-identical and still 4-bit
    assert all(float(mx.abs(m.lora_b).max()) > 0 for m in lora_modules(model))
    after = frozen(model)
    assert after.keys() == base_before.keys()
    for k, a in after.items():
        assert a.dtype == base_before[k].dtype and mx.array_equal(a, base_before[k]).item(), k
    assert quantized_modules(model)

    # the reference (adapters off) is the 4-bit base's own log-probs, with the adapters now non-zero
    base, _ = load(str(q4_path))
    chunk = make_chunks(rows[:8], policy.trainer.pad_id)[0]
    inputs = mx.concatenate([mx.broadcast_to(chunk.head, (chunk.rows, chunk.head.shape[1])), chunk.inputs], axis=1)
    targets = mx.concatenate([inputs[:, 1:], chunk.targets[:, -1:]], axis=1)
    with adapters_off(model):
        ref = np.array(token_logprobs(model, inputs, targets))
    own = np.array(token_logprobs(base, inputs, targets))
    np.testing.assert_array_equal(ref, own)
    assert not np.allclose(np.array(token_logprobs(model, inputs, targets)), own, atol=1e-3)

    # the checkpoint loads onto the 4-bit base in mlx-lm and computes the policy's logits
    ckpt = policy.save("2026-01-05")
    loaded, _ = load(str(q4_path), adapter_path=str(ckpt))
    tokens = policy.prompt_tokens("Write about the port strike.")
    mine, theirs = prompt_logits(model, tokens), prompt_logits(loaded, tokens)
    assert np.abs(mine - prompt_logits(base, tokens)).max() > 0.1  # the adapters change the logits
    np.testing.assert_allclose(theirs, mine, atol=1e-5)


def test_full_fine_tuning_of_a_quantized_base_is_refused_in_one_line(q4_path, tmp_path):
    cfg = tiny_config(q4_path)
    cfg.model.fine_tune = "full"
    with pytest.raises(TrainingError) as err:
        Policy.open(cfg, tmp_path / "run")
    message = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in message
    assert str(q4_path) in message and "--fine-tune lora" in message and "non-quantized" in message


def test_bf16_base_stays_bf16_with_float32_adapters_optimizer_and_sampler_logprobs(bf16_path, tmp_path):
    cfg = tiny_config(bf16_path, minibatches=1)
    cfg.sampling.profile = "loose"  # no truncation: the sampler/trainer gap is numerics alone
    policy = Policy.open(cfg, tmp_path / "run")
    base = frozen(policy.model)
    assert base and {a.dtype for a in base.values()} == {mx.bfloat16}
    lora = tree_flatten(policy.model.trainable_parameters())
    assert lora and {a.dtype for _, a in lora} == {mx.float32}
    groups = scored_groups(policy, seed=0)
    (row,) = policy.trainer.train_day(groups)
    assert {a.dtype for _, a in tree_flatten(policy.trainer.optimizer.state) if a.ndim} == {mx.float32}
    assert {a.dtype for _, a in tree_flatten(policy.model.trainable_parameters())} == {mx.float32}
    assert {a.dtype for a in frozen(policy.model).values()} == {mx.bfloat16}
    # the sampler's log q is taken in float32 like the trainer's pass: bf16 log-softmax gave ~2e-4 per token
    assert abs(row["sampler_gap"]) < 1e-6
