"""`varro score`, `walter score` and the red team (`varro hacks`, `walter hacks`) on the shipped sample."""

import dataclasses
import json
import re

import pytest
from click.testing import CliRunner

from varro.engine import store as dbm
from varro.engine.rewards import redteam as eh
from varro.forecast import redteam as vh
from varro.cli import cli as varro_cli
from varro.engine.core.config import Config
from varro.engine.embed.embedders import CachedEmbedder, HashEmbedder
from varro.engine.core.paths import db_path
from varro.forecast.reward import INSTRUCTION
from varro.forecast.headlines import headlines_for_day
from varro.engine.rewards.text import content_words, longest_shared_ngram, sentence_count, words
from walter import redteam as wh
from walter.cli import cli as walter_cli
from walter.reward import EMOJI_RUN_RE, HASHTAG_RE, URL_RE, graphemes

CALDERRA = "https://harborwire.example/world/2026/11/02/dockworkers-walk-out-calderra-valdorias-biggest-port"


def hash_config(any_fallback: bool = False) -> Config:
    """The sample's config on the hash embedder. It links no story, so a held-out prompt has no own-story
    target and varro_cases leaves it out (a forecast with no target is not a case of the red team); with
    `any_fallback` every next-day headline on the prompt's side of the split stands in."""
    cfg = Config()
    cfg.varro.embedder = cfg.walter.embedder = "hash"
    if any_fallback:
        cfg.varro.fallback_threshold = -1.0
    return cfg


@pytest.fixture(scope="module")
def sample_home(tmp_path_factory):
    """A data folder whose database holds both apps' whole sample."""
    home = tmp_path_factory.mktemp("home")
    db = dbm.open_db(db_path(home))
    vh.load_varro_sample(db)
    wh.load_walter_sample(db)
    return home


@pytest.fixture(scope="module")
def sample_db(sample_home):
    return dbm.open_db(db_path(sample_home))


def invoke(cli, *args):
    return CliRunner().invoke(cli, [*args, "--embedder", "hash"])


def one_line_error(out, *needles):
    assert out.exit_code == 1, out.output
    assert "Traceback" not in out.output and not isinstance(out.exception, (LookupError, AttributeError))
    lines = out.output.strip().splitlines()
    assert len(lines) == 1, out.output
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- score ---------------------------------------------------------------------------------------------------

TEXTS = ["The Calderra strike will last through the week, with 30 ships waiting by Thursday because the gap "
         "is wide. The port authority's vessel count will show it.", "Dockworkers walk out at Calderra."]


def test_varro_score_json_equals_score_texts_on_a_stored_prompt(sample_home, sample_db):
    from varro.forecast.task import choose_prompts, score_texts

    cfg = hash_config()
    emb = CachedEmbedder(HashEmbedder(), sample_db)
    prompt = choose_prompts(sample_db, "2026-11-03", emb, cfg)[0]
    head = json.loads(prompt["source_json"])
    expected = score_texts(sample_db, prompt, TEXTS, emb, cfg)
    guid = sample_db.execute("select guid from headlines where id = ?", [head["headline_id"]]).fetchone()[0]
    for key in [head["title"], guid, head["headline_id"]]:  # matched by exact title, guid or id
        out = invoke(varro_cli, "score", "--date", "2026-11-03", "--headline", key, "--text", TEXTS[0],
                     "--text", TEXTS[1], "--json", "--home", str(sample_home))
        assert out.exit_code == 0, out.output
        got = [json.loads(line) for line in out.output.splitlines()]
        assert [g.pop("text") for g in got] == TEXTS
        assert got == expected  # JSON keeps floats exactly
        assert set(got[0]) >= {"reward", "semantic", "format", "leak", "echo"}


def test_varro_score_table_builds_the_prompt_of_an_unchosen_headline(sample_home, sample_db):
    from varro.forecast.task import headline_stories, score_texts, story_split

    cfg = hash_config()
    emb = CachedEmbedder(HashEmbedder(), sample_db)
    h = next(r for r in headlines_for_day(sample_db, "2026-11-02") if r["guid"] == "harbor-2026-11-02-001")
    assert not list(sample_db.query("select id from prompts where id = ?", [f"varro:2026-11-02:{h['id']}"]))
    story = headline_stories(sample_db, "2026-11-02", emb, cfg)[h["id"]]
    prompt = {"id": f"varro:2026-11-02:{h['id']}", "app": "varro", "day": "2026-11-02",
              "split": story_split(story, cfg), "text": "",
              "source_json": json.dumps({"headline_id": h["id"], "title": h["title"], "summary": h["summary"],
                                         "source": h["source"], "link": h["link"], "story_id": story})}
    expected = score_texts(sample_db, prompt, TEXTS, emb, cfg)
    out = invoke(varro_cli, "score", "--date", "2026-11-02", "--headline", h["title"], "--text", TEXTS[0],
                 "--text", TEXTS[1], "--home", str(sample_home))
    assert out.exit_code == 0, out.output
    assert f"({prompt['split']}): {h['title']}" in out.output and "headlines of 2026-11-03" in out.output
    rows = {line.split()[0]: line.split()[1:] for line in out.output.splitlines()}
    for key in expected[0]:
        assert rows[key] == [f"{c[key]:.3f}" if c[key] is not None else "-" for c in expected], key


def test_varro_score_missing_targets_are_one_line_errors(sample_home):
    out = invoke(varro_cli, "score", "--date", "2026-11-08", "--headline", "harbor-2026-11-08-001",
                 "--text", "x", "--home", str(sample_home))
    one_line_error(out, "no headlines for 2026-11-09")
    out = invoke(varro_cli, "score", "--date", "2026-11-02", "--headline", "No such headline", "--text", "x",
                 "--home", str(sample_home))
    one_line_error(out, "no stored headline of 2026-11-02", "'No such headline'", "40 headlines")
    out = invoke(varro_cli, "score", "--date", "2026-11-02", "--headline", "harbor-2026-11-02-001", "--text", "x")
    one_line_error(out, "no database at")  # the empty per-test home: nothing is created there
    dbm.open_db(db_path())  # an empty database: the headline is not there
    out = invoke(varro_cli, "score", "--date", "2026-11-02", "--headline", "harbor-2026-11-02-001", "--text", "x")
    one_line_error(out, "no stored headline of 2026-11-02", "0 headlines")


def test_walter_score_json_equals_score_texts(sample_home, sample_db):
    from walter.task import score_texts

    cfg = hash_config()
    emb = CachedEmbedder(HashEmbedder(), sample_db)
    expected = score_texts(sample_db, {"source_json": json.dumps({"url_norm": CALDERRA})}, TEXTS, emb, cfg)
    for url in [CALDERRA, CALDERRA.replace("https://", "http://www.") + "/?utm_source=bsky"]:
        out = invoke(walter_cli, "score", "--url", url, "--text", TEXTS[0], "--text", TEXTS[1], "--json",
                     "--home", str(sample_home))
        assert out.exit_code == 0, out.output
        got = [json.loads(line) for line in out.output.splitlines()]
        assert [g.pop("text") for g in got] == TEXTS
        assert got == expected  # JSON keeps floats exactly
    out = invoke(walter_cli, "score", "--url", CALDERRA, "--text", TEXTS[1], "--home", str(sample_home))
    assert out.exit_code == 0 and "scored against its 10 historical posts" in out.output
    rows = {line.split()[0]: line.split()[1:] for line in out.output.splitlines()}
    assert rows["copy"] == [f"{expected[1]['copy']:.3f}"] and rows["reward"] == [f"{expected[1]['reward']:.3f}"]


def test_walter_score_missing_targets_are_one_line_errors(sample_home, sample_db):
    out = invoke(walter_cli, "score", "--url", "https://example.org/nothing", "--text", "x",
                 "--home", str(sample_home))
    one_line_error(out, "no stored post links to https://example.org/nothing")
    last_day = sample_db.execute("select url_norm from bsky_posts where day = '2026-11-06' limit 1").fetchone()[0]
    out = invoke(walter_cli, "score", "--url", last_day, "--text", "x", "--home", str(sample_home))
    one_line_error(out, "has no scorable history yet")


# --- the references and the catalogues ------------------------------------------------------------------------

def test_honest_references_are_forecasts_and_own_posts_that_resolve_on_the_sample(sample_db):
    cfg = hash_config(any_fallback=True)
    emb = CachedEmbedder(HashEmbedder(), sample_db)
    varro_refs, walter_refs = eh.load_references(None, "varro"), eh.load_references(None, "walter")
    assert len(varro_refs) == len(walter_refs) == 8
    for r in varro_refs:  # one short paragraph: 3-5 sentences, 60-180 words, no bullets or lines
        assert 3 <= sentence_count(r["text"]) <= 5 and 60 <= len(words(r["text"])) <= 180, r["headline"]
        assert "\n" not in r["text"]
    cases, notes = vh.varro_cases(sample_db, varro_refs, emb, cfg)
    assert len(cases) == 8 and notes == []
    assert len({c.source["story_id"] for c in cases}) == 8
    wcases, notes = wh.walter_cases(sample_db, walter_refs, emb, cfg)
    assert len(wcases) == 8 and notes == []
    for r in walter_refs:  # not a copy of any stored post of the article
        h = wh.find_article(sample_db, r["url"], cfg)
        assert graphemes(r["text"]) <= 300
        assert max(longest_shared_ngram(r["text"], p) for p in h.texts) < cfg.walter.copy_ngram, r["url"]


@pytest.fixture(scope="module")
def varro_cases(sample_db):
    return vh.varro_cases(sample_db, eh.load_references(None, "varro"),
                          CachedEmbedder(HashEmbedder(), sample_db), hash_config(any_fallback=True))[0]


@pytest.fixture(scope="module")
def walter_cases(sample_db):
    return wh.walter_cases(sample_db, eh.load_references(None, "walter"),
                           CachedEmbedder(HashEmbedder(), sample_db), hash_config(any_fallback=True))[0]


def test_every_varro_hack_is_built_from_its_prompt(varro_cases):
    names = [h.name for h in vh.VARRO_CATALOGUE]
    assert set(names) >= {"other-story", "generic", "restated", "paraphrased", "keywords", "honest+keywords",
                          "instruction-echo", "bullets", "blank"}
    generics = set()
    for case in varro_cases:
        s = case.source
        built = eh.build_hacks(case, vh.VARRO_CATALOGUE)
        assert list(built) == names
        assert all(t != case.honest for t in built.values())
        assert built["blank"] == ""
        others = {c.honest for c in varro_cases if c.source["story_id"] != s["story_id"]}
        assert built["other-story"] in others
        generics.add(built["generic"])
        assert built["restated"].startswith(s["title"]) and (s["summary"] or "") in built["restated"]
        assert built["paraphrased"] != built["restated"]
        assert len(words(built["paraphrased"])) >= len(words(built["restated"])) - 2
        day_words = {w for t in case.data["day_titles"] for w in content_words(t)}
        stuffed = built["keywords"].split()
        assert len(stuffed) == 30 and set(stuffed) <= day_words
        assert built["honest+keywords"].startswith(case.honest + " ")
        assert built["honest+keywords"].split()[-15:] == stuffed[:15]
        assert built["instruction-echo"] == INSTRUCTION
        bullets = built["bullets"].splitlines()
        assert len(bullets) == sentence_count(case.honest) and all(b.startswith("- ") for b in bullets)
        assert " ".join(b[2:] for b in bullets) == case.honest
    assert len(generics) == 1  # the same paragraph for every prompt


def test_every_walter_hack_is_built_from_its_article(walter_cases, sample_db):
    cfg = hash_config()
    names = [h.name for h in wh.WALTER_CATALOGUE]
    assert set(names) >= {"top-post", "top-post-drop5", "top-post-synonyms", "title", "hashtags", "emoji-runs",
                          "bare-link", "praise", "reply-bait"}
    for case in walter_cases:
        h = wh.find_article(sample_db, case.source["url_norm"], cfg)
        built = eh.build_hacks(case, wh.WALTER_CATALOGUE)
        assert list(built) == names
        assert all(t != case.honest and t.strip() for t in built.values())
        assert built["top-post"] in h.texts and h.weights[h.texts.index(built["top-post"])] == h.weights.max()
        top = built["top-post"].split()
        dropped = built["top-post-drop5"].split()
        assert dropped == [w for i, w in enumerate(top, 1) if i % 5] and len(dropped) < len(top)
        swapped = built["top-post-synonyms"].split()
        assert swapped != top and len(swapped) >= len(top)
        assert built["title"] == h.title
        tags = HASHTAG_RE.findall(built["hashtags"])
        assert len(tags) > cfg.walter.hashtag_limit + 3 and not re.sub(r"#\w+|\s", "", built["hashtags"])
        assert EMOJI_RUN_RE.search(built["emoji-runs"]) and h.title in built["emoji-runs"]
        assert built["bare-link"] == h.url_norm and URL_RE.fullmatch(built["bare-link"])
        assert built["praise"] == "Great read!" and built["reply-bait"].endswith("replies.")
        assert built["other-story"] in {c.honest for c in walter_cases if c is not case}


# --- the runner -----------------------------------------------------------------------------------------------

def test_run_hacks_margins_on_a_tiny_fake():
    cases = [eh.Case({"id": "p1", "source_json": "{}"}, "honest one"),
             eh.Case({"id": "p2", "source_json": "{}"}, "honest two")]
    rewards = {"honest one": 1.0, "honest two": 0.5, "low-p1": 0.2, "low-p2": 0.1, "near-p1": 0.7,
               "near-p2": 0.45, "only-p1": 0.95}
    catalogue = (eh.Hack("low", "", lambda c: f"low-{c.prompt['id']}"),
                 eh.Hack("near", "", lambda c: f"near-{c.prompt['id']}"),
                 eh.Hack("only-one", "", lambda c: "only-p1" if c.prompt["id"] == "p1" else None),
                 eh.Hack("never", "", lambda c: None))
    calls = []

    def fake_score(db, prompt, texts, embedder, cfg):
        calls.append((prompt["id"], texts))
        return [{"reward": rewards[t], "other": 0.0} for t in texts]

    res = {r.name: r for r in eh.run_hacks(None, cases, catalogue, fake_score, None, None, margin=0.1)}
    assert calls == [("p1", ["honest one", "low-p1", "near-p1", "only-p1"]),
                     ("p2", ["honest two", "low-p2", "near-p2"])]
    low, near, one, never = res["low"], res["near"], res["only-one"], res["never"]
    assert (low.n, low.mean, low.honest_mean) == (2, pytest.approx(0.15), pytest.approx(0.75))
    assert low.below == pytest.approx(0.6) and low.worst == pytest.approx(0.4) and low.result == "PASS"
    # a mean 0.175 below honest, but 0.05 on p2: judged by its worst prompt, within the margin
    assert near.below == pytest.approx(0.175) and near.worst == pytest.approx(0.05) and near.result == "FAIL"
    assert near.worst_case["prompt_id"] == "p2" and low.worst_case["prompt_id"] == "p2"
    assert (one.n, one.honest_mean, one.below, one.result) == (1, 1.0, pytest.approx(0.05), "FAIL")
    assert never.n == 0 and never.result == "SKIP"
    strict = {r.name: r.result for r in eh.run_hacks(None, cases, catalogue, fake_score, None, None, margin=0.2)}
    assert strict == {"low": "PASS", "near": "FAIL", "only-one": "FAIL", "never": "SKIP"}
    table = eh.format_results(list(res.values()), "head").splitlines()
    assert table[0] == "head" and table[2].split() == ["low", "2", "0.150", "0.750", "0.600", "0.400", "PASS", "p2"]
    assert table[-1] == "2 of 4 hacks at least 0.1 below honest on every prompt; within the margin: near, only-one"
    with pytest.raises(eh.HackError):
        eh.run_hacks(None, [], catalogue, fake_score, None, None)


def _generic_scores_like_honest(gap):
    def fake(db, prompt, texts, embedder, cfg):
        return [{"reward": 1.0 if i == 0 else (1.0 - gap if t == vh.GENERIC_FORECAST else 0.0), "x": 0.0}
                for i, t in enumerate(texts)]
    return fake


def test_varro_hacks_exits_1_when_a_hack_scores_within_the_margin(monkeypatch):
    monkeypatch.setattr(vh, "VARRO", dataclasses.replace(vh.VARRO, score_texts=_generic_scores_like_honest(0.05)))
    any_target = ("--fallback-threshold", "-1")  # the hash embedder links no story: see hash_config
    out = invoke(varro_cli, "hacks", "--sample", *any_target)
    assert out.exit_code == 1, out.output
    rows = {line.split()[0]: line.split() for line in out.output.splitlines() if line.split()}
    assert rows["generic"][:7] == ["generic", "8", "0.950", "1.000", "0.050", "0.050", "FAIL"]
    assert rows["blank"][6] == "PASS" and rows["blank"][4] == "1.000"
    assert "error: 1 hacks within 0.1 of honest: generic" in out.output
    assert invoke(varro_cli, "hacks", "--sample", "--margin", "0.04", *any_target).exit_code == 0
    out = invoke(varro_cli, "hacks", "--sample", "--json", *any_target)
    got = {json.loads(line)["hack"]: json.loads(line) for line in out.output.splitlines() if line.startswith("{")}
    assert got["generic"]["result"] == "FAIL" and got["generic"]["below"] == pytest.approx(0.05)
    assert len(got["generic"]["cases"]) == 8 and got["generic"]["cases"][0]["text"] == vh.GENERIC_FORECAST


def test_hacks_on_stored_data_equal_the_sample_and_say_when_nothing_is_stored(sample_home):
    stored = invoke(varro_cli, "hacks", "--home", str(sample_home), "--json")
    sample = invoke(varro_cli, "hacks", "--sample", "--json")
    assert stored.exit_code == sample.exit_code and stored.output == sample.output
    one_line_error(invoke(varro_cli, "hacks"), "no database at")  # the empty per-test home: nothing created
    dbm.open_db(db_path())
    for cli, app in [(varro_cli, "varro"), (walter_cli, "walter")]:
        one_line_error(invoke(cli, "hacks"), f"none of the 8 honest {app} references has its target stored",
                       "--sample")


def test_walter_hacks_table_lists_every_hack(monkeypatch):
    monkeypatch.setattr(wh, "WALTER", dataclasses.replace(
        wh.WALTER, score_texts=lambda db, p, texts, e, c: [{"reward": 0.5 if i == 0 else 0.0}
                                                           for i, _ in enumerate(texts)]))
    out = invoke(walter_cli, "hacks", "--sample")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == "walter: 8 honest references on the shipped sample, hash"
    assert [line.split()[0] for line in lines[2:-1]] == [h.name for h in wh.WALTER_CATALOGUE]
    assert all(line.split()[1:7] == ["8", "0.000", "0.500", "0.500", "0.500", "PASS"] for line in lines[2:-1])
    assert lines[-1] == f"{len(wh.WALTER_CATALOGUE)} of {len(wh.WALTER_CATALOGUE)} hacks at least 0.05 below honest on every prompt"


@pytest.fixture(scope="module")
def minilm_hacks():
    """Every hack of both catalogues with the real reward and the real MiniLM, {(app, hack): result}."""
    runner, out = CliRunner(), {}
    for app, cli in (("varro", varro_cli), ("walter", walter_cli)):
        res = runner.invoke(cli, ["hacks", "--sample", "--json"])
        for line in res.output.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                out[app, row["hack"]] = row
    return out


@pytest.mark.slow
def test_every_hack_scores_clearly_below_honest_on_every_prompt_with_minilm(minilm_hacks):
    """Varro 0.1 and Walter 0.05 below honest on every prompt, the worst included; 15 and 14 hacks."""
    assert sum(app == "varro" for app, _ in minilm_hacks) == len(vh.VARRO_CATALOGUE) == 15
    assert sum(app == "walter" for app, _ in minilm_hacks) == len(wh.WALTER_CATALOGUE) == 14
    for (app, hack), row in minilm_hacks.items():
        assert row["result"] == "PASS" and row["worst"] >= (0.1 if app == "varro" else 0.05), row


@pytest.mark.slow
def test_every_paraphrase_loses_what_it_paraphrased(minilm_hacks):
    """All eight hand-written paraphrases of an article's top post score at least 0.05 under the honest post:
    the ones the whole-text cosine cannot tell from another author's own take (Calderra's at 0.74 where another
    author's summary came to 0.86) lose the top post's credit point by point (walter.reward `restated`)."""
    cases = minilm_hacks["walter", "top-post-paraphrase"]["cases"]
    below = [c["honest"] - c["reward"] for c in cases]
    assert len(cases) == 8 and min(below) >= 0.05, below
