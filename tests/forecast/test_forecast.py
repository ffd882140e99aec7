"""Varro's reward components on hand-written forecasts, with the real MiniLM and the fake embedder."""

import numpy as np
import pytest

from varro.forecast.settings import VarroConfig
from varro.engine.embed.embedders import HashEmbedder, SentenceEmbedder
from varro.forecast.reward import beat_scores, leak_kinds, score_forecast, INSTRUCTION
from varro.forecast.task import build_prompt
from varro.engine.rewards.text import longest_shared_ngram, repeated_ngram_rate, sentence_count

TITLE = "Dockworkers walk out at Calderra as Valdoria's biggest port grinds to a halt"
SUMMARY = ("About 14,000 members of the Valdorian Dockworkers Federation began an open-ended strike at dawn "
           "after talks on a 9% wage demand collapsed.")
NEXT_DAY = [
    "Ships queue off Calderra: 41 vessels now waiting as strike enters second day",
    "Valdorian exporters estimate Calderra stoppage is costing $110 million a day",
    "Bank of Kestmark raises its key rate to 5.25% in a split vote",
    "Corvane's RSV vaccine shows 78% efficacy in late-stage trial",
]
OWN_STORY = NEXT_DAY[:2]  # the targets: the next-day headlines of the prompt's own story (issue 13)
CASES = {
    "good": ("Calderra's port will stay shut for at least three more days, and the queue of waiting ships "
             "should grow from 23 to about 40 by Wednesday. The union's 9% wage demand against the port "
             "authority's 4% offer leaves a wide gap, driven by inflation that has eaten into dockworkers' pay. "
             "Pressure from exporters losing money every day should push the labour ministry to call both "
             "sides to talks within the week. We will know from the port authority's daily count of ships at "
             "anchor and from any statement announcing new negotiations."),
    "echo": ("Dockworkers walk out at Calderra as Valdoria's biggest port grinds to a halt. About 14,000 "
             "dockworkers began an open-ended strike at dawn at Calderra, Valdoria's biggest port."),
    "leak": ("Note: As an AI, here is my forecast with the five beats. The object: the port. A direction: up. "
             "Tight timeframe: soon. Named drivers: the union. Way to verify: the news."),
    "bullets": ("- The strike will continue for three days.\n- Ships will wait longer because of the union.\n"
                "- The ministry will announce talks by Friday."),
    "empty": "",
}


@pytest.fixture(scope="module", params=["minilm", "hash"])
def scored(request):
    emb = SentenceEmbedder() if request.param == "minilm" else HashEmbedder()
    nv = emb.encode(OWN_STORY)
    sv = emb.encode([f"{TITLE} {SUMMARY}"])[0]
    out = {"_embedder": request.param}
    for name, text in CASES.items():
        tv = emb.encode([text])[0] if text else np.zeros_like(sv)
        out[name] = score_forecast(text, TITLE, SUMMARY, tv, sv, nv, VarroConfig())
    return out


def test_honest_forecast_beats_every_hack(scored):
    good = scored["good"]
    assert good["format"] == 1.0 and good["leak"] == 0.0 and good["echo"] == 0.0
    for hack in ["echo", "leak", "bullets", "empty"]:
        assert scored[hack]["reward"] < good["reward"] - 0.2, hack


def test_echo_is_an_explicit_penalty(scored):
    echo = scored["echo"]
    assert echo["echo"] > 0.5
    # without the penalty term the echo would not be so far behind: the term is what does it
    w = VarroConfig()
    assert echo["reward"] == pytest.approx(w.semantic_weight * echo["on_topic_paid"] + w.format_weight * echo["format"]
                                           - w.leak_weight * echo["leak"] - w.echo_weight * echo["echo"])


def test_leaks_are_flagged_by_kind(scored):
    assert scored["leak"]["leak_meta"] == 1.0 and scored["leak"]["leak_instruction"] == 1.0
    assert scored["leak"]["leak"] == 1.0
    assert scored["bullets"]["leak_bullets"] == 1.0 and scored["bullets"]["leak"] == 0.5


def test_empty_forecast_gets_the_on_topic_floor(scored):
    # issue 13: an empty forecast is charged the on-topic floor, so silence never beats a wrong guess
    e = scored["empty"]
    assert (e["semantic"], e["format"], e["words"], e["echo"]) == (None, 0.0, 0.0, 0.0)
    assert e["reward"] == pytest.approx(VarroConfig().semantic_weight * VarroConfig().gain_floor)


def test_semantic_picks_the_follow_up_headline(scored):
    if scored["_embedder"] != "minilm":
        pytest.skip("only the real embedder understands the story")
    assert scored["good"]["semantic"] > 0.5
    # closer to the story's next headlines than the headline itself is: a gain over "nothing changes"
    assert scored["good"]["semantic_gain"] > 0.05 and scored["good"]["on_topic"] > 0.3
    assert scored["echo"]["semantic_gain"] < scored["good"]["semantic_gain"]


def test_beats_use_word_boundaries():
    assert beat_scores("Supply chains will matter.", TITLE)["direction"] == 0.0  # "up" is not in "supply"
    assert beat_scores("Prices will go up.", TITLE)["direction"] == 0.5
    assert beat_scores("Prices will go up 2%.", TITLE)["direction"] == 1.0
    assert beat_scores("It ends someday.", TITLE)["timeframe"] == 0.0  # "monday" inside "someday"
    assert beat_scores("It ends by Friday.", TITLE)["timeframe"] == 1.0
    assert beat_scores("The data will confirm it.", TITLE)["verification"] == 1.0
    assert beat_scores("Metadata matters.", TITLE)["verification"] == 0.0


def test_instruction_echo_and_markdown_are_leaks():
    assert "instruction" in leak_kinds("Say what will change, in which direction and by roughly how much.")
    assert "markdown" in leak_kinds("**Forecast** the port reopens")
    assert leak_kinds(CASES["good"]) == []


def test_prompt_is_short_and_carries_the_headline():
    p = build_prompt(TITLE, SUMMARY)
    assert p.startswith(f"Headline: {TITLE}\nSummary: {SUMMARY}")
    assert 3 <= sentence_count(INSTRUCTION) <= 5
    assert "Summary" not in build_prompt(TITLE, "")


def test_text_helpers():
    assert sentence_count("One. Two! Three? four") == 4
    assert repeated_ngram_rate("a b c a b c") == pytest.approx(1 - 3 / 4)
    assert longest_shared_ngram("the port will reopen on monday", "we think the port will reopen soon") == 4
