"""The memory guard's estimate, its choices and refusals (varro.engine.model.memory), and the swap watchdog
(varro.engine.train.watchdog)."""

from dataclasses import replace
from types import SimpleNamespace

import mlx.core as mx
import pytest

from support.helpers import PROMPTS, open_policy, scored_groups, tiny_config, varro_step
from varro.engine.model import memory
from varro.engine import store as dbm
from varro.engine.train import watchdog
from varro.engine.run.checkpoints import list_checkpoints
from varro.engine.core.config import ModelConfig
from varro.engine.embed.embedders import HashEmbedder
from varro.engine.model.memory import (MemoryGuardError, ModelShape, cache_decode_batch, plan_decode_batch,
                                       plan_micro_batch, sampling_bytes, training_bytes, day_states_bytes)
from varro.engine.model.loading import apply_lora
from varro.engine.train.trainer import Trainer
from varro.engine.train.watchdog import SwapError

QWEN3_06B = SimpleNamespace(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                            head_dim=128, intermediate_size=3072, vocab_size=151936)
MiB = 2**20


ADAPTER_INPUTS = 3 * 1024 + 2048 + 2 * 1024 + 3072  # q, k, v, gate, up take the hidden state; o 16 x 128; down 3072


def qwen3_shape(weight_bytes=1_500_000_000, trainable_bytes=40_000_000, dtype_bytes=2):
    """Qwen3-0.6B with LoRA on every linear of the last 16 blocks, the default."""
    return ModelShape.from_args(QWEN3_06B, weight_bytes, trainable_bytes, dtype_bytes, trained_layers=16,
                                adapter_inputs=ADAPTER_INPUTS)


def test_qwen3_06b_sampling_estimate_by_hand():
    s = qwen3_shape()
    # 4 prompts x 8 = 32 rows: each prompt's 300 positions once, each row's 181 completion positions (mlx-lm
    # decodes one step ahead), one layer's gathered prompts and concatenation (2 x 32 x 481), the last
    # prompt's prefill at 512 (2 x 256)
    kv_per_token = 28 * 2 * 8 * 128 * 2  # 114688 bytes: bf16 keys and values of every layer
    assert kv_per_token == 114_688
    kv = (4 * 300 + 32 * 181) * kv_per_token + 2 * 32 * 481 * kv_per_token // 28 + 512 * kv_per_token
    logits = 32 * 151936 * (4 * 4 + 2 + 4)  # four float32 copies, the bf16 logits and their float32 cast
    prefill = 300 * (3 * 3072 + 4 * 1024) * 2
    assert sampling_bytes(s, 4, 8, 300, 180) == 1_500_000_000 + kv + logits + prefill
    assert sampling_bytes(s, 4, 8, 300, 180) == 2_601_660_160  # ~2.6 GB, 0.99 GB of it the KV cache
    # mlx-lm's batch cache (a model whose layers are not all plain KVCache): 556 positions a row (300, then
    # one 256-position step), twice (a finished row's filtered copy), every prompt's prefill
    mlx_lm = replace(s, shared_prefix=False)
    assert sampling_bytes(mlx_lm, 4, 8, 300, 180) - sampling_bytes(s, 4, 8, 300, 180) \
        == 2 * 32 * 556 * kv_per_token + 4 * 512 * kv_per_token - kv


def test_qwen3_06b_training_estimate_by_hand():
    s = qwen3_shape()
    state = 8 * 40_000_000
    # two rows' completions and the prompt through the 16 trained blocks: 32 bf16 values a hidden unit,
    # and the float32 copy each adapter's first product makes of its input
    assert ADAPTER_INPUTS == 10_240
    acts = (2 * 180 + 300) * 16 * (1024 * 32 * 2 + 10_240 * 4)
    attn = 2 * 16 * 180 * 480 * 16 * 4
    # the output head 4096 vocabulary rows at a time: 10 float32 arrays of its chunk, a bf16 one's cast and gradient
    logits = 2 * 180 * 4096 * (4 * 10 + 2 * 2)
    prompt_kv = 2 * 300 * 28 * 2 * 8 * 128 * 4
    assert training_bytes(s, 2, 8, 300, 180) == 1_500_000_000 + state + acts + attn + logits + prompt_kv
    assert training_bytes(s, 2, 8, 300, 180) == 3_324_051_200
    # without a chunked head (one it cannot chunk): the whole vocabulary's logits, log-softmax, gradient
    whole = ModelShape.from_args(QWEN3_06B, 1_500_000_000, 40_000_000, 2, trained_layers=16,
                                 adapter_inputs=ADAPTER_INPUTS, head_chunk=0)
    assert training_bytes(whole, 2, 8, 300, 180) - training_bytes(s, 2, 8, 300, 180) == \
        2 * 180 * 151936 * (4 * 3 + 2 * 2) - logits
    # a float32 base makes no copies and casts no logits: its saved values are float32
    f32 = qwen3_shape(dtype_bytes=4)
    acts32, logits32 = (2 * 180 + 300) * 16 * 1024 * 32 * 4, 2 * 180 * 4096 * 4 * 10
    assert training_bytes(f32, 2, 8, 300, 180) == 1_500_000_000 + state + acts32 + attn + logits32 + prompt_kv
    # full fine-tuning (trained_layers None) runs the backward through all 28 blocks
    full = ModelShape.from_args(QWEN3_06B, 1_500_000_000, 40_000_000, 4)
    assert training_bytes(full, 2, 8, 300, 180) - training_bytes(f32, 2, 8, 300, 180) == \
        (2 * 180 + 300) * 12 * 1024 * 32 * 4 + 2 * 16 * 180 * 480 * 12 * 4
    # with short completions and large groups the no-gradient passes are the larger: the pi_old pass takes
    # all 64 rows at once (its head 4096 vocabulary rows at a time, 6 float32 arrays of them and the bf16
    # logits' cast); the health pass, 12 arrays of two heads' chunks, only the 44 rows whose transients fit 512 MiB
    block = (3 * 3072 + 4 * 1024) * 2 + 16 * 60 * 4  # the MLP's values and the attention scores, per position
    pi_old = 64 * 50 * (4096 * (4 * 6 + 2 * 2) + block)
    health = 44 * 50 * (4096 * (4 * 12 + 2 * 2) + block)
    assert 45 * 50 * (4096 * (4 * 12 + 2 * 2) + block) > 512 * MiB >= health > pi_old
    assert memory.pass_bytes(s, 64, 10, 50) == health
    assert training_bytes(s, 1, 64, 10, 50) == 1_500_000_000 + state + health


def test_tiny_model_shape_from_its_parameters(tiny_model_path, tmp_path):
    policy = open_policy(tiny_model_path, tmp_path / "run")
    s = ModelShape.from_model(policy.model)
    v = policy.model.args.vocab_size
    per_layer = 64 * 64 * 2 + 64 * 32 * 2 + 16 * 2 + 64 * 2 + 64 * 128 * 3  # q o, k v, q/k norms, norms, MLP
    lora = 2 * 8 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)  # rank 8 on the 7 linears of 2 blocks
    assert (s.hidden, s.layers, s.heads, s.kv_heads, s.head_dim, s.intermediate) == (64, 2, 4, 2, 16, 128)
    assert s.weight_bytes == 4 * (v * 64 + 2 * per_layer + 64 + lora)  # float32, tied embeddings
    assert s.trainable_bytes == 4 * lora and s.dtype_bytes == 4
    assert (s.trained_layers, s.adapter_inputs) == (2, 64 * 3 + 64 + 64 * 2 + 128)  # both blocks, 7 linears
    kv_per_token = 2 * 2 * 2 * 16 * 4  # 2 layers, 2 kv heads of 16, float32
    assert s.shared_prefix and s.cascade  # plain KVCache layers: each prompt held once, attended in place
    # 3 prompts of 33 positions, 24 rows of 12 + 1; one layer's cascade attention: 3 score blocks of 24 rows x
    # 4 heads x 46 positions and the rows' completions copied (2 x 24 x 13); the last prefill at 256 positions
    assert sampling_bytes(s, 3, 8, 33, 12) == s.weight_bytes + (3 * 33 + 24 * 13) * kv_per_token \
        + 3 * 24 * 4 * 46 * 4 + 2 * 24 * 13 * kv_per_token // 2 + 256 * kv_per_token + 24 * v * (4 * 4 + 4) \
        + 33 * (3 * 128 + 4 * 64) * 4


def test_a_bf16_base_is_counted_in_its_own_bytes():
    from mlx_lm.models.qwen3 import Model, ModelArgs

    args = ModelArgs(model_type="qwen3", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                     num_attention_heads=4, rms_norm_eps=1e-6, vocab_size=512, num_key_value_heads=2,
                     max_position_embeddings=256, head_dim=16, tie_word_embeddings=True, rope_theta=1e4)
    model = Model(args)
    model.set_dtype(mx.bfloat16)
    s = ModelShape.from_model(model)
    per_layer = 64 * 64 * 2 + 64 * 32 * 2 + 16 * 2 + 64 * 2 + 64 * 128 * 3
    weights = 2 * (512 * 64 + 2 * per_layer + 64)
    assert (s.weight_bytes, s.trainable_bytes, s.dtype_bytes) == (weights, weights, 2)  # full fine-tuning
    assert (s.trained_layers, s.adapter_inputs) == (2, 0)  # the embedding trains: every block
    model.freeze()
    assert ModelShape.from_model(model).trainable_bytes == 0
    apply_lora(model, ModelConfig(lora_layers=1))  # float32 adapters on the top block only
    lora = ModelShape.from_model(model)
    assert (lora.trained_layers, lora.adapter_inputs, lora.dtype_bytes) == (1, 64 * 3 + 64 + 64 * 2 + 128, 2)
    assert lora.trainable_bytes == 4 * 8 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)
    # its KV cache takes half the float32 one's bytes
    assert s.kv_bytes_per_token() == 2 * 2 * 2 * 16 * 2


def test_guard_picks_a_smaller_decode_batch():
    s = qwen3_shape()
    budget = sampling_bytes(s, 3, 8, 300, 180)
    assert plan_decode_batch(s, 10, 8, 300, 180, budget) == 3
    assert plan_decode_batch(s, 10, 8, 300, 180, budget - 1) == 2
    assert plan_decode_batch(s, 2, 8, 300, 180, budget) == 2  # all fit
    assert plan_decode_batch(s, 10, 8, 300, 180, None) == 10  # no reading: no guard


def test_decode_cache_ceiling_bounds_the_decode_batch():
    bf16, f32 = qwen3_shape(), qwen3_shape(dtype_bytes=4)
    # a night's longest Varro prompt, 210 tokens: a group's bf16 cache holds it once and 8 completions of
    # 180 (+ 1), with one layer's attention inputs; the last prompt's prefill (256) comes once
    per_prompt = (210 + 8 * 181) * 114_688 + 2 * 8 * 391 * 114_688 // 28  # 0.21 GB
    prefill = 256 * 114_688
    assert cache_decode_batch(bf16, 32, 8, 210, 180, 2.0) == 9  # 1.95 GB; 10 would take 2.17
    assert 9 * per_prompt + prefill <= 2.0e9 < 10 * per_prompt + prefill
    assert cache_decode_batch(bf16, 32, 8, 210, 180, 0) == 32  # no ceiling
    assert cache_decode_batch(bf16, 1, 8, 210, 180, 2.0) == 1
    assert cache_decode_batch(bf16, 32, 8, 300, 180, 2.0) == 8  # 0.23 GB a prompt at 300
    assert cache_decode_batch(f32, 32, 8, 210, 180, 2.0) == 4  # 0.43 GB a prompt in float32
    assert cache_decode_batch(f32, 32, 8, 210, 180, 0.1) == 1  # one prompt always decodes


def test_sampling_plan_applies_the_ceiling_without_the_guard(tiny_model_path, tmp_path):
    policy = open_policy(tiny_model_path, tmp_path)
    shape = ModelShape.from_model(policy.model)
    two, three = memory.kv_cache_bytes(shape, 2, 8, 40, 16), memory.kv_cache_bytes(shape, 3, 8, 40, 16)
    assert three > two
    # the tiny model's cache is small: the default ceiling decodes everything at once
    assert memory.sampling_plan(policy.model, [40] * 6, 8, 16, 0.0, 2.0) == (0, None)
    assert memory.sampling_plan(policy.model, [40] * 6, 8, 16, 0.0, (two + three) / 2e9) == (2, None)
    assert memory.sampling_plan(policy.model, [40] * 6, 8, 16, 0.0, (two - 1) / 1e9) == (1, None)
    assert memory.sampling_plan(policy.model, [40] * 6, 8, 16, 0.0, 0.0) == (0, None)


def test_guard_refuses_sampling_with_what_would_fit():
    s = qwen3_shape()
    budget = 1_700_000_000
    with pytest.raises(MemoryGuardError) as e:
        plan_decode_batch(s, 10, 8, 300, 180, budget)
    assert str(e.value) == "sampling needs ~1.8 GB, 1.7 GB available: --group-size 3 or --max-tokens 52 would fit"
    # each suggestion is the largest that fits, by the formula: the completions take M positions, not
    # 256-position steps, so every token less is less cache
    assert sampling_bytes(s, 1, 3, 300, 180) <= budget < sampling_bytes(s, 1, 4, 300, 180)
    assert sampling_bytes(s, 1, 8, 300, 52) <= budget < sampling_bytes(s, 1, 8, 300, 53)
    with pytest.raises(MemoryGuardError) as e:
        plan_decode_batch(s, 10, 8, 300, 180, 1_600_000_000)
    assert "no smaller group or completion fits" in str(e.value)


def test_the_days_states_by_hand():
    """What the trainer keeps for a day (train/trunk.py), bf16, 32 prompts x 8 rows: the 17th block's input
    at every completion and prompt position, and the reference's final states at every completion
    position; only the latter when every block trains; neither without a chunked head and frozen blocks."""
    s = qwen3_shape()
    trunk = (256 * 180 + 32 * 300) * 1024 * 2
    ref = 256 * 180 * 1024 * 2
    assert day_states_bytes(s, 256, 8, 300, 180) == trunk + ref == 208_404_480
    assert training_bytes(s, 1, 8, 300, 180, day_rows=256) - training_bytes(s, 1, 8, 300, 180) == trunk + ref
    every = ModelShape.from_args(QWEN3_06B, 1_500_000_000, 40_000_000, 2, trained_layers=28)
    assert day_states_bytes(every, 256, 8, 300, 180) == ref
    plain = ModelShape.from_args(QWEN3_06B, 1_500_000_000, 40_000_000, 2, trained_layers=28, head_chunk=0)
    assert day_states_bytes(plain, 256, 8, 300, 180) == 0
    budget = training_bytes(s, 1, 8, 300, 180, day_rows=256)
    assert plan_micro_batch(s, 1, 8, 300, 180, budget, day_rows=256) == 1
    with pytest.raises(MemoryGuardError):
        plan_micro_batch(s, 1, 8, 300, 180, budget - 1, day_rows=256)


def test_guard_shrinks_the_micro_batch_or_refuses():
    s = qwen3_shape()
    budget = training_bytes(s, 3, 8, 300, 180)
    assert plan_micro_batch(s, 0, 8, 300, 180, budget) == 3  # 0 (the whole group of 8) does not fit
    assert plan_micro_batch(s, 2, 8, 300, 180, budget) == 2
    with pytest.raises(MemoryGuardError) as e:
        plan_micro_batch(s, 1, 8, 300, 180, 2_700_000_000)
    assert str(e.value) == "training needs ~2.9 GB, 2.7 GB available: --max-tokens 100 would fit"
    assert training_bytes(s, 1, 8, 300, 100) <= 2_700_000_000 < training_bytes(s, 1, 8, 300, 101)
    with pytest.raises(MemoryGuardError, match="no smaller group or completion fits"):
        plan_micro_batch(s, 1, 8, 300, 180, 1_000_000_000)


def test_cycle_refuses_a_day_that_cannot_fit(tiny_model_path, tmp_path, monkeypatch):
    db = dbm.open_db(tmp_path / "v.db")
    cfg = tiny_config(tiny_model_path)
    cfg.varro.prompts_per_day = 4
    monkeypatch.setattr(memory, "available_bytes", lambda: 0)
    monkeypatch.setattr(memory.mx, "get_active_memory", lambda: 1_000_000)  # the weights alone do not fit
    with pytest.raises(MemoryGuardError, match=r"^sampling needs ~0\.0 GB, 0\.0 GB available: no smaller"):
        varro_step(db, cfg, "r", tmp_path / "runs" / "r", "2026-11-02", HashEmbedder())
    assert db["rollouts"].count == 0  # (Varro writes day D's checkpoint before it samples D's prompts)


def test_split_decode_is_deterministic_and_complete(tiny_model_path, tmp_path):
    policy = open_policy(tiny_model_path, tmp_path / "run")
    a = policy.sample(PROMPTS, seed=3, decode_batch=1)
    b = policy.sample(PROMPTS, seed=3, decode_batch=1)
    assert [[r.completion_tokens for r in g] for g in a] == [[r.completion_tokens for r in g] for g in b]
    assert [g[0].prompt_id for g in a] == [p for p, _ in PROMPTS]
    assert [[r.group_index for r in g] for g in a] == [list(range(8))] * 3
    assert all(len(r.sampler_logprobs) == len(r.completion_tokens) for g in a for r in g)


class Swap:
    """A swap reader that reads 0 until `grow` is set, then 4 GB."""

    def __init__(self):
        self.grown = False

    def __call__(self):
        return 4 * 2**30 if self.grown else 0


def test_watchdog_stops_training_after_the_step_and_writes_no_checkpoint(tiny_model_path, tmp_path, monkeypatch):
    db = dbm.open_db(tmp_path / "v.db")
    cfg = tiny_config(tiny_model_path)
    cfg.varro.prompts_per_day = 4
    cfg.sampling.max_tokens = 8
    run_path, emb = tmp_path / "runs" / "r", HashEmbedder()
    varro_step(db, cfg, "r", run_path, "2026-11-02", emb)  # Varro trains on a day once the next one scores it
    swap = Swap()
    monkeypatch.setattr(watchdog, "swap_bytes", swap)
    updates = []
    real_update = Trainer._update

    def update(self, mb, k):
        updates.append(k)
        swap.grown = True  # swapping starts during the first step
        return real_update(self, mb, k)

    monkeypatch.setattr(Trainer, "_update", update)
    with pytest.raises(SwapError) as e:
        varro_step(db, cfg, "r", run_path, "2026-11-03", emb)
    assert str(e.value) == ("the machine started swapping (4096 MB more swap than at the start, over swap_max_mb "
                            "512): the night stopped after training step 1, before the checkpoint, with nothing "
                            "half-written; the next night runs the rest of the day again")
    assert updates == [0]  # stopped after the current step, of 4
    assert [p.name for p in list_checkpoints(run_path)] == ["2026-11-02"]
    assert db["steps"].count == 0
    # the next night, without swapping, trains the day in full
    swap.grown, updates[:] = False, []
    monkeypatch.setattr(Trainer, "_update", real_update)
    res = varro_step(db, cfg, "r", run_path, "2026-11-03", emb)
    assert res.steps == 4 and [p.name for p in list_checkpoints(run_path)] == ["2026-11-02", "2026-11-03"]


def test_watchdog_is_off_without_a_reading():
    dog = watchdog.SwapWatchdog(512 * MiB, reader=lambda: None).start()
    dog.poll()
    assert dog.tripped is None and dog._thread is None and dog.on_step({}) is False
    dog.stop()


def test_estimate_bounds_the_measured_peak_on_the_tiny_model(tiny_model_path, tmp_path):
    """Measured: sampling peak / estimate and training peak / estimate, stated in docs/reliability.md. The peak is
    taken above what MLX held before (earlier tests' arrays may still be alive), plus the weights."""
    import gc

    policy = open_policy(tiny_model_path, tmp_path / "run", micro_batch=2)
    s = ModelShape.from_model(policy.model)
    prompt = max(len(policy.prompt_tokens(t)) for _, t in PROMPTS)

    def peak_of(fn):
        gc.collect()
        before = mx.get_active_memory()
        mx.reset_peak_memory()
        out = fn()
        return out, mx.get_peak_memory() - before + s.weight_bytes

    scored_groups(policy, seed=1)  # once before measuring: one-time costs (the sampler's compilation) are not
    # the decode batch's, and whether an earlier test in this process already paid them varies
    groups, sampled = peak_of(lambda: scored_groups(policy, seed=1))
    _, trained = peak_of(lambda: policy.trainer.train_day(groups))
    longest = max(len(r.completion_tokens) for g in groups for r in g)
    est_sample = sampling_bytes(s, len(PROMPTS), 8, prompt, 12)
    est_train = training_bytes(s, 2, 8, prompt, longest)
    print(f"sampling {sampled} <= {est_sample} ({est_sample / sampled:.2f}x); "
          f"training {trained} <= {est_train} ({est_train / trained:.2f}x)")
    assert sampled <= est_sample <= 3 * sampled
    assert trained <= est_train <= 3 * trained


def test_a_memory_reading_that_cannot_be_taken_says_why(monkeypatch, tmp_path):
    # macOS, and vm_stat cannot run: no reading (the guard goes without), and a warning naming the command
    from varro.engine.model import memory as mem

    def broken(*args, **kwargs):
        raise FileNotFoundError("[Errno 2] No such file or directory: 'vm_stat'")

    monkeypatch.setattr(mem.sys, "platform", "darwin")
    monkeypatch.setattr(mem.subprocess, "run", broken)
    with pytest.warns(RuntimeWarning, match=r"no memory reading: `vm_stat` failed \(\[Errno 2\].*vm_stat'\)"):
        assert mem.os_reading(str(tmp_path / "no-meminfo"), "MemAvailable", ["vm_stat"], len) is None
