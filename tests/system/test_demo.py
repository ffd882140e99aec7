"""The README's main command: Varro's cycle over the sample days, re-runnable without duplicates."""

from pathlib import Path

from click.testing import CliRunner

from varro.engine import store as dbm
from varro.engine.run.checkpoints import list_checkpoints
from varro.cli import cli
from varro.engine.core.paths import db_path
from varro.engine.core.paths import run_dir


def test_demo_runs_the_cycle_and_reruns_idempotently(varro_home):
    runner = CliRunner()
    args = ["demo", "--days", "2", "--tiny", "--cold", "--varro-only", "--embedder", "hash", "--max-tokens", "16",
            "--prompts-per-day", "4", "--eval-every", "8"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert [p.name for p in list_checkpoints(run_dir("demo"))] == ["2026-11-02", "2026-11-03"]
    db = dbm.open_db(db_path())
    counts = dict(db.execute("select day, count(*) from rollouts group by day").fetchall())
    assert counts == {"2026-11-02": 4 * 8, "2026-11-03": 4 * 8}
    scored = dict(db.execute("select day, count(*) from rollouts where reward is not null group by day").fetchall())
    assert scored == {"2026-11-02": 32}  # day 2's forecasts wait for day 3's headlines
    steps = db.execute("select count(*) from steps where day = '2026-11-03'").fetchone()[0]
    kl_guard = db.execute("select count(*) from guards where day = '2026-11-03' and kind = 'kl'").fetchone()[0]
    # four minibatch steps, unless the cold tiny model drifted past kl_max and the guard ended the day early
    assert steps == 4 or (1 <= steps < 4 and kl_guard == 1)
    assert "2026-11-02" in result.output and "eval_reward" in result.output
    n = (db["rollouts"].count, db["steps"].count, db["headlines"].count, db["prompts"].count)
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "not training again" in again.output
    assert (db["rollouts"].count, db["steps"].count, db["headlines"].count, db["prompts"].count) == n


def test_demo_runs_on_the_real_model_by_default(varro_home, smollm_f32, monkeypatch):
    """Without --tiny the demo converts SmolLM2-135M-Instruct into the home's data/models once and trains on
    it; what it writes is fluent enough to have English words in it."""
    import json
    import shutil

    from varro.engine.model import gguf
    # The conversion itself is tests/engine/model/test_gguf.py's (against transformers); here the demo's call of it is
    # checked, answered by a copy of the session's folder, the same convert_gguf's output for the same file.
    conversions = []

    def convert_gguf(gguf_path, out_dir, quantized=False, unpermute=True):
        conversions.append((Path(gguf_path), Path(out_dir), quantized, unpermute))
        shutil.copytree(smollm_f32, out_dir)
        return Path(out_dir)

    monkeypatch.setattr(gguf, "convert_gguf", convert_gguf)
    runner = CliRunner()
    args = ["demo", "--days", "2", "--varro-only", "--embedder", "hash", "--max-tokens", "12", "--group-size", "2",
            "--prompts-per-day", "2", "--eval-every", "8"]
    out = runner.invoke(cli, args)
    assert out.exit_code == 0, out.output
    model = varro_home / "data" / "models" / "smollm2-135m-instruct"
    assert conversions == [(gguf.shipped_gguf(), model, False, True)]  # into the home, once, float32
    assert json.loads((model / "config.json").read_text())["model_type"] == "llama"
    ckpt = run_dir("demo") / "checkpoints" / "2026-11-03"
    assert json.loads((ckpt / "adapter_config.json").read_text())["base_model"] == str(model)
    assert json.loads((ckpt / "adapter_config.json").read_text())["num_layers"] == 8
    db = dbm.open_db(db_path())
    assert db.execute("select count(*) from steps where day = '2026-11-03' and skipped = 0").fetchone()[0] >= 1
    texts = [r[0] for r in db.execute("select completion from rollouts where run = 'demo'")]
    words = {w.lower().strip(".,") for t in texts for w in t.split()}
    assert len(texts) == 8 and len(words & {"the", "will", "be", "to", "of", "and", "in", "a"}) >= 3


def test_full_demo_writes_reports_and_a_compare(tiny_demo):
    """conftest's tiny demo (both apps, two days), made once per session; tests/system/test_readme_commands.py runs the
    README's commands on the same home."""
    home, output = tiny_demo
    for line in ["== Walter", "== Learning curves on the held-out panels", "varro: ", "held-out prompts made on",
                 "95% CI", "report (Varro):", "report (Walter):", "compare:", "before: base",
                 "after: 2026-11-03", "reward "]:
        assert line in output
    for path in [run_dir("demo", home) / "report.html", run_dir("walter-demo", home) / "report.html",
                 run_dir("demo", home) / "compare.html"]:
        assert path.is_file() and path.stat().st_size > 1000
    assert [p.name for p in list_checkpoints(run_dir("walter-demo", home))] == ["2026-11-02", "2026-11-03"]


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    for name in cli.commands:
        out = runner.invoke(cli, [name, "--help"])
        assert out.exit_code == 0
        assert "Example:" in out.output, name
