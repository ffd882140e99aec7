"""Issue 13, Varro: the on-topic reward (own story, gain over "nothing changes"), prose, the object beat.

Integration tests run the real MiniLM over the shipped sample with the
hand-written honest forecasts of varro_honest_forecasts.json; unit tests check
the arithmetic against values worked out by hand.
"""

import dataclasses
import json

import numpy as np
import pytest

from varro.engine.core.config import Config
from varro.forecast.settings import VarroConfig
from varro.forecast.task import PromptError, forecast_targets, headline_stories, score_texts, story_split
from varro.engine.store import open_db
from varro.engine.embed.embedders import CachedEmbedder, HashEmbedder, SentenceEmbedder
from varro.forecast.reward import beat_scores, over_length, prose_score, score_forecast, source_entities
from varro.forecast.headlines import headlines_for_day
from varro_cases import HACKS, hack_texts, load_cases, load_sample, off_topic_template, sample_prompts, source

MARGIN = 0.3  # honest mean minus hack mean, on a reward that spans about [-1, 1]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    db = open_db(tmp_path_factory.mktemp("reward") / "v.db")
    load_sample(db)
    cfg = Config()
    emb = CachedEmbedder(SentenceEmbedder(), db)
    prompts = sample_prompts(db, emb, cfg)
    return db, cfg, emb, prompts, {(p["day"], p["guid"]): p for p in prompts}


@pytest.fixture(scope="module")
def scored_cases(sample):
    """{name: [reward per case]} for the honest forecasts and every hack, plus the components."""
    db, cfg, emb, _, by_key = sample
    data = load_cases()
    cases = data["cases"]
    out = {name: [] for name in ["honest", *HACKS]}
    comps = {name: [] for name in out}
    for i, c in enumerate(cases):
        p = by_key[(c["day"], c["guid"])]
        texts = {"honest": c["honest"], **hack_texts(db, p, c["honest"], cases[(i + 1) % len(cases)]["honest"],
                                                       c["paraphrase"], data["generic"])}
        got = score_texts(db, p, list(texts.values()), emb, cfg)
        for name, r in zip(texts, got):
            out[name].append(r["reward"])
            comps[name].append(r)
    return out, comps


def test_every_honest_case_has_its_own_story_developing(sample, scored_cases):
    _, comps = scored_cases
    assert len(comps["honest"]) == 10
    assert all(c["targets"] >= 1 and c["target_fallback"] == 0.0 for c in comps["honest"])


@pytest.mark.parametrize("hack", HACKS)
def test_honest_forecast_beats_each_hack_by_a_margin(scored_cases, hack):
    rewards, _ = scored_cases
    honest, bad = np.array(rewards["honest"]), np.array(rewards[hack])
    assert honest.mean() - bad.mean() >= MARGIN, (hack, honest.mean(), bad.mean())
    assert (honest > bad).sum() >= 9, (hack, honest - bad)


def test_restating_or_paraphrasing_the_headline_gains_about_nothing(scored_cases):
    """The gain is over the source itself: restating it earns 0 on-topic; without the baseline it earned
    the source's full similarity to its own story's next headlines."""
    _, comps = scored_cases
    restated = [c["on_topic_paid"] for c in comps["restated"]]
    assert max(abs(x) for x in restated) < 0.3
    assert np.mean([c["semantic_gain"] for c in comps["honest"]]) > 0.05
    assert np.mean([c["semantic_gain"] for c in comps["paraphrased"]]) < 0.02


def test_another_storys_forecast_scores_below_the_honest_one(sample):
    """Regression (issue 13): for the Calderra prompt a forecast of the Kestmark rate rise outscored the
    honest Calderra forecast (0.792 vs 0.752), because every next-day headline was a target."""
    db, cfg, emb, _, by_key = sample
    cal = load_cases()["calderra"]
    honest, kestmark = score_texts(db, by_key[(cal["day"], cal["guid"])], [cal["honest"], cal["kestmark"]], emb, cfg)
    assert honest["reward"] - kestmark["reward"] >= 0.5
    assert kestmark["on_topic"] < 0 < honest["on_topic"]


def test_templated_off_topic_and_generic_texts_earn_nothing_over_the_sample(sample):
    """Over every sample prompt with a developing story: another story's templated forecast, one generic
    paragraph and the restated headline all have a non-positive mean on-topic score."""
    db, cfg, emb, prompts, _ = sample
    generic = load_cases()["generic"]
    on_topic = {"off": [], "generic": [], "restated": []}
    for k, p in enumerate(prompts[::4]):  # a quarter of the prompts keeps this fast
        s = source(p)
        others = [q for q in prompts if q["day"] == p["day"] and source(q)["story_id"] != s["story_id"]]
        texts = [off_topic_template(source(others[k % len(others)])), generic, f"{s['title']}. {s['summary']}"]
        got = score_texts(db, p, texts, emb, cfg)
        if got[0]["targets"] and not got[0]["target_fallback"]:
            for name, r in zip(on_topic, got):
                on_topic[name].append(r["on_topic_paid"])
    assert len(on_topic["off"]) >= 15
    assert np.mean(on_topic["off"]) < -0.5 and np.mean(on_topic["generic"]) < -0.5
    assert abs(np.mean(on_topic["restated"])) < 0.15


def test_training_targets_are_the_prompts_own_training_story(sample):
    """A training prompt is scored against its own story (a training story) or, as a fallback, training
    stories only; so no held-out story is ever a training target."""
    db, cfg, emb, prompts, _ = sample
    checked = 0
    for p in prompts:
        if p["split"] != "train":
            continue
        nxt_day = f"2026-11-0{int(p['day'][-1]) + 1}"
        stories = headline_stories(db, nxt_day, emb, cfg)
        targets, fallback = forecast_targets(db, p, emb, cfg)
        assert all(story_split(stories[h["id"]], cfg) == "train" for h in targets)
        if not fallback:
            assert {stories[h["id"]] for h in targets} == {source(p)["story_id"]}
        checked += len(targets)
    assert checked > 100


def test_a_story_without_development_falls_back_to_the_nearest_headlines_or_null(sample):
    """Fallback: the next-day headlines at cosine >= fallback_threshold to the source, flagged; with none,
    semantic is NULL and the forecast is paid for staying on its own story (never all of tomorrow)."""
    db, cfg, emb, prompts, _ = sample
    near, null = [], []
    for p in prompts:
        targets, fallback = forecast_targets(db, p, emb, cfg)
        if fallback:
            (near if targets else null).append((p, targets))
    assert near and null
    for p, targets in near:
        heads = headlines_for_day(db, f"2026-11-0{int(p['day'][-1]) + 1}")
        assert len(targets) < len(heads) / 4
        sims = emb.encode([f"{h['title']} {h['summary']}".strip() for h in targets]) \
            @ emb.encode([f"{source(p)['title']} {source(p)['summary']}".strip()])[0]
        assert sims.min() >= cfg.varro.fallback_threshold
    text = load_cases()["cases"][0]["honest"]
    p, _ = near[0]
    r = score_texts(db, p, [text], emb, cfg)[0]
    assert r["target_fallback"] == 1.0 and r["targets"] >= 1 and r["semantic"] is not None
    p, _ = null[0]
    r = score_texts(db, p, [off_topic_template(source(p))], emb, cfg)[0]  # the template about its own story
    assert r["target_fallback"] == 1.0 and r["targets"] == 0.0
    assert r["semantic"] is None and r["semantic_gain"] is None and r["on_topic"] is None
    w = cfg.varro
    assert r["source_topic"] == pytest.approx(min(1.0, r["cosine_to_source"] / w.topic_full))
    assert r["reward"] == pytest.approx(w.topic_weight * r["source_topic_paid"] + w.format_weight * r["format"]
                                        - w.leak_weight * r["leak"] - w.echo_weight * r["echo"])
    other = score_texts(db, p, [load_cases()["generic"]], emb, cfg)[0]  # off its story: paid less
    assert other["source_topic"] < r["source_topic"] - 0.3


def test_keyword_dumps_do_not_pay(scored_cases):
    """A keyword dump is no prose: no beats, no format, and its similarity cannot pay; a keyword tail on an
    honest forecast costs it (without the prose rule the tail paid within 0.02 of the honest forecast)."""
    rewards, comps = scored_cases
    assert all(c["prose"] == 0.0 and c["format"] == 0.0 for c in comps["keywords"])
    assert all(c["prose"] == 1.0 for c in comps["honest"])
    tail = [c["prose"] for c in comps["honest_keyword_tail"]]
    assert 0.6 < min(tail) and max(tail) < 0.85
    assert np.mean(rewards["honest"]) - np.mean(rewards["honest_keyword_tail"]) >= MARGIN
    assert all(c["prose"] == 0.0 for c in comps["bullets"])


# Unit tests: hand-made vectors and texts.

CFG = VarroConfig()
TITLE = "Dockworkers walk out at Calderra as Valdoria's biggest port grinds to a halt"
SUMMARY = "About 14,000 members of the Valdorian Dockworkers Federation began an open-ended strike at dawn."
HONEST = ("The strike at Calderra will continue for at least three more days, and the queue of ships should rise "
          "by about 20 vessels by Wednesday. Losses for exporters will push the government to call talks, "
          "driven by pressure from retailers. The port authority's daily count will confirm it.")


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_gain_and_on_topic_against_hand_computed_cosines():
    src = unit([1, 0, 0])
    targets = np.stack([unit([0.6, 0.8, 0]), unit([0, 0, 1])])  # cos(src, t0) = 0.6, cos(src, t1) = 0
    text = unit([0.3, 0.9, 0.3162])  # cos to t0 = 0.18 + 0.72 = 0.9, to t1 = 0.3162 / |v|
    r = score_forecast(HONEST, TITLE, SUMMARY, text, src, targets, CFG)
    want_sem = float(max(text @ targets[0], text @ targets[1]))
    assert r["semantic"] == pytest.approx(want_sem, abs=1e-6)
    assert r["semantic_baseline"] == pytest.approx(0.6, abs=1e-6)
    assert r["semantic_gain"] == pytest.approx(want_sem - 0.6, abs=1e-6)
    assert r["on_topic"] == 1.0  # gain about 0.26 > gain_full 0.15: clipped at 1
    same = score_forecast(HONEST, TITLE, SUMMARY, src, src, targets, CFG)  # "nothing changes" itself
    assert same["semantic_gain"] == pytest.approx(0.0, abs=1e-6) and same["on_topic"] == pytest.approx(0.0, abs=1e-5)
    small = score_forecast(HONEST, TITLE, SUMMARY, text, src, targets, dataclasses.replace(CFG, gain_full=0.6))
    assert small["on_topic"] == pytest.approx((want_sem - 0.6) / 0.6, abs=1e-6)
    away = score_forecast(HONEST, TITLE, SUMMARY, targets[1], src, targets[:1], CFG)  # cos 0 vs baseline 0.6
    assert away["semantic_gain"] == pytest.approx(-0.6, abs=1e-6)
    assert away["on_topic"] == pytest.approx(CFG.gain_floor * 0.6 / CFG.loss_full)  # -0.8
    assert away["on_topic_paid"] == away["on_topic"]  # a loss is charged in full, prose or not
    opposite = score_forecast(HONEST, TITLE, SUMMARY, -src, src, targets[:1], CFG)  # cos -0.6: a loss of 1.2
    assert opposite["on_topic"] == CFG.gain_floor


def test_reward_is_the_stated_sum_of_its_components():
    src, targets = unit([1, 0, 0]), np.stack([unit([0.6, 0.8, 0])])
    text = unit([0.7, 0.7, 0.1])
    r = score_forecast(HONEST + " Calderra strike port ships vessels exporters", TITLE, SUMMARY, text, src, targets, CFG)
    assert 0 < r["prose"] < 1 and r["on_topic"] > 0
    assert r["on_topic_paid"] == pytest.approx(r["on_topic"] * r["prose"])
    assert r["reward"] == pytest.approx(CFG.semantic_weight * r["on_topic_paid"] + CFG.format_weight * r["format"]
                                        - CFG.leak_weight * r["leak"] - CFG.echo_weight * r["echo"])


def test_blank_forecast_gets_the_floor_not_zero():
    src, targets = unit([1, 0, 0]), np.stack([unit([0.6, 0.8, 0])])
    r = score_forecast("", TITLE, SUMMARY, np.zeros(3), src, targets, CFG)
    assert r["semantic"] is None and r["on_topic"] == CFG.gain_floor
    assert r["reward"] == pytest.approx(CFG.semantic_weight * CFG.gain_floor)
    untargeted = score_forecast("", TITLE, SUMMARY, np.zeros(3), src, np.zeros((0, 3)), CFG)
    assert untargeted["semantic"] is None and untargeted["source_topic"] == CFG.gain_floor
    assert untargeted["reward"] == pytest.approx(CFG.topic_weight * CFG.gain_floor)


def test_prose_share_counts_words_in_real_sentences():
    two = "The port will stay shut for three more days. The union wants more pay."  # 9 + 5 words
    assert prose_score(two, CFG) == 1.0
    assert prose_score(two + " Calderra strike port union ships vessels", CFG) == pytest.approx(14 / 20)
    assert prose_score("Calderra strike port union ships vessels exporters.", CFG) == 0.0  # no function words
    assert prose_score("- The port will stay shut for three more days.\n- The union wants more pay.", CFG) == 0.0
    assert prose_score("Ships wait.", CFG) == 0.0  # under prose_min_words
    assert prose_score("", CFG) == 0.0


def test_object_beat_needs_the_sources_own_names():
    """Regression (issue 13): any capitalised word after a lower-case one passed the object beat."""
    src = f"{TITLE}\n{SUMMARY}"
    assert source_entities(src) == {"dockworkers", "calderra", "valdoria", "valdorian", "federation"}
    assert beat_scores("Rates in Kestmark will rise by Friday.", src)["object"] == 0.0
    assert beat_scores("The strike at Calderra will end by Friday.", src)["object"] == 1.0
    assert beat_scores("Valdoria's ports will reopen.", src)["object"] == 1.0  # possessive stripped
    assert beat_scores("Talks resume on Wednesday.", "Talks\nTalks resume on Wednesday.")["object"] == 1.0


def test_length_past_the_band_cuts_the_paid_gain():
    assert over_length(" ".join(["word"] * 180), CFG) == 1.0
    assert over_length(" ".join(["word"] * 270), CFG) == pytest.approx(0.5)
    src, targets = unit([1, 0, 0]), np.stack([unit([0.6, 0.8, 0])])
    long = " ".join([HONEST] * 6)  # 6 x 50 words
    r = score_forecast(long, TITLE, SUMMARY, unit([0.6, 0.8, 0]), src, targets, CFG)
    n = r["words"]
    assert n > 180 and r["on_topic"] == 1.0
    assert r["on_topic_paid"] == pytest.approx(1.0 - (n - 180) / 180)


def test_prompt_without_a_story_id_is_a_typed_error(sample):
    db, cfg, emb, prompts, _ = sample
    p = dict(prompts[0], source_json=json.dumps({"title": "x", "summary": ""}))
    with pytest.raises(PromptError, match="story_id"):
        score_texts(db, p, ["text"], emb, cfg)


def test_every_varro_setting_has_a_one_line_help():
    for f in dataclasses.fields(VarroConfig):
        assert f.metadata.get("help") and "\n" not in f.metadata["help"], f.name


def test_hash_embedder_scores_without_the_real_model(tmp_path):
    """score_texts with the fake embedder: own-story targets, every component present."""
    db = open_db(tmp_path / "h.db")
    load_sample(db)
    cfg = Config()
    emb = HashEmbedder()
    prompts = sample_prompts(db, emb, cfg, days=["2026-11-02"])
    r = score_texts(db, prompts[0], [HONEST, ""], emb, cfg)
    for key in ["reward", "semantic", "semantic_baseline", "semantic_gain", "on_topic", "on_topic_paid",
                "source_topic", "source_topic_paid", "targets",
                "target_fallback", "prose", "format", "beat_object", "leak", "echo", "cosine_to_source"]:
        assert key in r[0] and key in r[1]
