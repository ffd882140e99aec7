"""A brief supervised warm-up of the tiny demo model, so its samples read as words.

A randomly initialised model samples byte soup, and RL from byte soup teaches
nothing a person can read. Before the demo's RL days the tiny model is
fine-tuned (all weights, plain next-token loss) on the shipped sample text
wrapped in the chat template: a user turn with a news prompt and an assistant
turn with news prose from the sample, ended by <|im_end|>. It learns the
language and where to stop, not the task: the assistant text is never the
answer the reward wants (it is a different story's summary).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from varro.engine.model.loading import load_model
from varro.engine.core.paths import SAMPLE_DIR

URL_RE = re.compile(r"\S*https?://\S+|\S+\.example\S*")

# The shape of a news prompt (Varro's, varro.forecast.task.build_prompt, word for word, so the warm model
# stops where the demo's prompts expect; the instruction is never answered here, see the module docstring).
NEWS_INSTRUCTION = (
    "Forecast what happens next in this story. "
    "Write one short paragraph of three to five sentences. "
    "Say what will change, in which direction and by roughly how much, and by when. "
    "Name what is driving it and how we will know it happened."
)


def news_prompt(title: str, summary: str | None) -> str:
    head = [f"Headline: {title.strip()}"] + ([f"Summary: {summary.strip()}"] if summary and summary.strip() else [])
    return "\n".join([*head, "", NEWS_INSTRUCTION])


def warmup_texts(seed: int = 0) -> list[tuple[str, str]]:
    """(user, assistant) pairs from the sample headlines and Bluesky posts."""
    rng = np.random.default_rng(seed)
    heads = [json.loads(line) for line in (SAMPLE_DIR / "headlines.jsonl").read_text().splitlines() if line]
    prose = [h["summary"] for h in heads if h["summary"]]
    posts = []
    for f in sorted((SAMPLE_DIR / "bluesky" / "search").glob("*.json")):
        for page in json.loads(f.read_text()):
            posts.extend(p["record"]["text"] for p in page["posts"])
    pairs = []
    for h in heads:
        story = prose[int(rng.integers(len(prose)))]
        follow = prose[int(rng.integers(len(prose)))]
        pairs.append((news_prompt(h["title"], h["summary"]), f"{story} {follow}"))
    for text in posts:
        text = URL_RE.sub("", text).strip()  # pasted links teach nothing but URL soup
        pairs.append((f"Article: {heads[int(rng.integers(len(heads)))]['title']}\n\n"
                      "Write a Bluesky post about this article.", text))
    return pairs


def encode_pairs(tokenizer, pairs: list[tuple[str, str]], max_len: int) -> list[tuple[list[int], int]]:
    """Token ids of each full chat and where the assistant part starts."""
    out = []
    for user, assistant in pairs:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                               add_generation_prompt=True, enable_thinking=False)
        p_ids = tokenizer.encode(prompt, add_special_tokens=False)
        a_ids = tokenizer.encode(assistant + "<|im_end|>", add_special_tokens=False)
        ids = (p_ids + a_ids)[:max_len]
        out.append((ids, min(len(p_ids), len(ids) - 1)))
    return out


def warm_up(model_dir: str | Path, out_dir: str | Path, steps: int = 300, batch: int = 16,
            lr: float = 3e-3, max_len: int = 160, seed: int = 0, log=print) -> Path:
    """Fine-tune the model at `model_dir` on the sample chats and write it to `out_dir`; returns out_dir."""
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    model, tokenizer = load_model(str(model_dir))
    data = encode_pairs(tokenizer, warmup_texts(seed), max_len)
    opt = optim.AdamW(learning_rate=optim.cosine_decay(lr, steps), weight_decay=0.0)

    def loss_fn(m, inputs, targets, mask):
        logits = m(inputs).astype(mx.float32)
        ce = nn.losses.cross_entropy(logits, targets, reduction="none")
        return (ce * mask).sum() / mask.sum()

    step_fn = nn.value_and_grad(model, loss_fn)
    for k in range(steps):
        rows = [data[i] for i in rng.integers(0, len(data), size=batch)]
        width = max(len(ids) for ids, _ in rows) - 1
        inputs = np.zeros((batch, width), np.int32)
        targets = np.zeros((batch, width), np.int32)
        mask = np.zeros((batch, width), np.float32)
        for i, (ids, start) in enumerate(rows):
            n = len(ids) - 1
            inputs[i, :n], targets[i, :n] = ids[:-1], ids[1:]
            mask[i, max(start - 1, 0):n] = 1.0  # loss on the assistant turn and its end marker
        loss, grads = step_fn(model, mx.array(inputs), mx.array(targets), mx.array(mask))
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state, loss)
        if k % 50 == 0 or k == steps - 1:
            log(f"warm-up step {k + 1}/{steps}: loss {loss.item():.3f}")
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    mx.save_safetensors(str(tmp / "model.safetensors"), dict(tree_flatten(model.parameters())),
                        metadata={"format": "mlx"})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
