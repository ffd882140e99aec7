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
    from varro.engine.model.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0, vocab_size=512)


# The tiny demo of tests/system/test_readme_commands.py and tests/system/test_demo.py: both files check the same run.
TINY_DEMO = ["demo", "--tiny", "--cold", "--days", "2", "--embedder", "hash", "--max-tokens", "8",
             "--prompts-per-day", "6", "--eval-every", "2"]


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """(home, output) of one tiny demo (runs `demo` and `walter-demo`, two days each), made once per session.
    The tests that read it must not change its runs; test_readme_commands.py runs the reading
    commands of the README and docs/ on it, which add nothing the others check."""
    from click.testing import CliRunner

    from varro.cli import cli

    home = tmp_path_factory.mktemp("demo-home")
    out = CliRunner().invoke(cli, TINY_DEMO, env={"VARRO_HOME": str(home)})
    assert out.exit_code == 0, out.output
    return home, out.output


@pytest.fixture(scope="session")
def smollm_f32(tmp_path_factory):
    """SmolLM2-135M-Instruct converted once from the shipped GGUF to a float32 mlx-lm folder (the real demo's
    model; tests/engine/model/test_gguf.py checks it against transformers). Read-only: copy it before changing a file."""
    from varro.engine.model.gguf import convert_gguf, shipped_gguf

    return convert_gguf(shipped_gguf(), tmp_path_factory.mktemp("smollm") / "f32")


@pytest.fixture(scope="session")
def preloaded(tmp_path_factory):
    """role -> the Preloaded server (tests/support/preloaded.py) the crash tests start that role's nightly processes
    from ("reference", "killed" or "rerun": each its own string hash seed), started on first use."""
    from support.preloaded import PRELOADED_SEEDS, Preloaded

    folder = tmp_path_factory.mktemp("preloaded")
    servers = {}

    def server(role: str):
        if role not in servers:
            servers[role] = Preloaded(PRELOADED_SEEDS[role], folder / f"{role}.log")
        return servers[role]

    yield server
    for s in servers.values():
        s.close()


@pytest.fixture(scope="session")
def clean_nightly(tmp_path_factory, preloaded):
    """run(cmd) -> (home, seconds): `cmd` (a nightly backfill) run to its end on a new data folder, once per
    session per command, so the files that compare against the same uninterrupted run share it
    (tests/system/test_kills.py and tests/walter/test_faults.py both need Walter's three-day one). It runs on the
    "reference" preloaded server, like the crash tests' own references, so its duration is that of the runs
    tests/system/test_kills.py kills. Read-only: the tests compare against its state and run nothing on its home."""
    import time

    from support.preloaded import run as run_preloaded

    done = {}

    def run(cmd: list[str]):
        key = tuple(cmd)
        if key not in done:
            home = tmp_path_factory.mktemp("clean") / "home"
            env = {**os.environ, "VARRO_HOME": str(home)}
            env.pop("VARRO_FAILPOINT", None)
            start = time.monotonic()
            out = run_preloaded(preloaded("reference"), cmd, env, home.with_name("out"))
            assert out.returncode == 0, f"the clean run failed ({out.returncode}): {out.stderr[-2000:]}"
            done[key] = (home, time.monotonic() - start)
        return done[key]

    return run
