"""One GRPO iteration of mlx-lm-lora (the peer), run inside bench/.venv-peer by bench/gspo.py.

Set up the way `mlx_lm_lora.train` sets up `--train-mode grpo`: the model
through `from_pretrained` with LoRA on every layer, a second full copy of the
model loaded and frozen as the reference, then `train_grpo` with
importance_sampling_level="sequence". Our sampler settings, clip range, KL
weight and AdamW are passed so only the trainer differs. EOS is removed from
the tokenizer (and no end-of-answer token is given) so every completion runs to
max_tokens, as in our runs.

Input: a JSON spec file (argv[1]); output: one JSON object on the last stdout line.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx.core as mx  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
from mlx_lm import load  # noqa: E402
from mlx_lm.tuner.callbacks import TrainingCallback  # noqa: E402
from mlx_lm_lora.trainer import grpo_trainer  # noqa: E402
from mlx_lm_lora.trainer.grpo_trainer import GRPOTrainingArgs, train_grpo  # noqa: E402
from mlx_lm_lora.utils import from_pretrained  # noqa: E402

from common import blas, no_eos  # noqa: E402


def distinct_word_reward(prompts, completions, answer, types=None):
    """The cheap deterministic reward both contenders use: the share of distinct words."""
    out = []
    for text in completions:
        words = text.split()
        out.append(len(set(words)) / max(len(words), 1))
    return out


class Report(TrainingCallback):
    def __init__(self):
        self.rows = []

    def on_train_loss_report(self, info):
        self.rows.append(info)


def run(spec: dict) -> dict:
    mx.random.seed(0)
    lora = {"rank": spec["lora_rank"], "dropout": 0.0, "scale": spec["lora_scale"],
            "num_layers": spec.get("lora_layers", -1)}
    model, tokenizer, _ = from_pretrained(model=spec["model"], lora_config=lora)  # the base keeps its dtype
    no_eos(tokenizer)
    reference, _ = load(spec["model"])  # mlx_lm_lora.train.load_reference_model: a second full copy
    reference.freeze()
    optimizer = optim.AdamW(learning_rate=1e-5, weight_decay=0.0)

    timings = {"sampling_s": 0.0}
    real_generate = grpo_trainer.generate_grpo

    def timed_generate(*args, **kwargs):
        tic = time.perf_counter()
        out = real_generate(*args, **kwargs)
        timings["sampling_s"] += time.perf_counter() - tic
        timings["completion_tokens"] = sum(int(c.size) for c in out[0])
        return out

    grpo_trainer.generate_grpo = timed_generate

    def iteration(prompts: list[list[int]], max_tokens: int, adapter_dir: str) -> dict:
        data = [(p, [0], f"prompt {i}", "") for i, p in enumerate(prompts)]
        args = GRPOTrainingArgs(
            batch_size=len(prompts), iters=1, steps_per_report=1, steps_per_eval=10**9,
            steps_per_save=10**9, adapter_file=str(Path(adapter_dir) / "adapters.safetensors"),
            max_seq_length=4096, max_completion_length=max_tokens, group_size=spec["group"],
            beta=spec["beta"], epsilon=spec["eps_low"], epsilon_high=spec["eps_high"],
            temperature=spec["temp"], top_p=spec["top_p"], top_k=spec["top_k"],
            importance_sampling_level="sequence", grpo_loss_type="grpo",
        )
        report = Report()
        timings["sampling_s"] = 0.0
        train_grpo(model=model, ref_model=reference, tokenizer=tokenizer, optimizer=optimizer,
                   train_dataset=data, val_dataset=None, reward_funcs=[distinct_word_reward], args=args,
                   training_callback=report, end_answer_token="")
        info = report.rows[-1]
        return {"iteration_s": 1.0 / info["iterations_per_second"], "sampling_s": timings["sampling_s"],
                "completion_tokens": timings["completion_tokens"]}

    with tempfile.TemporaryDirectory() as tmp:
        iteration([p[:16] for p in spec["prompts"]], 4, tmp)  # warm-up: short prompts, 4 tokens
        mx.reset_peak_memory()
        out = iteration(spec["prompts"], spec["max_tokens"], tmp)
    out["peak_memory_gb"] = mx.get_peak_memory() / 1e9
    out["blas"] = blas()
    out["trainer"] = "mlx-lm-lora " + _version("mlx-lm-lora")
    return out


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    result = run(json.loads(Path(sys.argv[1]).read_text()))
    print(json.dumps(result))
