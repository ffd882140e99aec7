"""Does a forecast commit, and does it say what happened? Outcome claims read from clauses, no model.

stance = (agree - contradict - hedge) / (agree + contradict + hedge), 0 when nothing met: +1 for a forecast
whose every claim that meets the news came true, -1 for one that said the opposite or hedged. The rules
(clauses, axes, negation, subjects, hedges) and why rules: docs/varro.md ("The modules, in detail").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from varro.engine.rewards.text import STOPWORDS

NEGATION_REACH = 10
SUBJECT_REACH = 4
NAME_REACH = 3

_W = r"(?:[\w'’%.-]+ ){0,3}"  # up to three words between the parts of a phrase

# Each axis: value -> the phrases that say it (regex alternatives over the lower-cased clause).
AXES: dict[str, dict[int, str]] = {
    "level": {
        1: r"ris(?:e|es|en|ing)|rose|increas\w*|climb\w*|rais(?:e|es|ed|ing)|hik(?:e|es|ed|ing)|lift(?:s|ed|ing)?|"
           r"grow(?:s|n|ing)?|grew|gain(?:s|ed|ing)?|jump\w*|surg(?:e|es|ed|ing)|soar\w*|rall(?:y|ies|ied|ying)|"
           r"rebound\w*|recover\w*|strengthen\w*|widen\w*|expand\w*|higher|tighten\w*|accelerat\w*|"
           r"swell\w*|lengthen\w*|hir(?:e|es|ed|ing)|up from|"
           r"up by|up \d[\d.,]*",
        -1: r"fall(?:s|en|ing)?|fell|drop(?:s|ped|ping)?|declin\w*|decreas\w*|cut(?:s|ting)?|lower(?:s|ed|ing)?|"
            r"eas(?:e|es|ed|ing)|shrink\w*|shrank|slip(?:s|ped|ping)?|slid(?:e|es|ing)|plung\w*|tumbl\w*|"
            r"sink(?:s|ing)?|sank|weaken\w*|narrow\w*|contract(?:s|ed|ing)?|slow(?:s|ed|ing)?|"
            r"loosen\w*|reduc\w*|trim\w*|layoffs?|redundanc\w*|job cuts|down from|down by|"
            r"down \d[\d.,]*",
        0: rf"unchanged|steady|flat|stable|intact|on hold|no change|"
           rf"(?:hold|keep|leave|left)(?:s|ing)? {_W}(?:steady|unchanged|flat|intact|where it is)",
    },
    "settle": {
        1: r"deal|agree(?:s|d|ment)?|settle(?:s|d|ment)?|accept(?:s|ed|ing|ance)?|approv\w*|ratif\w*|resolv\w*|"
           r"(?:end(?:s|ed|ing)?|call(?:s|ed)? off) (?:the |a |its |their )?(?:strike|dispute|stand-?off|walkout|"
           r"protest|blockade|stoppage)|signed|succeed\w*|breakthrough|compromise|back(?:s|ed)? the (?:deal|offer)|"
           r"(?:end|close|conclude)(?:s|d|ed)? with|(?:meet|meets|met) (?:its|the|their) (?:\w+ )?(?:goal|target|"
           r"endpoint|expectations)|beat(?:s|ing)? (?:\w+ )?(?:expectations|estimates|forecasts|consensus)",
        -1: r"collaps\w*|fail(?:s|ed|ing|ure)?|reject\w*|stall\w*|break(?:s)? down|broke down|breakdown|"
            r"drag(?:s|ged)? on|deadlock\w*|impasse|adjourn\w*|walk(?:s|ed)? out|veto\w*|refus\w*|"
            r"fall(?:s)? apart|fell apart|unravel\w*|"
            r"fall(?:s|ing)? short|not enough|insufficient|inadequate|vot(?:e|es|ed|ing) (?:it|them|\w+ \w+) down|"
            r"vot(?:e|es|ed|ing) down|"
            r"turn(?:s|ed)? down|miss(?:es|ed|ing)? (?:its |the |their )?(?:\w+ )?(?:goal|target|endpoint|"
            r"expectations|estimates|forecasts|consensus)|continu(?:e|es|ed|ing)|persist\w*|"
            r"last(?:s|ed)? (?:through|into|until|beyond)|"
            r"enter(?:s|ed|ing)? (?:its |a )?(?:second|third|fourth|fifth|sixth|seventh|\d+\w*) (?:day|week)|"
            r"(?:remain|stay)(?:s|ed)? (?:shut|closed|idle)",
    },
    "proceed": {
        1: rf"go(?:es)? ahead|went ahead|proceed\w*|launch(?:es|ed|ing)?|lift(?:s|ed)? off|take(?:s)? place|"
           rf"took place|pass(?:es|ed)?|push(?:es|ed)? (?:[\w'’%.-]+ ){{0,8}}through|implement\w*|"
           rf"impos(?:e|es|ed|ing)|introduc\w*|limit(?:s|ed|ing)?|cap(?:s|ped)?|ban(?:s|ned)?|restrict\w*",
        -1: rf"drop(?:s|ped)? (?:its |the |their |his |her |a )?(?:plan|proposal|bill|reform|idea|bid|demand)\w*|"
            rf"abandon\w*|withdr[ae]w\w*|shelv\w*|scrap\w*|back(?:s|ed)? down|climbdown|u-turn|ditch\w*|"
            rf"(?:scrub(?:s|bed)?|delay\w*|postpon\w*|cancel\w*|call(?:s|ed)? off|push(?:es|ed)? back)"
            rf"(?: (?:[\w'’-]+ ){{0,4}}(?:launch\w*|vote|meeting|talks|decision|flight))?|"
            rf"grounded|ground(?:s)? the|(?:stay|remain)(?:s|ed)? (?:on the )?(?:ground|pad)|"
            rf"slip(?:s|ped)? (?:into|to)",
    },
    "contest": {
        1: r"win(?:s|ning)?|won|victor\w*|elected|re-elected|retain(?:s|ed)?|overtak\w*|finish(?:es|ed)? ahead|"
           r"lead(?:s)? by (?:about |around |some )?\d[\d,.]*|upheld|uphold\w*",
        -1: r"los(?:e|es|ing)|lost|defeat\w*|ousted|unseated",
    },
}
_AXIS_RES = {axis: {v: re.compile(rf"\b(?:{pat})\b") for v, pat in values.items()} for axis, values in AXES.items()}
VERBAL_NEGATION_RE = re.compile(
    r"\b(?:not|never|unlikely|cannot|hardly|scarcely|far from|fail(?:s|ed)? to|refus(?:e|es|ed|ing) to|"
    r"declin(?:e|es|ed|ing) to|rule[sd]? out|hold(?:s)? off|stop(?:s)? short of|no longer|no one expects|"
    r"nobody expects|(?:drop|abandon|scrap|shelve|withdr[ae]w|ditch)\w* (?:\w+ ){0,2}plans? to|\w+n['’]t|"
    r"doubt(?:s|ed|ful)?|wrongly|mistakenly|no (?:reason|sign) to (?:expect|think)|little chance|no chance)\b")
NOMINAL_NEGATION_RE = re.compile(r"\b(?:no|without|against|nor|neither)\b")
NEGATION_RE = re.compile(f"{VERBAL_NEGATION_RE.pattern}|{NOMINAL_NEGATION_RE.pattern}")
NOMINAL_REACH = 3
POSSIBLE_RE = re.compile(r"\b(?:could|may|might)\b")  # a possibility, not a commitment
CONDITIONAL_RE = re.compile(r"\b(?:if|unless|in case)\b", re.IGNORECASE)
HEDGE_RE = re.compile(r"\b(?:may or may not|might or might not|could or could not|either way|whether or not|"
                      r"remains? to be seen|too (?:early|close) to (?:say|tell|call)|hard to (?:say|predict|tell)|"
                      r"could go (?:either|both) ways?|one way or (?:the )?other|or not|either outcome|"
                      r"both outcomes|either result|anything could happen|whatever happens|whatever the outcome|"
                      r"whichever way|regardless of (?:the )?(?:outcome|result)|otherwise|either\b.{0,80}?\bor)\b")
SENTENCE_CUT_RE = re.compile(r"(?<=[.!?])\s+|\n+")
CLAUSE_CUT_RE = re.compile(r"[;:]|\s(?:but|while|whereas|although|though|however)\s", re.IGNORECASE)
TOKEN_RE = re.compile(r"[A-Za-z0-9][\w'’.%\-]*[\w%]|[A-Za-z0-9]")
GENERIC = frozenset("""will would could should might may must likely expect expected expects probably
    possibly perhaps further more less next week weeks day days month months year years time since still also
    says said say set see seen today tomorrow monday tuesday wednesday thursday friday saturday sunday
    around about some many much first second third last least most several within another""".split())
ALL_VALUES = {"level": frozenset({1, 0, -1}), "settle": frozenset({1, -1}), "proceed": frozenset({1, -1}),
              "contest": frozenset({1, -1})}


@dataclass(frozen=True)
class Claim:
    axis: str
    values: frozenset  # the outcomes the phrase allows on its axis
    subject: frozenset  # content words near it, stemmed
    names: frozenset = frozenset()  # a contest claim's names just before it
    committed: bool = True  # False in a clause that says could/may/might or in a conditional sentence


@dataclass
class Reading:
    """A text read: its outcome claims, and the subjects of its hedging clauses."""
    claims: list
    hedges: list  # one subject set per hedging clause


def sentences(text: str) -> list[list[str]]:
    """The text's sentences, each as its clauses."""
    out = []
    for sent in SENTENCE_CUT_RE.split(text):
        parts = [c.strip() for c in CLAUSE_CUT_RE.split(sent) if c and c.strip()]
        if parts:
            out.append(parts)
    return out


def clauses(text: str) -> list[str]:
    return [c for sent in sentences(text) for c in sent]


def _stem(word: str) -> str:
    w = word.lower().strip("'’.-").removesuffix("'s").removesuffix("’s")
    return w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith("ss") else w


def _spans(clause: str) -> list[tuple[int, int, str, int]]:
    """(start, end, axis, value) of the outcome phrases of a lower-cased clause, the longest where they overlap."""
    found = [(m.start(), m.end(), axis, value) for axis, values in _AXIS_RES.items()
             for value, rx in values.items() for m in rx.finditer(clause)]
    found.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
    kept: list[tuple[int, int, str, int]] = []
    for s in found:
        if all(s[1] <= k[0] or s[0] >= k[1] for k in kept):
            kept.append(s)
    return sorted(kept)


def _is_content(token: str) -> bool:
    t = _stem(token)
    return (len(t) >= 3 or t[:1].isdigit()) and t not in STOPWORDS and t not in GENERIC and not NEGATION_RE.fullmatch(t)


def names_in(*texts: str) -> frozenset:
    """Stems of the names in `texts`: capitalised content words inside a clause, and those at a clause's start
    that never appear in lower case in any of the texts ("Korrada will win", not "Recount upholds ...")."""
    lower = {_stem(t) for x in texts for t in TOKEN_RE.findall(x) if t[:1].islower()}
    out = set()
    for x in texts:
        for c in clauses(x):
            for j, t in enumerate(TOKEN_RE.findall(c)):
                if t[:1].isupper() and _is_content(t) and (j > 0 or _stem(t) not in lower):
                    out.add(_stem(t))
    return frozenset(out)


_SIGN = {frozenset({1}): 1, frozenset({-1}): -1}


def _either(clause: str, x: tuple, y: tuple) -> bool:
    """Two outcomes that exclude each other, joined by "or" within eight words and no comma or "and": "rise or
    fall", "may accept or reject", "could agree a cut or fail to agree" (not "grow to 30 or more, as ...")."""
    (_, end, a), (start, _, b) = x, y
    between = re.sub(r"\bor (?:more|less|so|fewer|longer|two|three|four|five)\b", "", clause[end:start])  # sizes
    if not re.search(r"\bor\b", between) or len(between.split()) > 8 or re.search(r",|\band\b", between):
        return False
    return (a.axis == b.axis and not a.values & b.values) or _SIGN.get(a.values, 0) * _SIGN.get(b.values, 0) < 0


def read(text: str, names: frozenset | None = None, news: bool = False) -> Reading:
    """The outcome claims and hedges of `text`'s clauses: one claim per outcome phrase (a bare "deal" or
    "agreement" only where nothing else in its clause says how the dispute went).

    A clause that joins outcomes of one axis that exclude each other with "or" hedges and claims nothing;
    so do two claims anywhere in the text that exclude each other on the same subject when one is only a
    possibility ("Areval will win. Korrada could also win it."). A claim in a clause that says could, may or might, or in a sentence with
    "if" or "unless", is not committed. A capitalised word at a clause's start is a name when it is one of
    `names` (default: the text's own `names_in`). With `news` (a headline), an outcome right after "after"
    is background ("lifts off after two scrubs"), not news."""
    names = names_in(text) if names is None else names
    out = Reading([], [])
    for sent in sentences(text):
        first = [_stem(t) for j, t in enumerate(TOKEN_RE.findall(sent[0]))
                 if t[:1].isupper() and _is_content(t) and (j > 0 or _stem(t) in names)][:1]
        conditional = bool(CONDITIONAL_RE.search(" ".join(sent)))
        for clause in sent:
            _read_clause(clause, names, frozenset(first), out, conditional, news)
    if not news:
        _self_conflicts(out)
    return out


def _conflict(a: Claim, b: Claim) -> bool:
    """Two claims of one text that cannot both come true, one of them only a possibility ("could also"): the
    same axis and subject with no value in common, or rivals both winning. (Two committed claims that
    contradict each other are judged one by one against the news: one is wrong.)"""
    if a.axis != b.axis or (a.committed and b.committed):
        return False
    if a.axis == "contest" and a.names and b.names and not a.names & b.names:
        return bool(a.values & b.values) and a.values <= {1} | {0}  # two names, both winning
    # two possibilities of opposite outcomes are a hedge whatever they name ("could launch ... could just as
    # easily ground the rocket"); a possibility against a commitment only on the same subject
    same = not (a.committed or b.committed) or bool(a.subject & b.subject or a.names & b.names)
    return same and not a.values & b.values


def _self_conflicts(out: Reading) -> None:
    """Claims that contradict another claim of the same text are a hedge spread over two places."""
    bad = {i for i, a in enumerate(out.claims) for j, b in enumerate(out.claims) if i != j and _conflict(a, b)}
    for i in sorted(bad):
        out.hedges.append(out.claims[i].subject)
    out.claims[:] = [c for i, c in enumerate(out.claims) if i not in bad]


def _negated(low: str, start: int, spans: list) -> bool:
    """Whether the outcome at `start` is negated: a verbal cue ("not", "unlikely", "refuse to") reaches the
    first outcome after it anywhere in the clause, and others up to NEGATION_REACH words on with no comma
    between; a nominal one ("no", "without") reaches NOMINAL_REACH words."""
    seg = low[:start].split(",")[-1].split()
    if VERBAL_NEGATION_RE.search(" ".join(seg[-NEGATION_REACH:])):
        return True
    if NOMINAL_NEGATION_RE.search(" ".join(seg[-NOMINAL_REACH:])):
        return True
    cues = list(VERBAL_NEGATION_RE.finditer(low[:start]))
    return bool(cues) and not any(cues[-1].end() <= s0 < start for s0, *_ in spans)


def _read_clause(clause: str, names: frozenset, lead: frozenset, out: Reading, conditional: bool = False,
                 news: bool = False) -> None:
    """Add one clause's claims (or its hedge) to `out`; `lead`: its sentence's first name, the subject of a
    contest claim with no name of its own ("..., but he should still finish ahead")."""
    low = clause.lower()
    spans = [sp for sp in _spans(low) if sp[0] == 0 or not clause[sp[0]].isupper()]
    if news:
        spans = [sp for sp in spans if not re.search(r"\bafter(?: \S+){0,2} $", low[:sp[0]])]
    committed = not (conditional or POSSIBLE_RE.search(low))
    toks = [(m.start(), m.end(), m.group()) for m in TOKEN_RE.finditer(clause)]
    inside = lambda a, b: any(s[0] <= a and b <= s[1] for s in spans)  # noqa: E731
    content = [(i, _stem(t)) for i, (a, b, t) in enumerate(toks) if not inside(a, b) and _is_content(t)]
    claims, kept = [], []
    settle_verbs = any(a == "settle" and low[s:e] not in ("deal", "agreement") for s, e, a, _ in spans)
    for start, end, axis, value in spans:
        if axis == "settle" and low[start:end] in ("deal", "agreement") and settle_verbs:
            continue
        first = next((i for i, (a, b, _) in enumerate(toks) if b > start), len(toks))
        last = next((i for i, (a, b, _) in enumerate(toks) if b >= end), len(toks) - 1)
        before = [w for i, w in content if i < first][-SUBJECT_REACH:]
        subject = frozenset(before + [w for i, w in content if i > last][:SUBJECT_REACH])
        near = [(j, t) for j, (_, _, t) in enumerate(toks[:first]) if j >= first - NAME_REACH]
        who = frozenset(_stem(t) for j, t in near if t[:1].isupper() and _is_content(t)
                        and (j > 0 or _stem(t) in names)) if axis == "contest" else frozenset()
        allowed = ALL_VALUES[axis] - {value} if _negated(low, start, spans) else frozenset({value})
        claims.append(Claim(axis, frozenset(allowed), subject, who or (lead if axis == "contest" else who),
                            committed))
        kept.append((start, end, claims[-1]))
    joined = any(_either(low, x, y) for i, x in enumerate(kept) for y in kept[i + 1:])
    if HEDGE_RE.search(low) or joined:
        out.hedges.append(frozenset(s for _, s in content))
    else:
        out.claims.extend(claims)


def hedging(clause: str) -> bool:
    """Whether one clause hedges (see `read`)."""
    return bool(read(clause).hedges)


def committed_text(text: str) -> str:
    """`text` without its hedging clauses: what it commits to."""
    return " ".join(c for c in clauses(text) if not hedging(c))


@dataclass
class Stance:
    agree: int = 0
    contradict: int = 0
    hedge: int = 0

    @property
    def score(self) -> float:
        n = self.agree + self.contradict + self.hedge
        return (self.agree - self.contradict - self.hedge) / n if n else 0.0

    @property
    def label(self) -> str:
        """agree, contradict, hedge or unrelated: what the forecast mostly did."""
        if self.hedge and self.hedge >= max(self.agree, self.contradict):
            return "hedge"
        if self.agree > self.contradict:
            return "agree"
        if self.contradict > self.agree:
            return "contradict"
        return "unrelated"


def _meets(claim: Claim, fact: Claim) -> str | None:
    """'agree', 'contradict' or None (not about the same thing, or neither) for one pair of claims."""
    if claim.axis != fact.axis or not (claim.subject & fact.subject or claim.names & fact.names):
        return None
    values = claim.values
    if claim.axis == "contest":
        if bool(claim.names) != bool(fact.names):
            return None  # someone won: without both names, nothing says who
        if claim.names and not claim.names & fact.names:
            values = frozenset(-v for v in values)  # a rival's win is this one's loss
    if fact.values <= values:
        return "agree"
    return "contradict" if not fact.values & values else None


def stance(forecast: str, targets: list[str], about: frozenset = frozenset()) -> Stance:
    """How the forecast's claims fare against what the target headlines (title and summary each) say.

    A hedging clause counts when it shares a word with a target's claims or with `about` (the source's
    words): hedging about the story is charged, an aside is not."""
    names = names_in(forecast, *targets)
    facts = [c for t in targets for c in read(t, names, news=True).claims]
    mine = read(forecast, names)
    story = frozenset().union(*(f.subject for f in facts)) | {_stem(x) for x in about}
    res = Stance(hedge=sum(1 for h in mine.hedges if h & story))
    for claim in (c for c in mine.claims if c.committed):
        met = [(len(claim.subject & f.subject) + len(claim.names & f.names), m)
               for f in facts if (m := _meets(claim, f))]
        closest = [m for n, m in met if n == max(met)[0]] if met else []
        if "agree" in closest:
            res.agree += 1
        elif closest:
            res.contradict += 1
    return res
