"""The real model's conversion (varro.engine.model.gguf) against an independent reference: transformers' own GGUF
loader, in torch, on the same file. Each mapping error a converter can make is planted once and must fail the
same check the real folder passes."""

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest

from varro.engine.model.gguf import convert_gguf, shipped_gguf

TEXTS = [
    "The central bank raised interest rates on Tuesday, and markets fell sharply in response.",
    "<|im_start|>user\nWhat happens next after the port strike?<|im_end|>\n<|im_start|>assistant\n"
    "Talks will resume on Monday and the unions expect a deal by Friday.<|im_end|>",
]
QUESTION = "What is the capital of France?"
# per-token log-prob: measured 2e-4 nats at most between the float32 folder and transformers (the weights are
# identical; the rest is float32 summation order); each planted error below is off by more than 0.25
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def reference():
    """Token ids and per-token log-probs of TEXTS from transformers' GGUF loader (dequantized to float32)."""
    torch = pytest.importorskip("torch")  # scripts/setup installs it; the skip names it where it is missing
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = shipped_gguf()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    out = []
    with torch.no_grad():
        for text in TEXTS:
            ids = tok(text, return_tensors="pt").input_ids
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)[:-1]
            out.append((ids[0].tolist(), logp.gather(1, ids[0, 1:, None])[:, 0].numpy()))
    chat = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                   add_generation_prompt=True)
    return {"texts": out, "chat_ids": tok(chat).input_ids}


@pytest.fixture(scope="module")
def converted(smollm_f32):
    """The float32 folder, converted once per session (conftest; the real demo's test starts from it too)."""
    return smollm_f32


def logprob_gap(folder, reference) -> float:
    """Largest per-token log-prob difference between the folder (through mlx_lm.load) and the reference,
    on the reference's own token ids."""
    from mlx_lm import load

    model, _ = load(str(folder))
    gap = 0.0
    for ids, ref in reference["texts"]:
        logits = model(mx.array([ids]))[0].astype(mx.float32)
        logp = (logits - mx.logsumexp(logits, axis=-1, keepdims=True))[:-1]
        mine = np.array(logp[mx.arange(len(ids) - 1), mx.array(ids[1:])])
        gap = max(gap, float(np.abs(mine - ref).max()))
    return gap


def chat_ids(folder) -> list[int]:
    from mlx_lm import load

    _, tok = load(str(folder))
    chat = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                   add_generation_prompt=True)
    return list(tok.encode(chat, add_special_tokens=False))


def planted(converted, tmp_path, edit_config=None, edit_tokenizer=None, edit_tokenizer_config=None):
    """A copy of the converted folder with files edited."""
    bad = tmp_path / "bad"
    shutil.copytree(converted, bad)
    for name, edit in (("config.json", edit_config), ("tokenizer.json", edit_tokenizer),
                       ("tokenizer_config.json", edit_tokenizer_config)):
        if edit:
            data = json.loads((bad / name).read_text())
            edit(data)
            (bad / name).write_text(json.dumps(data))
    return bad


def test_converted_logprobs_match_transformers_gguf_loader(converted, reference):
    assert logprob_gap(converted, reference) < TOLERANCE


def test_converted_tokenizer_matches_and_keeps_chat_tokens_whole(converted, reference):
    ids = chat_ids(converted)
    assert ids == reference["chat_ids"]
    # <|im_start|> is id 1 and <|im_end|> id 2 in the GGUF's vocabulary: one token each, never pieces
    assert ids[0] == 1 and ids.count(1) == 3 and ids.count(2) == 2


def test_greedy_answer_is_the_expected_one(converted):
    from mlx_lm import generate, load

    model, tok = load(str(converted))
    prompt = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                     add_generation_prompt=True)
    assert generate(model, tok, prompt, max_tokens=12).strip() == "The capital of France is Paris."


def test_planted_qk_layout_error_fails_the_reference(reference, tmp_path):
    wrong = convert_gguf(shipped_gguf(), tmp_path / "no-unpermute", unpermute=False)
    assert logprob_gap(wrong, reference) > 0.1


def test_planted_rope_style_error_fails_the_reference(converted, reference, tmp_path):
    bad = planted(converted, tmp_path, edit_config=lambda c: c.update(rope_traditional=True))
    assert logprob_gap(bad, reference) > 0.1


def test_planted_split_special_token_fails_the_tokenizer_check(converted, reference, tmp_path):
    """<|im_start|> no longer a special token (not in tokenizer.json's added tokens, not in
    tokenizer_config.json's, and not the bos token, each of which transformers would add it back from): the
    chat prompt is cut into pieces and no longer matches."""
    def drop_im_start(tok):
        tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != "<|im_start|>"]

    def drop_from_config(cfg):
        cfg["added_tokens_decoder"] = {k: v for k, v in cfg["added_tokens_decoder"].items()
                                       if v["content"] != "<|im_start|>"}
        cfg.pop("bos_token")

    bad = planted(converted, tmp_path, edit_tokenizer=drop_im_start, edit_tokenizer_config=drop_from_config)
    ids = chat_ids(bad)
    assert ids != reference["chat_ids"] and 1 not in ids


def test_quantized_folder_keeps_the_ggufs_bits_and_answers(tmp_path, reference):
    from mlx_lm import generate, load

    folder = convert_gguf(shipped_gguf(), tmp_path / "q4", quantized=True)
    q = json.loads((folder / "config.json").read_text())["quantization"]
    assert q["bits"] == 4 and q["group_size"] == 32 and q["model.embed_tokens"]["bits"] == 8
    model, tok = load(str(folder))
    prompt = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                     add_generation_prompt=True)
    assert generate(model, tok, prompt, max_tokens=12).strip() == "The capital of France is Paris."
