#!/usr/bin/env python3
"""Deterministic generator for data/sample/bluesky (invented Bluesky AppView answers).

Usage: python3 gen.py /work/main
"""
import base64, datetime as dt, hashlib, json, math, random, re, sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).parent))
from texts import ARTICLES, BLAND, REACTIONS, SPAM, SPAM_TAGS
import banks as B

SEED = 20261102
R = random.Random(SEED)
ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/main")
OUT = ROOT / "data/sample/bluesky"
DAYS = ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05", "2026-11-06"]
FEED_FETCHED = dt.datetime(2026, 11, 7, 3, 0, 0, tzinfo=dt.timezone.utc)

# ---------------------------------------------------------------- ids and times
def h(*parts) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()

def b32(raw: bytes, n: int) -> str:
    return base64.b32encode(raw).decode().lower().rstrip("=")[:n]

def make_did(name): return "did:plc:" + b32(h("did", name), 24)
def make_cid(obj): return "bafyrei" + b32(h("cid", json.dumps(obj, sort_keys=True)), 52)
def blob_cid(*p): return "bafkrei" + b32(h("blob", *p), 52)

S32 = "234567abcdefghijklmnopqrstuvwxyz"
def tid(t: dt.datetime, clock: int) -> str:
    us = int(t.timestamp()) * 1_000_000 + t.microsecond
    v = (us << 10) | clock
    out = ""
    for _ in range(13):
        out = S32[v & 31] + out
        v >>= 5
    return out

def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

def parse_utc(s): return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))

def ms_time(t):  # round to milliseconds (createdAt carries ms)
    return t.replace(microsecond=(t.microsecond // 1000) * 1000)

# ---------------------------------------------------------------- small distributions
def poisson(lam, rng=R):
    if lam <= 0: return 0
    if lam > 40: return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    L, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= L: return k
        k += 1

def engagement(lam, rng=R):
    likes = poisson(lam, rng)
    rep = poisson(likes * rng.uniform(0.06, 0.28), rng)
    if likes: rep = min(rep, max(0, likes - 1), int(likes * 0.5))
    else: rep = 0
    replies = poisson(likes * rng.uniform(0.02, 0.10) + 0.15, rng)
    quotes = poisson(likes * rng.uniform(0.004, 0.03), rng)
    replies = min(replies, max(likes, 1))
    quotes = min(quotes, rep + 1, max(likes, 0))
    return {"replyCount": replies, "repostCount": rep, "likeCount": likes, "quoteCount": quotes}

# ---------------------------------------------------------------- authors
# (handle stem, display name or None, kind, base likes, topic weights, feed banks)
BIG = [
 ("worldwatchdesk", "World Watch Desk", "desk", 420, {"world": 3, "energy": 0.6}, ["DESK_WORLD"]),
 ("marketpulse", "Market Pulse", "desk", 260, {"biz": 3, "energy": 1.5, "tech": 0.5}, ["DESK_MARKETS"]),
 ("techwiredaily", "Tech Wire Daily", "desk", 310, {"tech": 3, "sci": 0.8}, ["DESK_TECH"]),
 ("amina-okafor", "Dr Amina Okafor", "expert", 520, {"sci": 3, "health": 2}, ["SCICOMM"]),
 ("jonasfeld-econ", "Jonas Feld", "expert", 180, {"biz": 3, "energy": 1, "world": 0.4}, ["ECON"]),
 ("stormtracklive", "Stormtrack Live", "desk", 350, {"world": 2, "energy": 1.5, "sci": 0.4}, ["DESK_STORM"]),
]
MED = [
 ("lenahartmann", "Lena Hartmann", "expert", 45, {"world": 3}, ["POLITICS"]),
 ("portsandpallets", "Ports & Pallets", "expert", 45, {"biz": 2, "world": 2}, ["LOGISTICS"]),
 ("gridwatcher", "Grid Watcher ⚡", "expert", 38, {"energy": 3}, ["ENERGY"]),
 ("marakovacs-sec", "Mara Kovács", "expert", 55, {"tech": 3}, ["INFOSEC"]),
 ("reitanaka-astro", "Rei Tanaka", "expert", 40, {"sci": 3}, ["ASTRO"]),
 ("climatefinancenotes", "Climate Finance Notes", "expert", 30, {"energy": 3, "world": 1}, ["ENERGY"]),
 ("dferreira-health", "Daniel Ferreira", "expert", 40, {"health": 3, "sci": 1}, ["HEALTH"]),
 ("chipcycle", "Chip Cycle", "expert", 35, {"tech": 3, "biz": 1}, ["CHIPS"]),
 ("sofiabrandt", "Sofia Brandt", "expert", 40, {"world": 3, "biz": 0.5}, ["POLITICS"]),
 ("olgapetrenko-oil", "Olga Petrenko", "expert", 42, {"energy": 3, "biz": 1}, ["ENERGY"]),
 ("ratesandbonds", "Rates & Bonds", "expert", 28, {"biz": 3}, ["ECON"]),
 ("hannalind-md", "Hanna Lind, MD", "expert", 60, {"health": 3, "sci": 1}, ["HEALTH"]),
 ("marcobellini-dev", "Marco Bellini", "expert", 33, {"tech": 3}, ["OPENSOURCE"]),
 ("fieldnotes-eco", "Field Notes Ecology", "expert", 24, {"sci": 3, "energy": 1}, ["ECOLOGY"]),
]
SMALL_NAMES = [
 ("tomasz-writes", "Tomasz Wróbel"), ("kbirchall", "Kate Birchall"), ("junebugreads", "June 📚"),
 ("paulonunes", "Paulo Nunes"), ("mirja-k", "Mirja K."), ("quietcartographer", "quiet cartographer"),
 ("ellievance", "Ellie Vance"), ("samwise-codes", "Sam"), ("nadiaruns", "Nadia 🏃"), ("oskarhelle", "Oskar Helle"),
 ("gretagardens", "Greta 🌱"), ("benji-on-boats", "Benji"), ("ruthm-teaches", "Ruth M."), ("faridkhan", "Farid Khan"),
 ("lucia-reads-news", "Lucía"), ("petekowalski", "Pete Kowalski"), ("ama-owusu", "Ama Owusu"),
 ("jpdelacroix", "Jean-Paul Delacroix"), ("hollybright", "Holly Bright"), ("theo-bikes", "Theo"),
 ("nora-in-aldervik", "Nora"), ("devivanova", "Dev Ivanova"), ("larsfiskum", "Lars Fiskum"), ("maya-l", "Maya L."),
 ("bertie-ph", "Bertie"), ("chenwei-notes", "Chen Wei"), ("irisplumb", "Iris Plumb"), ("gabe-outdoors", "Gabe"),
 ("saoirse-k", "Saoirse"), ("ravipatel", "Ravi Patel"), ("annika-s", "Annika S."), ("mohassan", "Mo Hassan"),
 ("claire-dunn", "Claire Dunn"), ("yusuf-b", "Yusuf B."), ("wren-sings", "Wren"), ("eduardo-mendes", "Eduardo Mendes"),
 ("k7x9q", None), ("stargazer-1987", None),
]
SPAMMERS = [("breakingnews247x", "BREAKING NEWS 24/7 🚨", 1.3), ("trendwirehub", "TrendWire Hub 🔥", 0.9)]
GROUPS = ["world", "biz", "tech", "sci", "health", "energy"]
SMALL_BANK = {"world": "COMMENTARY", "biz": "COMMENTARY", "tech": "OPENSOURCE", "sci": "ECOLOGY", "health": "HEALTH", "energy": "ENERGY"}

class Author:
    def __init__(self, stem, name, kind, tier, base, topics, banks):
        self.handle = f"{stem}.bsky.social"
        self.did = make_did(stem)
        self.name, self.kind, self.tier, self.base, self.topics, self.banks = name, kind, tier, base, topics, banks
        self.posts = []  # article posts
    @property
    def basic(self):
        d = {"did": self.did, "handle": self.handle}
        if self.name: d["displayName"] = self.name
        return d

AUTHORS = []
for stem, name, kind, base, topics, banks in BIG:
    AUTHORS.append(Author(stem, name, kind, "big", base, topics, banks))
for stem, name, kind, base, topics, banks in MED:
    AUTHORS.append(Author(stem, name, kind, "medium", base, topics, banks))
for i, (stem, name) in enumerate(SMALL_NAMES):
    ar = random.Random(f"small-{stem}")
    g = ar.sample(GROUPS, 2)
    topics = {t: 0.35 for t in GROUPS}
    topics[g[0]] = 2.5
    topics[g[1]] = 1.2
    base = round(ar.choice([0.8, 1.2, 1.8, 2.5, 3, 3.5, 4, 5, 6, 8, 11]), 1)
    AUTHORS.append(Author(stem, name, "citizen", "small", base, topics, ["PERSONAL", "COMMENTARY", SMALL_BANK[g[0]]]))
for stem, name, base in SPAMMERS:
    AUTHORS.append(Author(stem, name, "spam", "small", base, {t: 1 for t in GROUPS}, ["SPAM_FEED"]))
BY_DID = {a.did: a for a in AUTHORS}
assert len(AUTHORS) == 60 and len(BY_DID) == 60

OUTSIDERS = [Author(s, n, "outsider", "big", b, {}, []) for s, n, b in [
 ("thedailyledger-news", "The Daily Ledger", 900), ("kestmarkfreepress", "Kestmark Free Press", 650),
 ("openmaps-collective", "Open Maps Collective", 300), ("riverwatch-valdoria", "River Watch Valdoria", 120),
 ("podcast-portside", "Portside Podcast", 200), ("aldervik-museum", "Aldervik City Museum", 400),
 ("skyphotos-lusadia", "Lusadia Sky Photos", 1500), ("cyclefriendly-varra", "Cycle-Friendly Varra", 90)]]

# ---------------------------------------------------------------- articles
HEAD = {}
for line in (ROOT / "data/sample/headlines.jsonl").read_text().splitlines():
    r = json.loads(line)
    HEAD[r["guid"]] = r
SECTION_GROUP = {"world": "world", "politics": "world", "markets": "biz", "business": "biz", "tech": "tech",
                 "science": "sci", "health": "health", "energy": "energy", "climate": "energy"}

class Article:
    pass

ARTS = []
for guid, (n, tag, hand) in ARTICLES.items():
    r = HEAD[guid]
    a = Article()
    a.guid, a.n, a.tag, a.hand = guid, n, tag, hand
    a.day, a.link, a.title, a.summary, a.source = r["day"], r["link"], r["title"], r["summary"], r["source"]
    a.published = parse_utc(r["published_utc"])
    a.group = SECTION_GROUP[urlsplit(a.link).path.split("/")[1]]
    a.heat = R.uniform(0.8, 1.3)
    ARTS.append(a)
assert len(ARTS) == 36
TOTAL = sum(a.n for a in ARTS)

# ---------------------------------------------------------------- who posts about what
target = {}
for a in AUTHORS:
    target[a.did] = {"big": 6, "medium": 5, "small": 5}[a.tier]
target[AUTHORS[-2].did] = 4; target[AUTHORS[-1].did] = 3   # the two spam accounts
# scale small accounts so that targets sum to TOTAL
while sum(target.values()) != TOTAL:
    diff = TOTAL - sum(target.values())
    cands = [a for a in AUTHORS if a.kind == "citizen"]
    a = R.choice(cands)
    if diff > 0 and target[a.did] < 6: target[a.did] += 1
    elif diff < 0 and target[a.did] > 3: target[a.did] -= 1

ONLY = {"stormtracklive.bsky.social": {"Imara", "CycloneImara", "OffshoreWind", "energy", "HeatPumps", "Selwyn"}}
assigned = {a.did: 0 for a in AUTHORS}
spam_left = {AUTHORS[-2].did: 4, AUTHORS[-1].did: 3}
order = sorted(ARTS, key=lambda a: -a.n)  # big articles first so spam lands where there are extras
for art in order:
    chosen = []
    if art.n >= 8 and sum(spam_left.values()) > 0:
        did = max(spam_left, key=lambda d: spam_left[d])
        if spam_left[did] > 0 and R.random() < 0.75:
            chosen.append(BY_DID[did]); spam_left[did] -= 1
    pool = [a for a in AUTHORS if a.kind != "spam"]
    while len(chosen) < art.n:
        weights = []
        for a in pool:
            if a in chosen: weights.append(0); continue
            left = target[a.did] - assigned[a.did]
            aff = a.topics.get(art.group, 0.0)   # desks and experts stay on their beat
            if a.handle in ONLY and art.tag not in ONLY[a.handle]: aff = 0.0
            weights.append(aff * max(0.03, left) ** 1.5)
        if not any(weights):
            weights = [0 if a in chosen else 1 for a in pool]
        pick = R.choices(pool, weights)[0]
        chosen.append(pick)
    for a in chosen: assigned[a.did] += 1
    art.authors = chosen
# any spam posts not yet placed: put them on the largest articles without a spammer
for did, left in spam_left.items():
    for art in order:
        if left == 0: break
        if any(x.kind == "spam" for x in art.authors) or art.n < 7: continue
        victim = max((x for x in art.authors if x.kind == "citizen"), key=lambda x: assigned[x.did])
        art.authors[art.authors.index(victim)] = BY_DID[did]
        assigned[victim.did] -= 1; assigned[did] += 1; left -= 1
# every author posts at least twice
for a in AUTHORS:
    while assigned[a.did] < 2:
        for art in sorted(ARTS, key=lambda x: -a.topics.get(x.group, 0)):
            if a in art.authors: continue
            if a.handle in ONLY and art.tag not in ONLY[a.handle]: continue
            victims = [x for x in art.authors if x.kind == "citizen" and assigned[x.did] > 3]
            if not victims: continue
            v = max(victims, key=lambda x: assigned[x.did])
            art.authors[art.authors.index(v)] = a
            assigned[v.did] -= 1; assigned[a.did] += 1
            break
        else:
            raise SystemExit("cannot place " + a.handle)

# ---------------------------------------------------------------- slots (what each post says)
PREF = {
 "desk":    {"S": 0.3, "O": 0.1, "Q": 0.05, "P": 4, "SUM": 4, "H": 4, "B": 1.5, "QS": 0.5, "D": 0},
 "expert":  {"S": 4, "O": 2.5, "Q": 1.2, "P": 0.8, "SUM": 0.4, "H": 0.3, "B": 0.3, "QS": 0.8, "D": 0},
 "citizen": {"S": 1.2, "O": 1.5, "Q": 1.8, "P": 1, "SUM": 1, "H": 1.2, "B": 1.8, "QS": 1.5, "D": 3},
}
MULT = {  # engagement relative to the author's usual
 "S": (2.2, 5.5), "O": (1.0, 2.2), "Q": (0.9, 1.8), "P": (0.7, 1.15), "SUM": (0.6, 1.0), "QS": (0.7, 1.3),
 "H": (0.4, 0.8), "B": (0.3, 0.6), "X": (0.05, 0.25), "D": (0.15, 0.45),
}
EXTRA_CYCLE = ["H", "SUM", "B", "QS", "H", "B", "SUM", "QS", "H"]
DUP_ARTICLES = {"northfield-2026-11-03-001", "harbor-2026-11-06-003", "ledger-2026-11-03-001"}

def first_sentence(s):
    m = re.match(r"(.+?[.!?])(\s|$)", s)
    return m.group(1) if m else s

def hashtags_text(art, k, rng):
    tags = rng.sample(SPAM_TAGS, k - 1) + [art.tag]
    rng.shuffle(tags)
    return " ".join("#" + t for t in tags)

def make_text(art, style, idx, rng, hand_text=None):
    if hand_text: return hand_text
    if style == "H":
        t = art.title
        return t if len(t) >= 60 else f"{t} ({art.source})"
    if style == "SUM":
        s = first_sentence(art.summary)
        return s if len(s) >= 60 else art.summary
    if style == "QS":
        s = first_sentence(art.summary)
        return f"“{s}” {rng.choice(REACTIONS)}"
    if style == "B":
        return rng.choice(BLAND).format(title=art.title, source=art.source)
    if style == "X":
        tpl = rng.choice(SPAM)
        return tpl.format(title=art.title, TITLE=art.title.upper(), tags=hashtags_text(art, rng.choice([4, 5, 6]), rng))
    raise ValueError(style)

POSTS = []   # article posts (dicts, later turned into postViews)
for art in ARTS:
    rng = random.Random(f"slots-{art.guid}")
    slots = [(s, t) for s, t in art.hand]
    k = 0
    while len(slots) < art.n:
        slots.append((EXTRA_CYCLE[(k + len(art.guid)) % len(EXTRA_CYCLE)], None)); k += 1
    spam_auth = [a for a in art.authors if a.kind == "spam"]
    others = [a for a in art.authors if a.kind != "spam"]
    if spam_auth:  # the spammer takes one of the extra slots
        i = max(i for i, (s, _) in enumerate(slots) if s in ("H", "SUM", "B", "QS"))
        slots[i] = ("X", None)
    if art.guid in DUP_ARTICLES:
        i = max(i for i, (s, _) in enumerate(slots) if s in ("H", "SUM", "B", "QS"))
        slots[i] = ("D", None)
    prio = {"X": 0, "S": 1, "O": 2, "Q": 3, "P": 4, "QS": 5, "SUM": 6, "H": 7, "B": 8, "D": 9}
    order_slots = sorted(range(len(slots)), key=lambda i: (prio[slots[i][0]], i))
    remaining = list(others)
    pairs = []
    for i in order_slots:
        style, text = slots[i]
        if style == "X":
            pairs.append((spam_auth[0], style, text)); continue
        w = [PREF[a.kind][style] * rng.uniform(0.5, 1.5) + 1e-6 for a in remaining]
        a = rng.choices(remaining, w)[0]
        remaining.remove(a)
        pairs.append((a, style, text))
    # times: after publication, within the UTC day, no later than 21:45
    end = dt.datetime.fromisoformat(art.day + "T21:45:00+00:00")
    start = art.published + dt.timedelta(minutes=4)
    span = (end - start).total_seconds()
    times = []
    for _ in pairs:
        d = rng.expovariate(1 / 7200.0)
        if d > span: d = rng.uniform(0, span)
        times.append(ms_time(start + dt.timedelta(seconds=d, microseconds=rng.randrange(1_000_000))))
    times.sort()
    rng.shuffle(pairs)
    for (a, style, text), t in zip(pairs, times):
        p = {"art": art, "author": a, "style": style, "created": t}
        p["text"] = make_text(art, style, len(POSTS), rng, text) if style != "D" else None
        POSTS.append(p)
        a.posts.append(p)

# near-duplicates: copy another post of the same article with a tiny change
for art in ARTS:
    ps = [p for p in POSTS if p["art"] is art]
    for p in ps:
        if p["style"] != "D": continue
        src = next(q for q in sorted(ps, key=lambda q: q["created"]) if q["style"] in ("S", "P") and q["created"] < p["created"]) \
            if any(q["style"] in ("S", "P") and q["created"] < p["created"] for q in ps) else next(q for q in ps if q["style"] in ("S", "P"))
        tweak = random.Random(p["author"].did).choice(["same", "bang", "this"])
        t = src["text"]
        p["text"] = t if tweak == "same" else (t.rstrip(".") + "!!" if tweak == "bang" else "This. " + t)
        p["dup_of"] = src

# a few posts get one extra topic hashtag
for p in POSTS:
    rr = random.Random("tag" + p["author"].did + p["art"].guid)
    if p["style"] in ("O", "Q", "QS", "SUM") and "#" not in p["text"] and rr.random() < 0.12:
        p["text"] += " #" + p["art"].tag

# a couple of h/t mentions
MENTIONS = 0
for p in sorted(POSTS, key=lambda p: p["created"]):
    if p["style"] == "B" and MENTIONS < 4 and p["author"].kind == "citizen":
        others = [q for q in POSTS if q["art"] is p["art"] and q["author"].kind in ("expert", "desk") and q["created"] < p["created"]]
        if others:
            p["text"] += f" (h/t @{others[0]['author'].handle})"
            p["mention_did"] = others[0]["author"].did
            MENTIONS += 1

# ---------------------------------------------------------------- engagement
for p in POSTS:
    a = p["author"]
    rr = random.Random("eng" + a.did + p["art"].guid)
    lo, hi = MULT[p["style"]]
    m = rr.uniform(lo, hi)
    heat = p["art"].heat
    if a.tier == "big" and p["style"] == "S": m = rr.uniform(1.3, 2.2)
    if a.tier == "big" and p["style"] in ("P", "SUM", "QS", "H", "B"):
        m, heat = rr.uniform(0.35, 0.8), min(heat, 1.0)   # a big account's bland post: many likes, below its usual
    if a.tier == "small" and p["style"] == "S": m *= rr.uniform(1.2, 2.0)
    lam = a.base * m * heat * math.exp(rr.gauss(0, 0.2))
    p["counts"] = engagement(lam, rr)

# ---------------------------------------------------------------- link placement and variants
UTMS = ["utm_source=bsky&utm_medium=social", "utm_source=bluesky&utm_medium=social&utm_campaign=share",
        "utm_medium=social&utm_source=bsky.app", "utm_source=bsky&utm_medium=social&utm_content=post"]
FRAGS = ["comments", "main", "live-updates", "top"]
def link_variant(link, kind, rng):
    sch, host, path, q, f = urlsplit(link)
    if "upper" in kind:
        host = rng.choice([host.upper(), host.split(".")[0].capitalize() + "." + host.split(".", 1)[1].upper(),
                           host[0].upper() + host[1:]])
    if "slash" in kind: path += "/"
    if "utm" in kind: q = rng.choice(UTMS)
    if "frag" in kind: f = rng.choice(FRAGS)
    return urlunsplit((sch, host, path, q, f))

VARIANTS = (["plain"] * 10 + ["utm"] * 4 + ["slash"] * 3 + ["upper"] * 2 + ["frag"] * 2 +
            ["utm+frag", "slash+utm", "upper+slash"])
for p in POSTS:
    rr = random.Random("var" + p["author"].did + p["art"].guid)
    p["variant"] = rr.choice(VARIANTS)
    p["link"] = link_variant(p["art"].link, p["variant"], rr)

def earliest_other(p):
    """The post a record-with-media post quotes: an earlier post on the same article (text-only link posts first)."""
    ps = [q for q in POSTS if q["art"] is p["art"] and q["created"] < p["created"] and q.get("place") != "rwm"
          and q["style"] != "X"]
    if not ps: return None
    return min(ps, key=lambda q: (q.get("place") != "facet", q["created"]))

n = len(POSTS)
want_facet, want_rwm = round(0.15 * n), round(0.15 * n)
shuffled = POSTS[:]
random.Random(SEED + 1).shuffle(shuffled)
nf = nr = 0
for p in shuffled:
    if nf < want_facet and len(p["text"]) + 1 + len(p["link"]) <= 272 and p["style"] != "X":
        p["place"] = "facet"; nf += 1
for p in sorted(shuffled, key=lambda p: p["created"]):
    pass
for p in shuffled:
    if p.get("place"): continue
    if nr < want_rwm and p["style"] not in ("X",):
        q = earliest_other(p)
        if q is not None and q.get("place") != "rwm":
            p["place"] = "rwm"; p["quotes"] = q; nr += 1; continue
    p["place"] = "external"

# ---------------------------------------------------------------- facets
TAG_RE = re.compile(r"(?:^|(?<=\s))#([A-Za-z][A-Za-z0-9_]*)")
MENTION_RE = re.compile(r"@([a-z0-9-]+\.bsky\.social)")
def bidx(text, i): return len(text[:i].encode("utf-8"))

def facets_for(text, link_spans=(), mention_did=None):
    out = []
    for s, e, uri in link_spans:
        out.append({"index": {"byteStart": bidx(text, s), "byteEnd": bidx(text, e)},
                    "features": [{"$type": "app.bsky.richtext.facet#link", "uri": uri}]})
    for m in TAG_RE.finditer(text):
        if any(s <= m.start() < e for s, e, _ in link_spans): continue
        out.append({"index": {"byteStart": bidx(text, m.start()), "byteEnd": bidx(text, m.end())},
                    "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": m.group(1)}]})
    for m in MENTION_RE.finditer(text):
        did = mention_did
        if did is None: continue
        out.append({"index": {"byteStart": bidx(text, m.start()), "byteEnd": bidx(text, m.end())},
                    "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did}]})
    out.sort(key=lambda f: f["index"]["byteStart"])
    return out

def put_link_in_text(text, link, rng, form=None):
    form = form or rng.choice(["end", "end", "end", "arrow", "middle"])
    if form == "middle":
        m = re.match(r"(.+?[.!?])\s+(.+)", text)
        if m:
            a, b = m.group(1), m.group(2)
            new = f"{a} {link} {b}"
            return new, [(len(a) + 1, len(a) + 1 + len(link), link)]
        form = "end"
    if form == "arrow":
        new = f"{text}\n\n👉 {link}"
    else:
        new = f"{text} {link}"
    s = len(new) - len(link)
    return new, [(s, len(new), link)]

# ---------------------------------------------------------------- postView builders
def counts_fields(c, missing=()):
    return {k: c[k] for k in ("replyCount", "repostCount", "likeCount", "quoteCount") if k not in missing}

def external_pair(art, link, author, rng, with_thumb):
    ext = {"uri": link, "title": art.title, "description": art.summary}
    vext = dict(ext)
    if with_thumb:
        bc = blob_cid(art.guid, author.did)
        ext["thumb"] = {"$type": "blob", "ref": {"$link": bc}, "mimeType": "image/jpeg", "size": rng.randrange(28000, 190000)}
        vext["thumb"] = f"https://cdn.bsky.app/img/feed_thumbnail/plain/{author.did}/{bc}@jpeg"
    return ext, vext

def build_view(author, record, created, counts, embed_view=None, missing=(), rng=R, rkey=None, extra=None):
    rkey = rkey or tid(created, rng.randrange(1024))
    uri = f"at://{author.did}/app.bsky.feed.post/{rkey}"
    pv = {"uri": uri, "cid": make_cid(record), "author": author.basic, "record": record}
    if embed_view: pv["embed"] = embed_view
    pv.update(counts_fields(counts, missing))
    pv["indexedAt"] = iso(created + dt.timedelta(milliseconds=rng.randrange(300, 9000)))
    pv["labels"] = []
    return pv

def record_base(text, created):
    return {"$type": "app.bsky.feed.post", "createdAt": iso(created), "langs": ["en"], "text": text}

# missing count fields (the API sometimes omits them)
MISSING = {}
cands = sorted([p for p in POSTS if p["place"] == "external" and p["style"] not in ("X",)], key=lambda p: p["created"])
mr = random.Random(SEED + 2)
for field in ["quoteCount", "quoteCount", "quoteCount", "replyCount", "likeCount"]:
    p = mr.choice([c for c in cands if id(c) not in MISSING])
    MISSING[id(p)] = (field,)

for p in sorted(POSTS, key=lambda p: p["created"]):
    a, art = p["author"], p["art"]
    rr = random.Random("view" + a.did + art.guid)
    text, spans = p["text"], []
    if p["place"] == "facet":
        text, spans = put_link_in_text(text, p["link"], rr)
    elif p["place"] == "external" and rr.random() < 0.12 and len(text) + 1 + len(p["link"]) <= 280:
        text, spans = put_link_in_text(text, p["link"], rr, "end")   # link in text AND a card
        p["link_in_text_too"] = True
    rec = record_base(text, p["created"])
    f = facets_for(text, spans, p.get("mention_did"))
    if f: rec["facets"] = f
    view_embed = None
    if p["place"] in ("external", "rwm"):
        ext, vext = external_pair(art, p["link"], a, rr, rr.random() < 0.6)
        if p["place"] == "external":
            rec["embed"] = {"$type": "app.bsky.embed.external", "external": ext}
            view_embed = {"$type": "app.bsky.embed.external#view", "external": vext}
        else:
            q = p["quotes"]["view"]
            rec["embed"] = {"$type": "app.bsky.embed.recordWithMedia",
                            "media": {"$type": "app.bsky.embed.external", "external": ext},
                            "record": {"$type": "app.bsky.embed.record", "record": {"cid": q["cid"], "uri": q["uri"]}}}
            vr = {"$type": "app.bsky.embed.record#viewRecord", "uri": q["uri"], "cid": q["cid"], "author": q["author"],
                  "value": q["record"], "labels": []}
            vr.update(counts_fields(p["quotes"]["counts"]))
            vr["indexedAt"] = q["indexedAt"]
            if "embed" in q: vr["embeds"] = [q["embed"]]
            view_embed = {"$type": "app.bsky.embed.recordWithMedia#view",
                          "media": {"$type": "app.bsky.embed.external#view", "external": vext},
                          "record": {"$type": "app.bsky.embed.record#view", "record": vr}}
    p["final_text"] = text
    p["view"] = build_view(a, rec, p["created"], p["counts"], view_embed, MISSING.get(id(p), ()), rr)

# quoted posts: quoteCount at least the number of quotes in the sample
for p in POSTS:
    if p["place"] == "rwm":
        q = p["quotes"]
        q["counts"]["quoteCount"] = max(q["counts"]["quoteCount"], sum(1 for x in POSTS if x.get("quotes") is q))
        if "quoteCount" in q["view"]: q["view"]["quoteCount"] = q["counts"]["quoteCount"]
for p in POSTS:  # refresh the embedded copies of quoted counts
    if p["place"] == "rwm":
        vr = p["view"]["embed"]["record"]["record"]
        vr.update(counts_fields(p["quotes"]["counts"]))

# ---------------------------------------------------------------- search pages
def cursor_token(*parts):
    return base64.urlsafe_b64encode(h("cursor", *parts)[:18]).decode().rstrip("=")

(OUT / "search").mkdir(parents=True, exist_ok=True)
(OUT / "authors").mkdir(parents=True, exist_ok=True)
def _c(o): return json.dumps(o, ensure_ascii=False, separators=(",", ":"))
def dump(path, obj):
    """Compact JSON, one post (or feed item) per line, so the files stay small but diff well."""
    def page(pg):
        parts = []
        for k, v in pg.items():
            if k in ("posts", "feed") and v:
                parts.append(_c(k) + ":[\n" + ",\n".join(_c(x) for x in v) + "\n]")
            else:
                parts.append(_c(k) + ":" + _c(v))
        return "{" + ",".join(parts) + "}"
    if isinstance(obj, list):
        text = "[\n" + ",\n".join(page(pg) for pg in obj) + "\n]"
    else:
        text = page(obj)
    json.loads(text)
    path.write_text(text + "\n", encoding="utf-8")

SEARCH_PAGES = {}
for day in DAYS:
    ps = sorted([p for p in POSTS if p["art"].day == day], key=lambda p: p["created"], reverse=True)
    total = len(ps)
    chunks = [ps[i:i + 35] for i in range(0, total, 35)]
    if day == "2026-11-04":
        chunks.insert(1, [])          # an empty page whose cursor still continues
    pages = []
    for i, ch in enumerate(chunks):
        page = {}
        if i < len(chunks) - 1: page["cursor"] = cursor_token(day, i)
        page["hitsTotal"] = total
        page["posts"] = [p["view"] for p in ch]
        pages.append(page)
    SEARCH_PAGES[day] = pages
    dump(OUT / "search" / f"{day}.json", pages)

# ---------------------------------------------------------------- outsider posts (reposted or replied to)
OUTSIDER_VIEWS = []
orng = random.Random(SEED + 3)
for i, text in enumerate(B.OUTSIDER_POSTS):
    a = OUTSIDERS[i % len(OUTSIDERS)]
    t = ms_time(dt.datetime(2026, 10, 12, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=orng.randrange(0, 25 * 86400), microseconds=orng.randrange(10**6)))
    rec = record_base(text, t)
    c = engagement(a.base * orng.uniform(0.6, 2.5), orng)
    OUTSIDER_VIEWS.append(build_view(a, rec, t, c, rng=orng))

# ---------------------------------------------------------------- author feeds
BANK = {k: getattr(B, k) for k in dir(B) if k.isupper()}
def own_texts(a, k, rng):
    pool = []
    for b in a.banks:
        pool += [(b, t) for t in BANK[b]]
    if a.kind == "expert":
        pool += [("PERSONAL", t) for t in rng.sample(B.PERSONAL, 6)]
    rng.shuffle(pool)
    out = []
    i = 0
    while len(out) < k:
        b, t = pool[i % len(pool)]
        if i >= len(pool):  # reuse with a different tail
            t = t + rng.choice([" (again)", " Still true.", " Reposting because it keeps coming up."])
        if b in ("PERSONAL", "COMMENTARY", "ECOLOGY", "OPENSOURCE", "HEALTH", "ENERGY") and a.kind == "citizen":
            t = t + rng.choice(B.TAILS)
        if b == "SPAM_FEED":
            t = t + " " + " ".join("#" + x for x in rng.sample(SPAM_TAGS + ["world", "economy", "tech", "follow"], rng.choice([4, 5, 6])))
        out.append((b, t))
        i += 1
    return out

DESK_DOMAIN = {"DESK_WORLD": "worldwatch.example", "DESK_MARKETS": "marketpulse.example",
               "DESK_TECH": "techwiredaily.example", "DESK_STORM": "stormtrack.example"}
def slug(s): return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:60].rstrip("-")

FEED_STATS = {}
for a in AUTHORS:
    rng = random.Random("feed" + a.did)
    first = min(p["created"] for p in a.posts)
    # fetched when the ingest first met the author: a few hours after their first article post
    fetched = min(FEED_FETCHED, first + dt.timedelta(hours=rng.uniform(2, 20)))
    in_feed = [p for p in a.posts if p["created"] < fetched]
    n_art = len(in_feed)
    k = rng.randint(13, 16)
    k = max(15 - n_art, min(k, 30 - n_art))
    items = []
    start = dt.datetime(2026, 10, 12, tzinfo=dt.timezone.utc)
    span = (fetched - start).total_seconds() - 3600
    own = []
    for b, text in own_texts(a, k, rng):
        t = ms_time(start + dt.timedelta(seconds=rng.uniform(0, span)))
        sigma = 0.3 if a.tier == "big" else 0.45
        c = engagement(a.base * math.exp(rng.gauss(0, sigma)), rng)
        rec = record_base(text, t)
        emb = None
        if b in DESK_DOMAIN and rng.random() < 0.6:
            link = f"https://{DESK_DOMAIN[b]}/2026/{t.month:02d}/{t.day:02d}/{slug(text)}"
            ext = {"uri": link, "title": text, "description": ""}
            rec["embed"] = {"$type": "app.bsky.embed.external", "external": ext}
            emb = {"$type": "app.bsky.embed.external#view", "external": dict(ext)}
        f = facets_for(text)
        if f: rec["facets"] = f
        pv = build_view(a, rec, t, c, emb, rng=rng)
        own.append(pv)
        items.append((t, {"post": pv}))
    for p in in_feed:  # their article posts up to the fetch, as the real feed would show them
        items.append((p["created"], {"post": p["view"]}))
    # replies (the project must skip them)
    n_rep = rng.choice([0, 1, 1]) if a.kind != "spam" else 0
    for parent in rng.sample(OUTSIDER_VIEWS, n_rep):
        t = ms_time(parse_utc(parent["record"]["createdAt"]) + dt.timedelta(minutes=rng.randrange(5, 600), microseconds=rng.randrange(10**6)))
        if t >= fetched: t = fetched - dt.timedelta(hours=rng.uniform(1, 30))
        rec = record_base(rng.choice(B.REPLIES), t)
        ref = {"uri": parent["uri"], "cid": parent["cid"]}
        rec["reply"] = {"parent": ref, "root": ref}
        # some replies do far better than the author's usual; they must not count
        c = engagement(a.base * (rng.choice([0.2, 0.3, 6.0])), rng)
        pv = build_view(a, rec, t, c, rng=rng)
        pview = dict(parent); pview = {"$type": "app.bsky.feed.defs#postView", **parent}
        items.append((t, {"post": pv, "reply": {"root": pview, "parent": pview}}))
    # reposts of other people's posts (high counts that are not this author's)
    n_rp = rng.choice([0, 1, 1, 2])
    for src in rng.sample(OUTSIDER_VIEWS, n_rp):
        t = ms_time(parse_utc(src["indexedAt"]) + dt.timedelta(minutes=rng.randrange(10, 2000), microseconds=rng.randrange(10**6)))
        if t >= fetched: t = fetched - dt.timedelta(hours=rng.uniform(1, 30))
        rkey = tid(t, rng.randrange(1024))
        reason = {"$type": "app.bsky.feed.defs#reasonRepost", "by": a.basic,
                  "uri": f"at://{a.did}/app.bsky.feed.repost/{rkey}", "cid": make_cid({"repost": rkey, "by": a.did}),
                  "indexedAt": iso(t)}
        items.append((t, {"post": src, "reason": reason}))
    items.sort(key=lambda x: x[0], reverse=True)
    pages, per = [], 15
    chunks = [items[i:i + per] for i in range(0, len(items), per)]
    for i, ch in enumerate(chunks):
        page = {}
        if i < len(chunks) - 1: page["cursor"] = iso(ch[-1][0])
        page["feed"] = [it for _, it in ch]
        pages.append(page)
    dump(OUT / "authors" / (a.did.replace(":", "_") + ".json"), pages)
    likes = sorted(pv["likeCount"] for pv in own)
    FEED_STATS[a.did] = {"fetched": iso(fetched), "own": len(own), "article": n_art, "replies": n_rep, "reposts": n_rp,
                         "median_likes": likes[len(likes) // 2]}

# ---------------------------------------------------------------- refresh (24 hours later)
frng = random.Random(SEED + 4)
deletable = [p for p in POSTS if not any(x.get("quotes") is p for x in POSTS)]
deleted = [next(p for p in sorted(deletable, key=lambda p: p["created"]) if p["style"] == "X"),
           next(p for p in sorted(deletable, key=lambda p: p["created"]) if p["style"] == "P" and p["author"].tier == "small")]
keep_missing = next(p for p in POSTS if MISSING.get(id(p)) == ("quoteCount",))
refresh = []
for p in sorted(POSTS, key=lambda p: p["created"]):
    if p in deleted: continue
    v = json.loads(json.dumps(p["view"]))
    c = p["counts"]
    g = frng.uniform(0.03, 0.6)
    new = {"likeCount": c["likeCount"] + poisson(c["likeCount"] * g + 0.2, frng)}
    new["repostCount"] = c["repostCount"] + poisson(c["repostCount"] * g, frng)
    new["replyCount"] = c["replyCount"] + poisson(c["replyCount"] * g * 0.7, frng)
    new["quoteCount"] = c["quoteCount"] + poisson(c["quoteCount"] * g * 0.5, frng)
    if new["repostCount"] >= new["likeCount"] > 0: new["repostCount"] = new["likeCount"] - 1
    for k2 in ("replyCount", "repostCount", "likeCount", "quoteCount"):
        v.pop(k2, None)
    if p["place"] == "rwm" and "refreshed" in p["quotes"]:   # the quoted post's counts as read now
        v["embed"]["record"]["record"].update(counts_fields(p["quotes"]["refreshed"]))
    miss = ("quoteCount",) if p is keep_missing else ()
    rebuilt = {}
    for key, val in v.items():
        if key == "indexedAt":
            rebuilt.update(counts_fields(new, miss))
        rebuilt[key] = val
    refresh.append(rebuilt)
    p["refreshed"] = new
dump(OUT / "refresh.json", {"posts": refresh})

# ---------------------------------------------------------------- summary for the report
summary = {
    "articles": len(ARTS), "posts": len(POSTS), "authors": len(AUTHORS),
    "placement": {k: sum(1 for p in POSTS if p["place"] == k) for k in ("external", "rwm", "facet")},
    "external_with_link_in_text_too": sum(1 for p in POSTS if p.get("link_in_text_too")),
    "variants": {k: sum(1 for p in POSTS if p["variant"] == k) for k in sorted(set(VARIANTS))},
    "styles": {k: sum(1 for p in POSTS if p["style"] == k) for k in MULT},
    "missing": [(p["view"]["uri"], MISSING[id(p)][0]) for p in POSTS if id(p) in MISSING],
    "deleted": [p["view"]["uri"] for p in deleted],
    "refresh_still_missing": keep_missing["view"]["uri"],
    "posts_per_article": {a.guid: a.n for a in ARTS},
    "author_posts": {a.handle: len(a.posts) for a in AUTHORS},
    "feed_stats": {BY_DID[d].handle: s for d, s in FEED_STATS.items()},
    "ratio_by_style": {},
}
for st in MULT:
    rs = sorted(p["counts"]["likeCount"] / max(1, FEED_STATS[p["author"].did]["median_likes"]) for p in POSTS if p["style"] == st)
    if rs: summary["ratio_by_style"][st] = {"n": len(rs), "median": round(rs[len(rs) // 2], 2)}
Path("/tmp/bskygen/summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
print(json.dumps({k: summary[k] for k in ("articles", "posts", "authors", "placement", "external_with_link_in_text_too", "variants", "styles", "missing", "deleted", "ratio_by_style")}, indent=1))
