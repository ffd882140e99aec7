"""The tiny model writer and the chat prompt, through mlx_lm.load (the real loading path)."""

import hashlib

from mlx_lm import load

from varro.engine.model.loading import chat_prompt_tokens
from varro.engine.model.tiny import write_tiny_model


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_model_is_deterministic_per_seed(tmp_path):
    corpus = ["Port workers extend the strike as talks stall.", "The central bank holds rates steady."] * 20
    a = write_tiny_model(tmp_path / "a", seed=3, vocab_size=300, corpus=corpus)
    b = write_tiny_model(tmp_path / "b", seed=3, vocab_size=300, corpus=corpus)
    c = write_tiny_model(tmp_path / "c", seed=4, vocab_size=300, corpus=corpus)
    for name in ["model.safetensors", "tokenizer.json", "config.json"]:
        assert digest(a / name) == digest(b / name)
    assert digest(a / "model.safetensors") != digest(c / "model.safetensors")


def test_tiny_model_loads_and_uses_qwen3_chat_template(tiny_model_path):
    model, tok = load(str(tiny_model_path))
    assert model.model_type == "qwen3"
    ids = chat_prompt_tokens(tok, "Will the strike end?")
    text = tok.decode(ids)
    assert text == "<|im_start|>user\nWill the strike end?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    thinking = tok.decode(chat_prompt_tokens(tok, "Will the strike end?", enable_thinking=True))
    assert thinking.endswith("<|im_start|>assistant\n")
    assert tok.eos_token_ids == {tok.convert_tokens_to_ids("<|im_end|>")} or \
        list(tok.eos_token_ids) == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_model_that_cannot_be_loaded_offline_says_how_to_get_it(monkeypatch):
    import pytest

    from varro.engine.model.loading import ModelLoadError, load_model

    import sys
    from pathlib import Path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tool = "hf" if (Path(sys.executable).parent / "hf").is_file() else "huggingface-cli"  # what the venv has
    with pytest.raises(ModelLoadError, match=f"`{tool} download Qwen/Qwen3-0.6B`"):
        load_model("Qwen/Qwen3-0.6B")
