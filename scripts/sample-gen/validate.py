#!/usr/bin/env python3
"""Checks for data/sample/bluesky. Usage: python3 validate.py /work/main"""
import collections, datetime as dt, glob, json, re, sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit, parse_qsl, urlencode
import regex

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/main")
D = ROOT / "data/sample/bluesky"
errors = []
def err(msg):
    errors.append(msg)

def norm(u):
    p = urlsplit(u)
    q = [(k, v) for k, v in parse_qsl(p.query, keep_blank_values=True) if not k.lower().startswith("utm_")]
    path = p.path.rstrip("/") or "/"
    return urlunsplit((p.scheme.lower(), p.netloc.lower(), path, urlencode(q), ""))

def graphemes(s): return len(regex.findall(r"\X", s))
def t(s): return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))

URI_RE = re.compile(r"^at://did:plc:[a-z2-7]{24}/app\.bsky\.feed\.post/[2-7a-j][2-7a-z]{12}$")
CID_RE = re.compile(r"^bafyrei[a-z2-7]{52}$")
COUNTS = ("replyCount", "repostCount", "likeCount", "quoteCount")

def check_record(rec, where):
    text = rec.get("text", "")
    if graphemes(text) > 300: err(f"{where}: {graphemes(text)} graphemes")
    b = text.encode("utf-8")
    for f in rec.get("facets", []):
        s, e = f["index"]["byteStart"], f["index"]["byteEnd"]
        piece = b[s:e].decode("utf-8")
        for feat in f["features"]:
            ty = feat["$type"]
            if ty == "app.bsky.richtext.facet#link" and piece != feat["uri"]: err(f"{where}: link facet slices {piece!r}")
            if ty == "app.bsky.richtext.facet#tag" and piece != "#" + feat["tag"]: err(f"{where}: tag facet slices {piece!r}")
            if ty == "app.bsky.richtext.facet#mention" and not piece.startswith("@"): err(f"{where}: mention facet slices {piece!r}")
    try: t(rec["createdAt"])
    except Exception: err(f"{where}: bad createdAt")

def check_view(pv, where, nested=True):
    for k in ("uri", "cid", "author", "record", "indexedAt"):
        if k not in pv: err(f"{where}: missing {k}")
    if not URI_RE.match(pv["uri"]): err(f"{where}: bad uri {pv['uri']}")
    if not CID_RE.match(pv["cid"]): err(f"{where}: bad cid {pv['cid']}")
    if not pv["uri"].startswith("at://" + pv["author"]["did"] + "/"): err(f"{where}: uri/author mismatch")
    if not pv["author"]["handle"].endswith(".bsky.social"): err(f"{where}: handle")
    check_record(pv["record"], where)
    if t(pv["indexedAt"]) < t(pv["record"]["createdAt"]): err(f"{where}: indexedAt before createdAt")
    lc, rc = pv.get("likeCount"), pv.get("repostCount")
    if lc is not None and rc is not None and lc > 0 and rc >= lc: err(f"{where}: reposts {rc} >= likes {lc}")
    emb = pv.get("embed")
    if emb and emb["$type"] == "app.bsky.embed.recordWithMedia#view":
        vr = emb["record"]["record"]
        check_record(vr["value"], where + " (quoted)")

def link_of(rec):
    e = rec.get("embed") or {}
    if e.get("$type") == "app.bsky.embed.external": return e["external"]["uri"], "external"
    if e.get("$type") == "app.bsky.embed.recordWithMedia" and e["media"]["$type"] == "app.bsky.embed.external":
        return e["media"]["external"]["uri"], "rwm"
    for f in rec.get("facets", []):
        for feat in f["features"]:
            if feat["$type"] == "app.bsky.richtext.facet#link": return feat["uri"], "facet"
    return None, None

heads = {json.loads(l)["link"]: json.loads(l) for l in (ROOT / "data/sample/headlines.jsonl").read_text().splitlines()}

# ---------------- search
search_posts, pages_total, empty_pages = {}, 0, 0
for day in ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05", "2026-11-06"]:
    f = D / "search" / f"{day}.json"
    pages = json.loads(f.read_text())
    if not 2 <= len(pages) <= 3: err(f"{f.name}: {len(pages)} pages")
    seen = set()
    got = 0
    for i, pg in enumerate(pages):
        pages_total += 1
        extra = set(pg) - {"cursor", "hitsTotal", "posts"}
        if extra: err(f"{f.name}: page keys {extra}")
        last = i == len(pages) - 1
        if last == ("cursor" in pg): err(f"{f.name} page {i}: cursor presence wrong")
        if not pg["posts"]: empty_pages += 1
        for pv in pg["posts"]:
            where = f"{f.name}:{pv['uri']}"
            check_view(pv, where)
            if pv["uri"] in seen or pv["uri"] in search_posts: err(f"{where}: duplicate uri")
            seen.add(pv["uri"])
            rec = pv["record"]
            if not rec["createdAt"].startswith(day): err(f"{where}: createdAt not on {day}")
            if not (60 <= len(rec["text"]) <= 280): err(f"{where}: text length {len(rec['text'])}")
            search_posts[pv["uri"]] = pv
            got += 1
    for pg in pages:
        if pg["hitsTotal"] != got: err(f"{f.name}: hitsTotal {pg['hitsTotal']} != {got}")
if empty_pages < 1: err("no empty search page")

by_article = collections.defaultdict(list)
placement = collections.Counter()
missing = collections.Counter()
for uri, pv in search_posts.items():
    link, place = link_of(pv["record"])
    if not link: err(f"{uri}: no link"); continue
    placement[place] += 1
    n = norm(link)
    if n not in heads: err(f"{uri}: {link} normalises to unknown {n}")
    else:
        hd = heads[n]
        if t(pv["record"]["createdAt"]) < t(hd["published_utc"]): err(f"{uri}: posted before the article")
    by_article[n].append(pv)
    for k in COUNTS:
        if k not in pv: missing[k] += 1
    e = pv["record"].get("embed") or {}
    if place == "external":
        if pv["embed"]["external"]["uri"] != link: err(f"{uri}: view uri differs")
    if place == "rwm":
        q = e["record"]["record"]["uri"]
        if q not in search_posts: err(f"{uri}: quotes unknown {q}")
        if pv["embed"]["record"]["record"]["uri"] != q: err(f"{uri}: quoted view mismatch")
        if pv["embed"]["media"]["external"]["uri"] != link: err(f"{uri}: rwm view uri differs")
    if place == "facet" and "embed" in pv["record"]: err(f"{uri}: facet-only post has an embed")
for n, ps in by_article.items():
    if not 5 <= len(ps) <= 12: err(f"{n}: {len(ps)} posts")
    dids = [p["author"]["did"] for p in ps]
    if len(set(dids)) != len(dids): err(f"{n}: an author posts twice")
    if {norm(link_of(p["record"])[0]) for p in ps} != {n}: err(f"{n}: links do not normalise together")
raw_links = collections.Counter(len({link_of(p["record"])[0] for p in ps}) for ps in by_article.values())
days_per = collections.Counter(heads[n]["day"] for n in by_article)

# ---------------- authors
authors = {pv["author"]["did"] for pv in search_posts.values()}
author_posts = collections.Counter(pv["author"]["did"] for pv in search_posts.values())
feed_stats = {}
for did in authors:
    f = D / "authors" / (did.replace(":", "_") + ".json")
    if not f.exists(): err(f"missing author file {f.name}"); continue
    pages = json.loads(f.read_text())
    seen, own, reposts, replies, in_search = set(), 0, 0, 0, 0
    for i, pg in enumerate(pages):
        last = i == len(pages) - 1
        if last == ("cursor" in pg): err(f"{f.name} page {i}: cursor presence wrong")
        if set(pg) - {"cursor", "feed"}: err(f"{f.name}: page keys")
        for it in pg["feed"]:
            pv = it["post"]
            where = f"{f.name}:{pv['uri']}"
            check_view(pv, where)
            key = (pv["uri"], "reason" in it)
            if key in seen: err(f"{where}: duplicate item")
            seen.add(key)
            if "reason" in it:
                if it["reason"]["$type"] != "app.bsky.feed.defs#reasonRepost" or it["reason"]["by"]["did"] != did: err(f"{where}: bad reason")
                if pv["author"]["did"] == did: err(f"{where}: repost of own post")
                reposts += 1
            elif "reply" in pv["record"]:
                if pv["author"]["did"] != did: err(f"{where}: reply by someone else")
                r = pv["record"]["reply"]
                if not (r["root"]["uri"] and r["parent"]["cid"]): err(f"{where}: reply ref")
                replies += 1
            else:
                if pv["author"]["did"] != did: err(f"{where}: foreign post without reason")
                own += 1
                if pv["uri"] in search_posts:
                    in_search += 1
                    if pv != search_posts[pv["uri"]]: err(f"{where}: differs from its search copy")
    if not 15 <= own <= 30: err(f"{f.name}: {own} own posts")
    feed_stats[did] = (own, reposts, replies, in_search)
files = set(glob.glob(str(D / "authors/*.json")))
if len(files) != len(authors): err(f"{len(files)} author files for {len(authors)} authors")
few = [d for d, c in author_posts.items() if c < 2]
if few: err(f"authors with fewer than 2 article posts: {few}")

# ---------------- refresh
ref = json.loads((D / "refresh.json").read_text())
if set(ref) != {"posts"}: err("refresh keys")
ref_uris = [p["uri"] for p in ref["posts"]]
if len(set(ref_uris)) != len(ref_uris): err("refresh duplicate uri")
gone = set(search_posts) - set(ref_uris)
if len(gone) != 2 or set(ref_uris) - set(search_posts): err(f"refresh: {len(gone)} missing posts")
ref_missing = collections.Counter()
for p in ref["posts"]:
    old = search_posts[p["uri"]]
    check_view(p, "refresh:" + p["uri"])
    for k in COUNTS:
        if k not in p: ref_missing[k] += 1; continue
        if k in old and p[k] < old[k]: err(f"refresh {p['uri']}: {k} went down")
    def strip(v):
        v = json.loads(json.dumps(v))
        for k in COUNTS: v.pop(k, None)
        if v.get("embed", {}).get("$type") == "app.bsky.embed.recordWithMedia#view":
            vr = v["embed"]["record"]["record"]
            q = search_posts.get(vr["uri"])
            for k in COUNTS:
                if q is not None and k in vr and k in q and vr[k] < q[k]: err(f"refresh {p['uri']}: quoted {k} went down")
                vr.pop(k, None)
        return v
    if strip(p) != strip(old):
        err(f"refresh {p['uri']}: view differs beyond counts")

# ---------------- report
likes = sorted(pv.get("likeCount", 0) for pv in search_posts.values())
print(json.dumps({
    "errors": len(errors),
    "search_pages": pages_total, "empty_pages": empty_pages,
    "articles": len(by_article), "articles_per_day": dict(sorted(days_per.items())),
    "posts": len(search_posts), "posts_per_article": sorted(len(v) for v in by_article.values()),
    "distinct_raw_links_per_article": dict(raw_links),
    "authors": len(authors), "article_posts_per_author": dict(sorted(collections.Counter(author_posts.values()).items())),
    "placement": dict(placement), "missing_count_fields": dict(missing),
    "refresh_posts": len(ref_uris), "refresh_missing_fields": dict(ref_missing),
    "feed_own_range": [min(v[0] for v in feed_stats.values()), max(v[0] for v in feed_stats.values())],
    "feed_reposts": sum(v[1] for v in feed_stats.values()), "feed_replies": sum(v[2] for v in feed_stats.values()),
    "feed_article_copies": sum(v[3] for v in feed_stats.values()),
    "likes_quantiles": {q: likes[int(q * (len(likes) - 1))] for q in (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0)},
    "max_text_graphemes": max(graphemes(pv["record"]["text"]) for pv in search_posts.values()),
}, indent=1))
for e in errors[:40]: print("ERROR", e)
sys.exit(1 if errors else 0)
