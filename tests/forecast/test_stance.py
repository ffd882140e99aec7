"""Issue 26, Varro: a forecast is paid for committing to what happened, not for being near it.

Unit tests pin the clause reading (negation, hedges, rivals, names); integration tests run the real MiniLM
over the shipped sample with the hand-labelled forecasts of data/sample/stance.jsonl (written while the rules
were made) and data/sample/stance_heldout.jsonl (written after, and only measured).
"""

import json
import re
from collections import Counter

import numpy as np
import pytest

from varro.engine.core.config import Config
from varro.engine.embed.embedders import CachedEmbedder, SentenceEmbedder
from varro.engine.core.paths import SAMPLE_DIR
from varro.engine.rewards.text import split_sentences, words
from varro.engine.store import open_db
from varro.forecast.redteam import find_headline, load_varro_sample
from varro.forecast.task import forecast_targets, score_texts, varro_prompt
from varro.forecast.reward import sentence_weight, source_containment, specific_driver
from varro.forecast.settings import VarroConfig
from varro.forecast.stance import committed_text, read, stance

RATES = ["Bank of Kestmark raises key rate to 5.25%, signals more tightening possible",
         "The monetary policy committee voted 6-3 for a quarter-point increase."]
LABELS = ("agree", "contradict", "hedge", "unrelated")


def label(text: str, targets=RATES) -> str:
    return stance(text, targets).label


@pytest.mark.parametrize("text, expected", [
    ("The Bank of Kestmark will raise its key rate by a quarter point on Wednesday.", "agree"),
    ("The Bank of Kestmark will not raise its key rate on Wednesday.", "contradict"),
    ("The Bank of Kestmark is unlikely to raise its key rate on Wednesday.", "contradict"),
    ("The Bank of Kestmark will hold its key rate steady on Wednesday.", "contradict"),
    ("The Bank of Kestmark will cut its key rate on Wednesday.", "contradict"),
    ("Kestmark's key rate may rise or fall on Wednesday.", "hedge"),
    ("The Bank of Kestmark may or may not move its key rate on Wednesday.", "hedge"),
    ("Glaciers in the Orvik range will keep melting.", "unrelated"),
])
def test_a_clause_is_read_for_its_outcome_against_the_news(text, expected):
    assert label(text) == expected


def test_or_between_outcomes_hedges_but_or_more_does_not():
    assert read("The queue should grow to 30 or more as the strike drags on.").hedges == []
    assert len(read("The Alliance could agree a cut or could fail to agree anything.").hedges) == 1
    assert len(read("The bill may pass or fail this week.").hedges) == 1  # two axes, opposite outcomes


def test_a_rivals_win_is_this_ones_loss():
    news = ["Recount upholds Areval's narrow win in Estrelia's presidential runoff"]
    assert label("The recount will confirm Areval's win.", news) == "agree"
    assert label("Korrada will win the recount by a few thousand votes.", news) == "contradict"
    assert label("Areval will lose the presidency.", news) == "contradict"
    # "Recount" opens the headline but is no name: the win is Areval's
    contest = [c for c in read(news[0], frozenset({"areval"})).claims if c.axis == "contest"]
    assert len(contest) == 2 and {c.names for c in contest} == {frozenset({"areval"})}


def test_a_capitalised_outcome_word_inside_a_clause_is_a_name():
    assert read("Aurelis Launch will replace the valve.").claims == []


def test_dropping_a_plan_negates_what_it_would_have_done():
    news = ["Belcany government drops plan to raise retirement age after coalition revolt"]
    assert label("Belcany's government will raise the retirement age to 67 this week.", news) == "contradict"
    assert label("Belcany's government will drop its plan to raise the retirement age.", news) == "agree"


def test_the_red_teams_cheap_wrong_and_hedged_texts_are_read_for_what_they_are():
    """Attacks a red team found against the first rules (issue 26's second round)."""
    launch = ["Vantor-2 lifts off at third attempt, placing Halcyon-3 weather satellite in orbit",
              "Aurelis rocket finally launches Lusadia's Halcyon-3 satellite after two scrubs"]
    # the opposite outcome as a second possibility, in another sentence: a hedge
    two = ("Aurelis could launch Vantor-2 on Friday. Strong winds could just as easily ground the rocket "
           "for a third time.")
    assert stance(two, launch).label == "hedge"
    # a possibility earns nothing; a conditional neither
    assert stance("Aurelis could launch Vantor-2 on Friday.", launch).score == 0.0
    assert stance("If the winds ease, Aurelis will launch Vantor-2 on Friday.", launch).score == 0.0
    assert stance("Aurelis will launch Vantor-2 on Friday.", launch).label == "agree"
    # "after two scrubs" in the news is background: a forecast of no launch is wrong
    assert stance("Aurelis will not launch Vantor-2 on Friday.", launch).label == "contradict"
    assert stance("Whatever happens, Aurelis will confirm the outcome of the Vantor-2 launch.", launch).hedge == 1
    news = ["Sarnova imposes 2.5 million tonne cap on wheat exports through March"]
    assert label("Sarnova will decline to impose a cap on wheat exports this week.", news) == "contradict"
    assert label("Sarnova will impose a cap on wheat exports this week.", news) == "agree"
    # a comma ends a near negation: "Without a new valve, the rocket will launch" launches
    assert read("Without a new valve, the rocket will launch on Friday.").claims[0].values == {1}
    # a verbal negation reaches the first outcome after it, however far
    far = read("Areval will not, after the manual recount at 412 polling stations, keep his victory.")
    assert [c.values for c in far.claims if c.axis == "contest"] == [{-1}]


def test_the_second_red_teams_doubts_and_either_or_are_read():
    assert label("Analysts doubt the Bank of Kestmark will raise its key rate on Wednesday.") == "contradict"
    assert label("Markets wrongly expect the Bank of Kestmark to raise its key rate.") == "contradict"
    orinet = ["Belcany regulator says Orinet's remedies fall short of fixing competition concerns"]
    assert stance("The regulator will either wave Orinet's deal through or say its remedies fall short.",
                  orinet).label == "hedge"


def test_an_instruction_phrase_is_a_whole_phrase():
    from varro.forecast.reward import leak_kinds

    assert leak_kinds("The objections will be answered by Friday.") == []
    assert leak_kinds("It names the object and a direction.") == ["instruction"]


def test_committed_text_leaves_out_the_hedging_clauses():
    text = "Rates may rise or fall. The crown will strengthen by 1% on Wednesday."
    assert committed_text(text) == "The crown will strengthen by 1% on Wednesday."


# --- the labelled forecasts, through the nightly's reward ---------------------------------------------------------

@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    db = open_db(tmp_path_factory.mktemp("stance") / "v.db")
    load_varro_sample(db)
    cfg = Config()
    return db, cfg, CachedEmbedder(SentenceEmbedder(), db)


def labelled(name: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLE_DIR / name).read_text().splitlines() if line.strip()]


def judged(sample, rows) -> list[tuple[dict, list[str]]]:
    """The labelled rows whose prompt has targets, each with what its targets say. A prompt whose story's
    next headlines sit on the other side of the split has none: nothing can say it was right or wrong."""
    db, cfg, emb = sample
    out = []
    for r in rows:
        prompt = varro_prompt(db, find_headline(db, r["day"], r["headline"]), emb, cfg)
        targets, _ = forecast_targets(db, prompt, emb, cfg)
        if targets:
            out.append((r, [x for h in targets for x in (h["title"], h["summary"] or "") if x]))
    return out


def confusion(sample, rows) -> Counter:
    return Counter((r["label"], stance(r["text"], said).label) for r, said in judged(sample, rows))


@pytest.mark.parametrize("name, accuracy", [("stance.jsonl", 0.95), ("stance_heldout.jsonl", 0.85)])
def test_labelled_forecasts_are_read_as_labelled(sample, name, accuracy):
    """The confusion table docs/varro.md reports: 52 forecasts the rules were made on, 28 written after.
    A correct forecast is never read as wrong, nor a wrong one as correct."""
    rows = labelled(name)
    conf = confusion(sample, rows)
    assert len(rows) >= (40 if name == "stance.jsonl" else 28) and set(r["label"] for r in rows) == set(LABELS)
    n = sum(conf.values())
    assert n >= 0.75 * len(rows), (n, len(rows))  # the rest have no target on their side of the split
    assert sum(conf[k, k] for k in LABELS) / n >= accuracy, conf
    assert conf["agree", "contradict"] == conf["contradict", "agree"] == 0, conf


def test_a_correct_forecast_outscores_the_wrong_and_the_hedged_one_on_every_labelled_prompt(sample):
    db, cfg, emb = sample
    by_prompt: dict = {}
    for r in labelled("stance.jsonl") + labelled("stance_heldout.jsonl"):
        by_prompt.setdefault((r["day"], r["headline"]), {})[r["label"]] = r["text"]
    gaps = []
    for (day, key), texts in by_prompt.items():
        prompt = varro_prompt(db, find_headline(db, day, key), emb, cfg)
        if not forecast_targets(db, prompt, emb, cfg)[0]:  # nothing on its side of the split says what happened
            continue
        got = dict(zip(LABELS, score_texts(db, prompt, [texts[k] for k in LABELS], emb, cfg)))
        gaps.append(min(got["agree"]["reward"] - got[k]["reward"] for k in ("contradict", "hedge")))
    assert len(gaps) >= 16 and min(gaps) >= 0.1, gaps


def test_the_title_appended_costs_and_a_long_sentence_costs_little(sample):
    db, cfg, emb = sample
    ref = next(r for r in labelled("stance.jsonl")
               if r["headline"] == "meridian-2026-11-03-001" and r["label"] == "agree")
    prompt = varro_prompt(db, find_headline(db, ref["day"], ref["headline"]), emb, cfg)
    title = json.loads(prompt["source_json"])["title"]
    # its first two sentences joined into one of 43 words
    first, second = (s for s, _ in split_sentences(ref["text"])[:2])
    joined_two = (f"{first.rstrip('.')}, with services inflation as the main driver, and the committee will keep "
                  "the door open to more tightening later.")
    long = ref["text"].replace(f"{first} {second}", joined_two)
    assert long != ref["text"] and max(len(words(s)) for s, _ in split_sentences(long)) == 43
    honest, appended, joined = score_texts(db, prompt, [ref["text"], f"{ref['text']} {title}.", long], emb, cfg)
    assert honest["source_containment"] < cfg.varro.containment_start
    assert appended["source_containment"] == 1.0 and appended["echo"] == 1.0
    assert honest["reward"] - appended["reward"] >= 0.3
    assert 0 <= honest["reward"] - joined["reward"] <= 0.05, (honest["reward"], joined["reward"])


def test_prose_weight_falls_linearly_past_the_longest_sentence():
    w = VarroConfig()
    assert [sentence_weight(n, w) for n in (3, 4, 40, 43, 60, 80, 90)] == pytest.approx(
        [0.0, 1.0, 1.0, 0.925, 0.5, 0.0, 0.0])


def test_containment_is_of_the_sources_words_not_the_forecasts():
    title = "Dockworkers walk out at Calderra as Valdoria's biggest port grinds to a halt"
    padded = "A long forecast about ships, unions, exporters and mediators, " * 6 + title
    assert source_containment(padded, title, None) == 1.0
    assert source_containment("The Calderra port will reopen.", title, None) == 0.0
    assert np.isclose(source_containment("walk out at Calderra today", title, None), 3 / 12)


def test_a_driver_must_name_something():
    assert not specific_driver("It is driven by pressure from markets, officials and the public.")
    assert specific_driver("It is driven by services inflation and the weak crown.")
