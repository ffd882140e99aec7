"""Issue 13, Walter: fair post weights, baselines at the scored post's age, a graded copy penalty,
and curriculum odds that are the real inclusion probabilities of the k-of-n draw."""

import itertools
import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from varro.engine import store as dbm
from walter.settings import WalterConfig
from varro.engine.embed.embedders import HashEmbedder, SentenceEmbedder
from varro.engine.prompts.curriculum import inclusion_probabilities
from walter.task import pick_articles
from walter.ingest import (BaselineStats, WalterIngestError, author_baseline, baseline_stats, grown_fraction,
                           update_baselines)
from walter.reward import (copy_components, fair_weight, lcs_length, penalties, post_weight, ramp, reliability,
                           score_post, trigamma)

SAT = 4.0
LIKES = {"like": 1.0, "repost": 0.0, "reply": 0.0, "quote": 0.0}


def unshrunk(e, b, sat=SAT):
    return float(np.clip(math.log((1 + e) / (1 + b)) / math.log(sat), 0, 1))


# -- trigamma against known values ------------------------------------------------------------


def test_trigamma_against_closed_forms():
    assert trigamma(1.0) == pytest.approx(math.pi ** 2 / 6, rel=1e-10)
    assert trigamma(0.5) == pytest.approx(math.pi ** 2 / 2, rel=1e-10)
    assert trigamma(2.0) == pytest.approx(math.pi ** 2 / 6 - 1, rel=1e-10)
    assert trigamma(10.0) == pytest.approx(math.pi ** 2 / 6 - sum(1 / j ** 2 for j in range(1, 10)), rel=1e-10)
    # the variance of ln q, q ~ Gamma(3, 3), by simulation
    q = np.random.default_rng(0).gamma(3.0, 1 / 3.0, 400_000)
    assert trigamma(3.0) == pytest.approx(np.log(q).var(), rel=0.01)
    with pytest.raises(ValueError, match="x > 0"):
        trigamma(0.0)


# -- the weight's properties ------------------------------------------------------------------


def w_new(e, b, n, spread, k=2.0):
    return post_weight(e, b, SAT, pseudo_count=k, n_baseline=n, spread=spread)


def test_one_lucky_post_of_a_tiny_account_does_not_reach_full_weight():
    """The bug: e=3 over a baseline of 0 from one post gave w = 1 (pseudo-count 1, no evidence)."""
    assert post_weight(3, 0, SAT) == pytest.approx(1.0)  # the old formula, still the default
    assert w_new(3, 0, 1, None) < 0.5
    assert w_new(3, 0, 1, None) == pytest.approx(
        0.645 / (0.645 + 1.0) * math.log(5 / 2) / math.log(4), abs=2e-3)  # rho = trigamma(2) / (trigamma(2) + 1)
    cfg = WalterConfig()
    assert fair_weight(3, BaselineStats(usual=0.0, n=1, spread=None, age_hours=30.0), cfg) < 0.5


def test_weight_rises_with_engagement_and_falls_with_the_baseline():
    by_e = [w_new(e, 5.0, 10, 4.0) for e in range(0, 80, 4)]
    assert all(b >= a for a, b in zip(by_e, by_e[1:])) and by_e[0] == 0.0
    inside = [w for w in by_e if 0 < w < 1]
    assert len(inside) >= 4 and all(b > a for a, b in zip(inside, inside[1:]))
    by_b = [w_new(40, b, 10, 0.8 * b) for b in np.linspace(0, 40, 21)]
    assert all(b <= a for a, b in zip(by_b, by_b[1:])) and by_b[-1] == 0.0
    assert by_b[0] > by_b[10] > 0


def test_more_evidence_means_more_weight_and_more_spread_less():
    assert w_new(30, 5, 1, None) < w_new(30, 5, 3, 4.0) < w_new(30, 5, 30, 4.0)
    assert w_new(30, 5, 10, 20.0) < w_new(30, 5, 10, 2.0)
    assert 0 < reliability(5.0, 1, None, 2.0) < reliability(5.0, 50, 3.0, 2.0) < 1.0


def test_weight_approaches_the_unshrunk_value_as_evidence_grows():
    gaps = []
    for c in [1, 10, 100, 1000, 10_000]:
        e, b = 3.0 * c, 1.0 * c  # a 3x post, counts and history growing together
        gaps.append(abs(w_new(e, b, 5 * c, 0.7 * b) - unshrunk(e, b)))
    assert all(b < a for a, b in zip(gaps, gaps[1:]))
    assert gaps[0] > 0.1 and gaps[-1] < 0.005


def test_bad_weight_arguments_are_typed_errors():
    with pytest.raises(ValueError, match="pseudo_count"):
        post_weight(1, 1, SAT, pseudo_count=0.0)
    with pytest.raises(ValueError, match="at least one post"):
        post_weight(1, 1, SAT, n_baseline=0)


# -- the seeded simulation ----------------------------------------------------------------------


def simulate_authors(seed=0, authors=4000):
    """Authors of sizes 0.05 to 2000 (log-uniform usual mu), dispersion r in [0.7, 3], 1 to 50 past posts.

    Engagement is negative binomial: Poisson(mu * q) with q ~ Gamma(r, 1/r), so mu is the author's true
    usual and q the post's true multiplier; the true weight is clip(ln q / ln 4, 0, 1).
    """
    rng = np.random.default_rng(seed)
    mu = np.exp(rng.uniform(math.log(0.05), math.log(2000), authors))
    r = rng.uniform(0.7, 3.0, authors)
    n = rng.integers(1, 51, authors)
    q = rng.gamma(r, 1 / r)
    e = rng.poisson(mu * q)
    history = [rng.poisson(mu[i] * rng.gamma(r[i], 1 / r[i], n[i])) for i in range(authors)]
    truth = np.clip(np.log(q) / math.log(SAT), 0, 1)
    return mu, e, history, truth


def test_simulated_weight_error_falls_for_small_accounts_and_not_rises_for_large():
    mu, e, history, truth = simulate_authors()
    cfg = WalterConfig()
    old = np.array([post_weight(float(x), float(np.median(h)), SAT) for x, h in zip(e, history)])
    new = np.array([fair_weight(float(x), BaselineStats(usual=float(h.mean()), n=len(h),
                                                        spread=float(h.std(ddof=1)) if len(h) > 1 else None,
                                                        age_hours=30.0), cfg)
                    for x, h in zip(e, history)])
    small, large = mu < 1, mu >= 10
    err_old, err_new = np.abs(old - truth), np.abs(new - truth)
    assert small.sum() > 500 and large.sum() > 1500
    assert err_new[small].mean() < err_old[small].mean() - 0.015
    assert err_new[large].mean() <= err_old[large].mean() + 0.005
    # one lucky like over a zero median: the old weight is 0.5, the new one far less
    lucky = small & (e == 1) & np.array([np.median(h) == 0 for h in history])
    assert lucky.sum() > 50
    assert old[lucky].mean() == pytest.approx(0.5) and new[lucky].mean() < 0.3


# -- baselines at the scored post's age ---------------------------------------------------------

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=timezone.utc)


def cache_author(db, did, posts, ages):
    """posts: [(uri, likes)]; ages: {uri: hours old when read} or None for a cache without ages."""
    db["bsky_authors"].upsert({"did": did, "handle": "a.test",
                               "posts_json": json.dumps([[u, likes, 0, 0, 0] for u, likes in posts]),
                               "post_age_hours_json": json.dumps(ages) if ages is not None else None,
                               "fetched_utc": "2026-11-03T12:00:00.000000Z",
                               "expires_utc": "2026-11-10T12:00:00.000000Z"}, pk="did")


def test_growth_assumption_values():
    assert grown_fraction(0.0, 12.0) == 0.0
    assert grown_fraction(12.0, 12.0) == pytest.approx(0.5)
    assert grown_fraction(36.0, 12.0) == pytest.approx(0.875)
    assert grown_fraction(289.0, 12.0) == pytest.approx(1.0, abs=1e-7)
    with pytest.raises(WalterIngestError, match="half-life > 0"):
        grown_fraction(10.0, 0.0)


def test_baseline_is_the_authors_usual_at_the_scored_posts_age(tmp_path):
    """The bug: baseline posts were read at any age (median 289 h) and compared with posts read at 27-45 h."""
    db = dbm.open_db(tmp_path / "v.db")
    final = 80.0
    ages = {"at://a/1": 30.0, "at://a/2": 100.0, "at://a/3": 289.0, "at://a/4": 600.0, "at://a/s": 30.0}
    # each post gathered the same final engagement, read when it was `age` old, by the growth model
    posts = [(u, round(final * grown_fraction(a, 12.0))) for u, a in ages.items()]
    cache_author(db, "did:a", posts, ages)
    at36 = baseline_stats(db, "did:a", "at://a/s", LIKES, age_hours=36.0, half_life_hours=12.0)
    expected = [x * 0.875 / grown_fraction(ages[u], 12.0) for u, x in posts if u != "at://a/s"]
    assert at36.n == 4 and at36.usual == pytest.approx(np.mean(expected))
    assert at36.usual == pytest.approx(final * 0.875, rel=0.02)  # what they had at 36 h
    assert at36.spread == pytest.approx(np.std(expected, ddof=1)) and at36.spread < 1.0
    assert baseline_stats(db, "did:a", "at://a/s", LIKES, 45.0, 12.0).usual > at36.usual
    assert author_baseline(db, "did:a", "at://a/s", LIKES) == 80.0  # the old one: fully grown, any age
    # one post of the same author read at 36 h with 3x its usual-at-36-h is weighted as 3x
    cfg = WalterConfig()
    e = 3 * final * 0.875
    assert fair_weight(e, at36, cfg) == pytest.approx(
        post_weight(e, at36.usual, SAT, pseudo_count=2.0, n_baseline=4, spread=at36.spread))
    assert fair_weight(e, at36, cfg) > post_weight(e, 80.0, SAT, pseudo_count=2.0, n_baseline=4, spread=at36.spread)


def test_baseline_without_stored_ages_takes_posts_as_fully_grown_and_none_when_uncached(tmp_path):
    db = dbm.open_db(tmp_path / "v.db")
    cache_author(db, "did:b", [("at://b/1", 10), ("at://b/2", 30)], None)
    s = baseline_stats(db, "did:b", "at://x", LIKES, 36.0, 12.0)
    assert (s.usual, s.n, s.spread) == pytest.approx((20.0 * 0.875, 2, math.sqrt(200) * 0.875))
    assert baseline_stats(db, "did:nobody", "at://x", LIKES, 36.0, 12.0) is None
    cache_author(db, "did:c", [("at://c/1", 5)], {"at://c/1": 50.0})
    assert baseline_stats(db, "did:c", "at://c/1", LIKES, 36.0, 12.0) is None  # only the scored post
    one = baseline_stats(db, "did:c", "at://x", LIKES, 36.0, 12.0)
    assert one.n == 1 and one.spread is None
    with pytest.raises(WalterIngestError, match="positive"):
        baseline_stats(db, "did:c", "at://x", LIKES, 0.0, 12.0)


class FeedClient:
    """Just getAuthorFeed, one page."""

    def __init__(self, feeds):
        self.feeds = feeds

    def get_author_feed(self, did, cursor=None, limit=100, on_invalid=None):
        return self.feeds[did], None


def feed_post(did, rkey, created, likes):
    return {"post": {"uri": f"at://{did}/app.bsky.feed.post/{rkey}", "cid": "c", "author": {"did": did, "handle": "h"},
                     "record": {"createdAt": created, "text": "x"}, "likeCount": likes, "repostCount": 0,
                     "replyCount": 0, "quoteCount": 0}}


def test_update_baselines_stores_each_posts_age_when_read(tmp_path):
    db = dbm.open_db(tmp_path / "v.db")
    did = "did:plc:d"
    feed = [feed_post(did, "young", "2026-11-03T02:00:00Z", 1), feed_post(did, "p1", "2026-11-02T06:00:00Z", 4),
            feed_post(did, "p2", "2026-10-22T00:00:00Z", 9)]
    assert update_baselines(db, FeedClient({did: feed}), [did], now=NOW) == 1
    ages = json.loads(db["bsky_authors"].get(did)["post_age_hours_json"])
    assert ages == {f"at://{did}/app.bsky.feed.post/p1": pytest.approx(30.0),
                    f"at://{did}/app.bsky.feed.post/p2": pytest.approx(12 * 24 + 12.0)}
    s = baseline_stats(db, did, "at://x", LIKES, 30.0, 12.0)
    assert s.usual == pytest.approx((4 + 9 * grown_fraction(30, 12) / grown_fraction(300, 12)) / 2)


# -- the graded copy penalty --------------------------------------------------------------------

TOP = "Calderra dockworkers voted 74% to accept the deal, so the port reopens Monday with 71 ships waiting."
POSTS = [TOP, "Big news from Valdoria today.",
         "The strike is over but the backlog is not: shippers say clearing the queue could take three weeks."]
WEIGHTS = np.array([1.0, 0.0, 0.4])
HONEST = "Calderra's port strike ends after dockworkers back the deal. The hard part now: 71 ships in the queue."
SYNONYMS = ("Calderra longshoremen voted 74% to approve the accord, so the harbour reopens Monday with 71 "
            "vessels idling.")


def drop_every(text, k):
    return " ".join(w for i, w in enumerate(text.split(), 1) if i % k)


@pytest.fixture(scope="module", params=["hash", "minilm"])
def embedder(request):
    return HashEmbedder() if request.param == "hash" else SentenceEmbedder()


def score(text, emb, cfg=None):
    cfg = cfg or WalterConfig()
    return score_post(text, emb.encode([text])[0], emb.encode(POSTS), POSTS, WEIGHTS, cfg)


def test_copy_hacks_score_clearly_below_an_honest_post(embedder):
    """The bug: the penalty fired only at cosine >= 0.92 or 8 words in a row, so dropping every 5th word of
    the top post escaped it and scored about the best reachable."""
    honest = score(HONEST, embedder)
    assert honest["copy"] == 0.0 and honest["teacher"] == 0.0
    for hack in [drop_every(TOP, 5), drop_every(TOP, 3), SYNONYMS]:
        s = score(hack, embedder)
        assert s["reward"] < honest["reward"] - 0.3, (hack, s["reward"], honest["reward"])
        assert s["copy"] >= 0.5
    assert score(drop_every(TOP, 3), embedder)["trigram_containment"] == 0.0  # no 3-gram left...
    assert score(drop_every(TOP, 3), embedder)["order_containment"] == 1.0  # ...but every word in order


def test_copy_is_graded_and_every_part_is_stored():
    emb = HashEmbedder()
    parts = ["copy", "copy_cosine", "copy_containment", "copy_order", "copy_run", "max_cosine",
             "trigram_containment", "order_containment", "shared_run"]
    s = score(TOP, emb)
    assert all(k in s for k in parts) and s["copy"] == 1.0 and s["reward"] == pytest.approx(0.0, abs=1e-6)
    # every k-th word of the top post replaced by a new one: the fewer replaced, the more of a copy
    edited = [score(" ".join(f"zz{i}" if i % k == 0 else w for i, w in enumerate(TOP.split(), 1)), emb)
              for k in (2, 3, 4, 6)]
    copies = [c["copy"] for c in edited]
    assert all(c["shared_run"] < 8 for c in edited)  # the old rule saw none of them
    assert 0 < copies[0] < copies[1] < copies[2] < 1 and copies[3] <= 1
    assert all(s["copy"] == max(s[k] for k in parts[1:5]) for s in edited)
    assert score("", emb)["copy"] == 0.0


def test_copy_thresholds_and_penalty_weights_come_from_the_config():
    emb = HashEmbedder()
    lax = WalterConfig(copy_order_start=1.0, copy_order_full=1.01, copy_containment_start=0.9,
                       copy_containment_full=1.0, copy_cosine_start=0.95)
    assert score(drop_every(TOP, 3), emb, lax)["copy"] == 0.0
    spam = "Strike over! #news #port #strike #valdoria #news 🎉🎉🎉 https://x.example/a"
    cfg = WalterConfig(hashtag_penalty=1.0, repeated_hashtag_penalty=0.7, emoji_run_penalty=0.0,
                       bare_url_penalty=0.05, echo_penalty=2.0, too_long_penalty=0.1, repeated_ngram_penalty=1.0)
    pens = penalties(spam, cfg)
    assert (pens["pen_hashtags"], pens["pen_repeated_hashtags"], pens["pen_emoji_run"], pens["pen_bare_url"]) \
        == pytest.approx((3.0, 0.7, 0.0, 0.05))
    assert penalties("Here is a Bluesky post about this article: ports.", cfg)["pen_echo"] == 2.0
    assert penalties("word " * 70, cfg)["pen_too_long"] == 0.1
    repeats = penalties("the port is open the port is open", cfg)["pen_repeated_ngrams"]
    assert repeats == pytest.approx(1 / 3, abs=1e-6)  # 2 of its 6 word 3-grams repeat, at weight 1


def lcs_reference(a, b):
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            t[i + 1][j + 1] = t[i][j] + 1 if x == y else max(t[i][j + 1], t[i + 1][j])
    return t[-1][-1]


def test_lcs_against_the_textbook_dynamic_programme():
    rng = np.random.default_rng(0)
    for _ in range(300):
        a = list(rng.choice(list("abcde"), rng.integers(0, 30)))
        b = list(rng.choice(list("abcdef"), rng.integers(0, 30)))
        assert lcs_length(a, b) == lcs_reference(a, b)
    assert ramp(0.9, 0.8, 1.0) == pytest.approx(0.5) and ramp(0.5, 0.8, 1.0) == 0.0 and ramp(2, 0.8, 1.0) == 1.0


# -- curriculum: inclusion probabilities --------------------------------------------------------


def brute_force_inclusion(p, k):
    """Sum over every ordered k-sequence of its successive-sampling probability."""
    out = np.zeros(len(p))
    for seq in itertools.permutations(range(len(p)), k):
        pr, left = 1.0, 1.0
        for i in seq:
            pr *= p[i] / left
            left -= p[i]
        out[list(seq)] += pr
    return out


def test_exact_inclusion_against_brute_force_and_monte_carlo():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 1, 6)
    p /= p.sum()
    for k in range(0, 7):
        assert inclusion_probabilities(p, k) == pytest.approx(brute_force_inclusion(p, k), abs=1e-12)
    p = rng.uniform(0.05, 1, 11)
    p /= p.sum()
    exact = inclusion_probabilities(p, 6)
    mc = inclusion_probabilities(p, 6, exact_max=0)
    assert exact.sum() == pytest.approx(6.0) and np.max(np.abs(mc - exact)) < 4 * 0.5 / math.sqrt(40_000)
    with pytest.raises(ValueError, match="cannot draw"):
        inclusion_probabilities(p, 12)


def test_logged_probability_is_the_inclusion_probability_14_of_20(tmp_path):
    """The bug: `probability` was the first-draw chance; with 14 of 20 drawn, 0.026 was picked ~64% of the time."""
    db = dbm.open_db(tmp_path / "v.db")
    urls = [f"https://a.example/{i:02d}" for i in range(20)]
    for u in urls:
        pid = f"walter:2026-11-02:{u}"
        dbm.upsert_prompts(db, [{"id": pid, "app": "walter", "day": "2026-11-02", "split": "train", "text": "t",
                                 "source_json": {"url_norm": u}}])
        rewards = [0.3, 0.3] if u.endswith("00") else [0.0, 0.2]  # flat: score 0; the rest: regret 0.1
        for i, r in enumerate(rewards):
            db["rollouts"].insert({"run": "r", "day": "2026-11-02", "prompt_id": pid, "group_index": i,
                                   "reward": r, "completion": "x"})
    chosen = pick_articles(db, "r", "2026-11-03", urls, k=14, floor=0.1, window_days=7,
                           rng=np.random.default_rng(0))
    log = {r["url_norm"]: r for r in db.query("select * from curriculum where day = '2026-11-03'")}
    assert len(chosen) == 14 and sum(r["chosen"] for r in log.values()) == 14
    first = np.array([log[u]["first_draw_probability"] for u in urls])
    logged = np.array([log[u]["probability"] for u in urls])
    assert first[0] == pytest.approx(0.1 / (0.1 + 19 * 0.2)) and first.sum() == pytest.approx(1.0)
    assert logged.sum() == pytest.approx(14.0, abs=0.01)
    rng = np.random.default_rng(7)  # the real draw, many times
    draws = 20_000
    freq = np.bincount(np.concatenate([rng.choice(20, 14, replace=False, p=first) for _ in range(draws)]),
                       minlength=20) / draws
    assert np.max(np.abs(logged - freq)) < 0.015
    # one article at weight a among 19 at b: P(never drawn) = prod_j (19 - j) b / (a + (19 - j) b), j < 14
    a, b = 0.1, 0.2
    missed = math.prod((19 - j) * b / (a + (19 - j) * b) for j in range(14))
    assert logged[0] == pytest.approx(1 - missed, abs=0.01) and logged[0] == pytest.approx(freq[0], abs=0.015)
    assert logged[0] > 15 * first[0]  # 0.46, where 0.026 was logged
