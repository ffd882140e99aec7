import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def varro_home(tmp_path, monkeypatch):
    """Every test gets its own data/ and runs/ folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("VARRO_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """The tiny Qwen3 model written once per test session, through the real writer."""
    from varro.engine.models import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0, vocab_size=512)
