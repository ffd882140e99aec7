"""One GRPO iteration of mlx-tune (the third peer), run inside bench/.venv-mlxtune by bench/real_shape.py.

Set up the way mlx-tune's README sets up GRPO: `FastLanguageModel.from_pretrained`
(the base keeps its dtype), `get_peft_model` (LoRA on every linear layer of a
block, its default gradient checkpointing off), then `GRPOTrainer(...).train()`,
which runs `_train_native`. LoRA rank, scale (lora_alpha = rank x scale) and
layers are ours: the adapters are put on the last `lora_layers` blocks by
calling the wrapper's own `_apply_lora(num_layers=...)` before the trainer,
which otherwise adapts every block.

What mlx-tune 0.6.0's GRPO is (`mlx_tune/rl_trainers.py`, `GRPOTrainer._train_native`):
plain REINFORCE with group-normalised advantages, one prompt per step. Each
step prefills the prompt once, then generates the group one completion at a
time (`generate_with_log_probs`: mlx-lm's `stream_generate` on a fork of the
prompt's cache, batch 1, temperature only: no top-p or top-k), skips the step
when the group's rewards are all equal, else takes one compiled AdamW step on
-mean(A_i * log p(sequence_i)) over the 8 padded sequences at once (no
micro-batching). There is no importance ratio, clipping, reference model or KL
term: `beta` and `loss_type` are stored and printed but never used, and there
is no sequence-level (GSPO) option. Its log-probability sums the prompt's
tokens too; they are the same for the whole group, so with advantages that
sum to zero they add nothing to the gradient, only to the work.

An iteration of `n` prompts is `n` of its steps (`max_steps=n`), each with its
own update. Its time is `train()`'s, less the adapters it saves at the end;
sampling is the prompt prefills and the generations. The step is compiled
afresh in every `train()` call, so the measured iteration includes that trace.
EOS is removed from the tokenizer so completions run to max_tokens. The reward
is the share of the digit 7 in the text, as in bench/peer_mlxrl.py (a random
model's distinct-word share is 1.0 for every completion, and mlx-tune skips
such a group).

Input: a JSON spec file (argv[1]); output: one JSON object on the last stdout line.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx.core as mx  # noqa: E402
from mlx_tune import FastLanguageModel, GRPOConfig, GRPOTrainer, _perf, rl_trainers  # noqa: E402

from common import blas, no_eos  # noqa: E402

BLOCK_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def digit_share(text: str, answer: str = "") -> float:
    return text.count("7") / max(len(text), 1)


class PromptMismatch(RuntimeError):
    """mlx-tune encodes the prompt text itself; raised when that does not give back our prompt's tokens."""


class Phases:
    """Wraps the trainer's module-level helpers to time sampling, count tokens and updated rows."""

    def __init__(self):
        self.reset()
        self.originals = {name: getattr(rl_trainers, name) for name in
                          ("build_shared_prompt_cache", "generate_with_log_probs", "_save_adapters_and_config")}
        self.compiled_step = _perf.compiled_step
        rl_trainers.build_shared_prompt_cache = self._sampled("build_shared_prompt_cache")
        rl_trainers.generate_with_log_probs = self._generate
        rl_trainers._save_adapters_and_config = self._save
        _perf.compiled_step = self._step  # _train_native imports it from mlx_tune._perf when it runs

    def reset(self) -> None:
        self.sampling_s = self.save_s = 0.0
        self.completion_tokens = self.updated_rows = 0
        self.sampling_peak_gb = 0.0

    def _sampled(self, name):
        def run(*args, **kwargs):
            tic = time.perf_counter()
            out = self.originals[name](*args, **kwargs)
            self.sampling_s += time.perf_counter() - tic
            self.sampling_peak_gb = max(self.sampling_peak_gb, mx.get_peak_memory() / 1e9)
            return out
        return run

    def _generate(self, model, tokenizer, prompt_ids, **kwargs):
        full_ids, logps = self._sampled("generate_with_log_probs")(model, tokenizer, prompt_ids, **kwargs)
        self.completion_tokens += int(full_ids.size) - len(prompt_ids)
        return full_ids, logps

    def _save(self, *args, **kwargs):
        tic = time.perf_counter()
        out = self.originals["_save_adapters_and_config"](*args, **kwargs)
        self.save_s += time.perf_counter() - tic
        return out

    def _step(self, step_fn, state, **kwargs):
        compiled = self.compiled_step(step_fn, state, **kwargs)

        def run(sequences, seq_lengths, advantages):
            self.updated_rows += int(sequences.shape[0])
            return compiled(sequences, seq_lengths, advantages)
        return run


def run(spec: dict) -> dict:
    mx.random.seed(0)
    model, tokenizer = FastLanguageModel.from_pretrained(spec["model"])
    no_eos(tokenizer)
    model = FastLanguageModel.get_peft_model(model, r=spec["lora_rank"], target_modules=BLOCK_LINEARS,
                                             lora_alpha=spec["lora_rank"] * spec["lora_scale"])
    model._apply_lora(num_layers=spec["lora_layers"])  # the trainer's own call would adapt every block
    texts = []
    for ids in spec["prompts"]:
        text = tokenizer.decode(ids)
        if tokenizer.encode(text) != list(ids):
            raise PromptMismatch(f"encoding the decoded prompt does not give its {len(ids)} tokens back")
        texts.append(text)
    phases = Phases()

    def iteration(prompts: list[str], max_tokens: int, out_dir: str) -> dict:
        args = GRPOConfig(num_generations=spec["group"], temperature=spec["temp"], max_completion_length=max_tokens,
                          max_steps=len(prompts), learning_rate=1e-5, beta=spec["beta"], output_dir=out_dir,
                          logging_steps=1, save_steps=10**9)
        trainer = GRPOTrainer(model=model, train_dataset=[{"prompt": p, "answer": ""} for p in prompts],
                              tokenizer=tokenizer, reward_fn=digit_share, args=args)
        phases.reset()
        tic = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - tic
        return {"iteration_s": total - phases.save_s, "sampling_s": phases.sampling_s, "save_s": phases.save_s,
                "completion_tokens": phases.completion_tokens, "updated_rows": phases.updated_rows,
                "sampling_peak_gb": phases.sampling_peak_gb}

    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: short prompts, 4 tokens (the prompt text is cut at a token boundary, then re-encoded)
        iteration([tokenizer.decode(ids[:16]) for ids in spec["prompts"]], 4, tmp)
        mx.clear_cache()
        mx.reset_peak_memory()
        out = iteration(texts, spec["max_tokens"], tmp)
    out["peak_memory_gb"] = mx.get_peak_memory() / 1e9
    out["blas"] = blas()
    out["trainer"] = (f"mlx-tune {version('mlx-tune')} GRPOTrainer (REINFORCE, no ratio, clip, reference or KL; "
                      f"group generated one at a time), mlx-lm {version('mlx-lm')}, temperature {spec['temp']}")
    return out


if __name__ == "__main__":
    result = run(json.loads(Path(sys.argv[1]).read_text()))
    print(json.dumps(result))
