"""The trained model in daily use: checkpoints/latest, `walter draft` and `varro forecast`."""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner
from mlx.utils import tree_flatten, tree_map

from support.helpers import open_policy
from support.preloaded import run as run_preloaded
from varro.cli import cli as varro_cli
from varro.engine import store
from varro.engine.run import checkpoints
from varro.engine.core.config import Config
from varro.engine.eval.draft import draft_config
from varro.engine.embed.embedders import CachedEmbedder, load_embedder
from varro.engine.core.paths import db_path
from varro.engine.core.paths import run_dir
from walter.cli import cli as walter_cli

DAYS = ["2026-11-02", "2026-11-03"]
TINY = ["--embedder", "hash", "--max-tokens", "8", "--lora-layers", "2", "--group-size", "2"]


def latest_of(run):
    link = checkpoints.checkpoints_dir(run) / "latest"
    return os.readlink(link), link.resolve().name


# --- checkpoints/latest ------------------------------------------------------------------------------

def test_latest_names_the_newest_checkpoint_and_mlx_lm_loads_its_adapters(tiny_model_path, tmp_path):
    from varro.engine.model.loading import load_model

    run = tmp_path / "run"
    pol = open_policy(tiny_model_path, run)
    for day in ["2026-11-02", "2026-11-03", "2026-11-04"]:
        pol.model.update(tree_map(lambda a: a + 0.01, pol.model.trainable_parameters()))  # each day its own
        pol.save(day)
        assert latest_of(run) == (day, day)  # relative, so the run folder can move
    assert [p.name for p in checkpoints.list_checkpoints(run)] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    assert checkpoints.find_latest(run).name == "2026-11-04"
    assert checkpoints.prune(run, keep=1) == ["2026-11-02", "2026-11-03"]
    assert latest_of(run) == ("2026-11-04", "2026-11-04")

    model, _ = load_model(str(tiny_model_path), adapter_path=run / "checkpoints" / "latest")
    saved = mx.load(str(run / "checkpoints" / "2026-11-04" / "adapters.safetensors"))
    loaded = dict(tree_flatten(model.parameters()))
    assert saved and set(saved) <= set(loaded)
    ours = dict(tree_flatten(pol.model.trainable_parameters()))  # what day 2026-11-04 saved
    for k, v in saved.items():
        np.testing.assert_array_equal(np.array(loaded[k]), np.array(v))
        np.testing.assert_array_equal(np.array(loaded[k]), np.array(ours[k]))


def nightly(server, model, home, failpoint=None):
    """The nightly as a process forked from `server` (tests/support/preloaded.py), as the crash tests run it."""
    env = {**os.environ, "VARRO_HOME": str(home)}
    env.pop("VARRO_FAILPOINT", None)
    if failpoint:
        env["VARRO_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "varro.cli", "nightly", "--run", "c", "--source", "sample", "--quiet",
           "--from", DAYS[0], "--to", DAYS[1], "--model", str(model), "--prompts-per-day", "2", *TINY]
    return run_preloaded(server, cmd, env, Path(f"{home}.out"))


def test_a_kill_between_the_rename_and_the_switch_leaves_latest_at_the_previous_checkpoint(tiny_model_path,
                                                                                           tmp_path, preloaded):
    run = tmp_path / "runs" / "c"
    killed = nightly(preloaded("killed"), tiny_model_path, tmp_path, "checkpoint.latest#2")
    assert killed.returncode == -9, killed.stderr[-500:]
    assert [p.name for p in checkpoints.list_checkpoints(run)] == DAYS  # day 2 is complete ...
    assert latest_of(run) == (DAYS[0], DAYS[0])  # ... but latest still names day 1, which is complete too
    assert (run / "checkpoints" / "latest" / "metadata.json").is_file()
    again = nightly(preloaded("rerun"), tiny_model_path, tmp_path)
    assert again.returncode == 0, again.stderr
    assert latest_of(run) == (DAYS[1], DAYS[1])


# --- walter draft ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def walter_home(tiny_model_path, tmp_path_factory):
    home = tmp_path_factory.mktemp("walter")
    out = CliRunner().invoke(walter_cli, ["step", "--date", DAYS[0], "--source", "sample", "--home", str(home),
                                          "--model", str(tiny_model_path), "--articles-per-day", "2", *TINY])
    assert out.exit_code == 0, out.output
    # the next day's refresh makes the first day's counts final: its articles get a scorable history
    nxt = CliRunner().invoke(walter_cli, ["ingest", "--date", DAYS[1], "--source", "sample", "--home", str(home)])
    assert nxt.exit_code == 0, nxt.output
    return home


def scorable_article(home):
    from walter.task import article_history

    db = store.open_db(db_path(home))
    cfg = draft_config("walter", run_dir("walter", home), Config(), {})
    for (url,) in db.execute("select distinct url_norm from bsky_posts order by url_norm").fetchall():
        if article_history(db, url, cfg).uris:
            return db, cfg, url
    raise AssertionError("the walter sample has no article with scorable history")


def json_lines(output):
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_walter_draft_ranks_n_posts_by_the_nightlys_reward(walter_home):
    from walter.redteam import find_article
    from walter.task import score_texts, walter_prompt

    db, cfg, url = scorable_article(walter_home)
    out = CliRunner().invoke(walter_cli, ["draft", "--url", url, "--n", "3", "--home", str(walter_home), "--json"])
    assert out.exit_code == 0, out.output
    rows = json_lines(out.stdout)
    assert [r["rank"] for r in rows] == [1, 2, 3]
    rewards = [r["reward"] for r in rows]
    assert rewards == sorted(rewards, reverse=True)
    emb = CachedEmbedder(load_embedder(cfg.walter.embedder), db)
    again = score_texts(db, walter_prompt(db, find_article(db, url, cfg), emb, cfg), [r["text"] for r in rows],
                        emb, cfg)
    for r, c in zip(rows, again):
        assert {k: r[k] for k in c} == pytest.approx(c)
    table = CliRunner().invoke(walter_cli, ["draft", "--url", url, "--n", "3", "--home", str(walter_home)])
    assert table.exit_code == 0 and f"from run walter at {DAYS[0]}, best first by the reward" in table.output
    assert "[3] " in table.output and "transfer" in table.output and "not ranked" not in table.output


class Page(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path != "/story":
            self.send_response(404)
            self.end_headers()
            return
        body = (b"<html><head><title>fallback</title><meta property='og:title' content='Port reopens after strike'>"
                b"<meta property='og:description' content='Ships queue at Calderra.'></head></html>")
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def page(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_walter_draft_of_an_unstored_article_reads_its_open_graph_card_and_prints_unranked(walter_home, page,
                                                                                          monkeypatch):
    import walter.task

    seen = []
    orig = walter.task.build_prompt
    monkeypatch.setattr(walter.task, "build_prompt", lambda t, d=None: seen.append((t, d)) or orig(t, d))
    out = CliRunner().invoke(walter_cli, ["draft", "--url", f"{page}/story", "--n", "2", "--home", str(walter_home)])
    assert out.exit_code == 0, out.output
    assert seen == [("Port reopens after strike", "Ships queue at Calderra.")]
    lines = out.output.splitlines()
    assert lines[0].startswith("not ranked: no stored post links to ") and "nothing to score" in lines[0]
    assert [line[:4] for line in lines[1:] if line.startswith("[")] == ["[1] ", "[2] "]
    missing = CliRunner().invoke(walter_cli, ["draft", "--url", f"{page}/gone", "--home", str(walter_home)])
    assert missing.exit_code == 1
    assert missing.output.splitlines() == [missing.output.splitlines()[0]]
    assert missing.output.startswith(f"error: could not fetch {page}/gone for its title: HTTPStatusError")


def test_walter_draft_without_a_checkpoint_uses_the_base_model_and_says_so(walter_home, tiny_model_path):
    db, _, url = scorable_article(walter_home)
    out = CliRunner().invoke(walter_cli, ["draft", "--url", url, "--n", "2", "--run", "fresh", "--home",
                                          str(walter_home), "--model", str(tiny_model_path), *TINY])
    assert out.exit_code == 0, out.output
    notes = [line for line in out.output.splitlines() if "no checkpoint" in line]
    assert notes == [f"run fresh has no checkpoint yet: drafting with the base model {tiny_model_path}"]
    assert "best first by the reward" in out.output  # the stored history still ranks the base model's posts


# --- varro forecast --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def varro_run_home(tiny_model_path, tmp_path_factory):
    home = tmp_path_factory.mktemp("varro")
    out = CliRunner().invoke(varro_cli, ["step", "--date", DAYS[0], "--source", "sample", "--home", str(home),
                                         "--model", str(tiny_model_path), "--prompts-per-day", "2", *TINY])
    assert out.exit_code == 0, out.output
    nxt = CliRunner().invoke(varro_cli, ["ingest", "--date", DAYS[1], "--source", "sample", "--home", str(home)])
    assert nxt.exit_code == 0, nxt.output
    return home


def test_varro_forecast_ranks_n_forecasts_against_the_next_days_headlines(varro_run_home):
    from varro.forecast.redteam import find_headline
    from varro.forecast.task import score_texts, varro_prompt

    db = store.open_db(db_path(varro_run_home))
    cfg = draft_config("varro", run_dir("varro", varro_run_home), Config(), {})
    title = db.execute("select title from headlines where day = ? order by id limit 1", [DAYS[0]]).fetchone()[0]
    out = CliRunner().invoke(varro_cli, ["forecast", "--headline", title, "--n", "3", "--home",
                                         str(varro_run_home), "--json"])
    assert out.exit_code == 0, out.output
    rows = json_lines(out.stdout)
    assert len(rows) == 3 and [r["rank"] for r in rows] == [1, 2, 3]
    rewards = [r["reward"] for r in rows]
    assert rewards == sorted(rewards, reverse=True)
    emb = CachedEmbedder(load_embedder(cfg.varro.embedder), db)
    prompt = varro_prompt(db, find_headline(db, DAYS[0], title), emb, cfg)
    again = score_texts(db, prompt, [r["text"] for r in rows], emb, cfg)
    for r, c in zip(rows, again):
        assert {k: r[k] for k in c} == pytest.approx(c)
    table = CliRunner().invoke(varro_cli, ["forecast", "--headline", title, "--n", "3", "--home", str(varro_run_home)])
    assert table.exit_code == 0 and f"from run varro at {DAYS[0]}, best first by the reward" in table.output


def test_varro_forecast_of_an_unstored_headline_prints_unranked_with_one_line(varro_run_home):
    out = CliRunner().invoke(varro_cli, ["forecast", "--headline", "Moon base opens", "--n", "2", "--home",
                                         str(varro_run_home)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == ("not ranked: the headline is not stored, so there is nothing to score these forecasts "
                        "against yet")
    assert [line[:4] for line in lines[1:] if line.startswith("[")] == ["[1] ", "[2] "]
