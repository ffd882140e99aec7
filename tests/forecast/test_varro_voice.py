"""Voice each night: the model's cadence against the humans it learns from, and one template for all."""

import json

import numpy as np
import pytest

from support.helpers import building_home, copy_home, tiny_config
from varro.engine import store as dbm
from support.helpers import varro_human_items, varro_step as step
from varro.engine.embed.embedders import HashEmbedder
from varro.engine.eval.voice import voice_data


def voice_config(model_path):
    cfg = tiny_config(model_path)
    cfg.sampling.max_tokens, cfg.sampling.group_size, cfg.varro.prompts_per_day = 12, 4, 4
    return cfg


@pytest.fixture(scope="module")
def ran_once(tiny_model_path, tmp_path_factory):
    """Three nights of run "r", run once for the module (seeded, so each test's copy is what running them
    afresh would give)."""
    folder = tmp_path_factory.mktemp("voice")
    with building_home(folder):
        db = dbm.open_db(folder / "v.db")
        cfg = voice_config(tiny_model_path)
        for d in ["2026-11-02", "2026-11-03", "2026-11-04"]:
            step(db, cfg, "r", folder / "runs" / "r", d, HashEmbedder())
        db.conn.close()
    return folder


@pytest.fixture
def ran(ran_once, tiny_model_path, tmp_path):
    """The three nights copied into this test's folder: the tests re-run a night and rewrite completions."""
    copy_home(ran_once, tmp_path)
    return dbm.open_db(tmp_path / "v.db"), voice_config(tiny_model_path), tmp_path / "runs" / "r"


def test_every_completion_and_the_human_text_get_a_cadence_once(ran):
    db, cfg, run = ran
    n = db.execute("select count(*) from rollouts").fetchone()[0]
    assert db.execute("select count(*) from cadence").fetchone()[0] == n
    heads = db.execute("select count(*) from headlines").fetchone()[0]
    human = db.execute("select count(*) from human_cadence where app = 'varro'").fetchone()[0]
    assert human == heads == 120  # each night scores its own headlines, yesterday's targets, once
    created = db.execute("select max(created_utc) from human_cadence").fetchone()[0]
    step(db, cfg, "r", run, "2026-11-04", HashEmbedder())  # a re-run computes nothing again
    assert db.execute("select count(*) from human_cadence").fetchone()[0] == human
    assert db.execute("select max(created_utc) from human_cadence").fetchone()[0] == created
    f = json.loads(db.execute("select features_json from cadence limit 1").fetchone()[0])
    assert set(f) == {"mean_surprisal", "spike_rate", "spike_gap", "entropy_drop", "sentence_cv", "hapax_ratio"}


def test_voice_data_compares_each_day_with_its_human_band(ran):
    db, cfg, run = ran
    data = voice_data(db, "varro", "r", varro_human_items)
    assert [d["day"] for d in data] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    d = data[0]  # forecasts of 11-02 against the headlines of 11-03
    feats = [json.loads(r[0]) for r in db.execute(
        "select c.features_json from cadence c join rollouts r on r.id = c.rollout_id where r.day = '2026-11-02'")]
    want = np.mean([f["mean_surprisal"] for f in feats])
    assert d["model"]["mean_surprisal"] == pytest.approx(want)
    assert d["humans"] == db.execute("select count(*) from headlines where day = '2026-11-03'").fetchone()[0]
    assert d["human"]["mean_surprisal"][1] > 0 and d["distance"] > 0
    assert data[-1]["humans"] == 0 and data[-1]["distance"] is None  # 11-05's headlines are not in yet
    assert 0.0 <= d["template_share"] <= 1.0
    assert data[1]["entropy"] is not None  # the updates made on 11-03


def test_a_templated_day_trips_the_cross_group_monitor(ran):
    from varro.engine.run.policy import Policy
    from varro.engine.eval.voice import voice_stage

    db, cfg, run = ran
    day = "2026-11-03"
    before = db.execute("select template_share from voice_days where day = ?", [day]).fetchone()[0]
    assert before < 0.5  # the tiny model's own completions differ across prompts
    db.execute("update rollouts set completion = 'The port will reopen within days as talks resume.' "
               "where day = ?", [day])
    db.conn.commit()
    voice_stage(db, "varro", "r", day, Policy.open(cfg, run), varro_human_items, HashEmbedder(), [])
    assert db.execute("select template_share from voice_days where day = ?", [day]).fetchone()[0] == 1.0
    data = {d["day"]: d for d in voice_data(db, "varro", "r", varro_human_items)}
    assert data[day]["template_share"] == 1.0


def test_the_report_shows_the_voice_against_the_human_band(ran, tmp_path):
    from varro.engine.eval.report import build_report, report_data

    db, cfg, run = ran
    data = report_data(db, "varro", "r")
    assert data["voice"][0]["distance"] == pytest.approx(voice_data(db, "varro", "r", varro_human_items)[0]["distance"])
    page = build_report(db, "varro", "r", tmp_path / "report.html").read_text()
    assert "<h2>Voice</h2>" in page and "template share" in page
    files = tmp_path / "report_files"
    assert (files / "cadence_mean_surprisal.png").stat().st_size > 1000
    assert (files / "voice_distance.png").is_file() and (files / "voice_sameness.png").is_file()
