"""Varro's red team: the hacks a forecaster could drift to, and how `varro score` finds a stored headline.

The runner is the engine's (varro.engine.rewards.redteam); the honest references are
data/sample/honest.jsonl.
"""

from __future__ import annotations

import re

import sqlite_utils

from varro.engine.core.config import Config
from varro.engine.core.dates import shift
from varro.engine.embed.embedders import Embedder
from varro.engine.rewards.redteam import Case, Hack, HackError, RedTeam, keywords, sentences, swap_words, with_other_stories
from varro.forecast.headlines import headlines_for_day
from varro.forecast.reward import INSTRUCTION, source_entities
from varro.forecast.task import forecast_targets, score_texts, varro_prompt


# --- Varro: a stored headline --------------------------------------------------------------------------

def find_headline(db: sqlite_utils.Database, day: str, key: str) -> dict:
    """The stored headline of `day` whose id, guid or exact title is `key`. Raises HackError."""
    rows = list(db.query("select * from headlines where day = ? and (id = ? or guid = ? or title = ?) "
                         "order by id", [day, key, key, key]))
    exact = [r for r in rows if key in (r["id"], r["guid"])]
    if exact:
        return exact[0]
    if len(rows) == 1:
        return rows[0]
    if rows:
        raise HackError(f"{len(rows)} headlines of {day} have the title {key!r}: pass a guid or id "
                        f"({', '.join(r['id'] for r in rows)})")
    stored = db.execute("select count(*) from headlines where day = ?", [day]).fetchone()[0]
    raise HackError(f"no stored headline of {day} has the title, guid or id {key!r} ({stored} headlines "
                    f"stored for {day})")


def varro_cases(db: sqlite_utils.Database, refs: list[dict], embedder: Embedder,
                cfg: Config) -> tuple[list[Case], list[str]]:
    """The cases of the references whose headline and next day are stored; notes say why others were left out."""
    cases, notes = [], []
    for ref in refs:
        try:
            head = find_headline(db, ref["day"], ref["headline"])
        except HackError as e:
            notes.append(str(e))
            continue
        if not headlines_for_day(db, shift(ref["day"], 1)):
            notes.append(f"no headlines for {shift(ref['day'], 1)}: {ref['headline']!r} cannot be scored yet")
            continue
        prompt = varro_prompt(db, head, embedder, cfg)
        if not forecast_targets(db, prompt, embedder, cfg)[0]:
            notes.append(f"{ref['headline']!r} ({prompt['split']}) has no next-day headline of its story or near it "
                         "clear of the other side of the split: only its topic could be scored")
            continue
        titles = [h["title"] for h in headlines_for_day(db, ref["day"])]
        cases.append(Case(prompt, ref["text"], data={"day_titles": titles}))
    return with_other_stories(cases), notes


def load_varro_sample(db: sqlite_utils.Database) -> None:
    from varro.forecast.app import APP as VARRO_APP

    for d in VARRO_APP.sample_days():
        VARRO_APP.load_sample_day(db, d)


# --- The catalogue

def _restated(case: Case) -> str:
    s = case.source
    return f"{s['title']}. {s['summary']}".strip() if s.get("summary") else f"{s['title']}."


# One paragraph that hits every beat and the length band and says nothing about any story.
GENERIC_FORECAST = (
    "The situation is likely to change over the next few days, with the key numbers moving by around 5% "
    "by the end of the week. Pressure from markets, officials and the public is driving the shift, and "
    "costs are expected to rise slightly as people react to the news. Official figures and statements "
    "due by Friday will confirm which way it went."
)

def _templated(case: Case) -> str:
    """Every beat, filled in with the headline's own words: on topic by construction, says nothing."""
    s = case.source
    return (f"{s['title']}: this is likely to rise by around 5% over the next few days. It is driven by "
            f"pressure following the news that {s['title'][0].lower() + s['title'][1:]}. Official figures "
            "due by Friday will confirm it.")


def _padded_keywords(case: Case) -> str:
    """A keyword dump dressed as sentences: function words between the keywords, full stops at the end."""
    kw = keywords(case.data["day_titles"], 24)
    return " ".join(f"The {a} and the {b} of the {c} will be in the {d}." for a, b, c, d in
                    zip(kw[0::4], kw[1::4], kw[2::4], kw[3::4]))


def _negated(case: Case) -> str:
    """The honest forecast turned around: "will" -> "will not", "likely" -> "unlikely", "should" -> "should not"."""
    text = re.sub(r"\b(will|should)\b(?! not)", r"\1 not", case.honest)
    return re.sub(r"\b(?<!un)likely\b", "unlikely", text)


def _names(case: Case, k: int = 3) -> list[str]:
    """The source's first `k` names, capitalised (repeated when it has fewer)."""
    s = case.source
    found = [w for w in re.findall(r"[A-Za-z][\w'-]+", f"{s['title']} {s.get('summary') or ''}")
             if w.lower().removesuffix("'s") in source_entities(f"{s['title']}\n{s.get('summary') or ''}")]
    names = list(dict.fromkeys(w.removesuffix("'s") for w in found)) or ["The country"]
    return [names[i % len(names)] for i in range(k)]


def _hedged(case: Case) -> str:
    """Every outcome covered, every beat said: "may rise or fall", "collapse or succeed", "within days"."""
    a, b, c = _names(case)
    return (f"{a} may rise or fall within days, and talks may collapse or succeed. The outcome will be driven by "
            f"{b} and {c}, and the numbers could go up or down by around 5% by Friday. Either way, official "
            "figures will confirm which way it went.")


def _generic_named(case: Case) -> str:
    """The all-purpose reaction template, with the source's names in it: says nothing that could come true."""
    a, b, c = _names(case)
    return (f"Officials in {a} will respond within days, and markets will react to the news about {b}. The "
            f"situation is likely to shift by around 5% by Friday, driven by pressure from officials and markets "
            f"around {c}. Statements from {a} and official figures will confirm it.")


VARRO_CATALOGUE: tuple[Hack, ...] = (
    Hack("other-story", "another story's honest forecast, given for this prompt", lambda c: c.other),
    Hack("generic", "one all-purpose paragraph with every beat, the same for every prompt",
         lambda c: GENERIC_FORECAST),
    Hack("restated", "the headline and summary restated verbatim", _restated),
    Hack("paraphrased", "the headline and summary with words swapped for synonyms",
         lambda c: swap_words(_restated(c))),
    Hack("keywords", "the day's 30 most frequent headline words, stuffed",
         lambda c: " ".join(keywords(c.data["day_titles"], 30))),
    Hack("honest+keywords", "the honest forecast with a tail of 15 of the day's keywords",
         lambda c: f"{c.honest} {' '.join(keywords(c.data['day_titles'], 15))}"),
    Hack("instruction-echo", "the instruction written back", lambda c: INSTRUCTION),
    Hack("bullets", "the honest forecast as a bullet list, one sentence a bullet",
         lambda c: "\n".join(f"- {s}" for s in sentences(c.honest))),
    Hack("blank", "an empty completion", lambda c: ""),
    Hack("templated", "every beat filled with the headline's own words, the same template for every prompt",
         _templated),
    Hack("padded-keywords", "the day's keywords strung into sentences with function words", _padded_keywords),
    Hack("negated", "the honest forecast with will -> will not, likely -> unlikely, should -> should not", _negated),
    Hack("hedged", "both outcomes of everything, with every format beat, built on the source's names", _hedged),
    Hack("honest+title", "the honest forecast with the source's title appended",
         lambda c: f"{c.honest} {c.source['title'].rstrip('.')}."),
    Hack("generic-named", "officials will respond, markets will react: the template with the source's names",
         _generic_named),
)


VARRO = RedTeam("varro", VARRO_CATALOGUE, score_texts, varro_cases, load_varro_sample)
