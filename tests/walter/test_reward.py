"""Walter's RLNVR reward: the worked example, monotonicity, copying, and the small penalties."""

import math

import numpy as np
import pytest

from walter.settings import WalterConfig
from varro.engine.embed.embedders import HashEmbedder, SentenceEmbedder
from walter.reward import (caps_share, emoji_count, engagement, graphemes, independent_bands,
                           fragment_share, independent_point_bands, max_similarity_reward, penalties, point_coverage, points,
                           post_weight, restated, score_post, winner_bands, winner_point_bands)


def unit_pair(cos):
    """Two unit vectors in 3-d with the given cosine."""
    return np.array([1.0, 0.0, 0.0]), np.array([cos, math.sqrt(1 - cos * cos), 0.0])


def test_worked_example():
    cand, post = unit_pair(0.82)
    other = np.array([0.0, 0.0, 1.0])
    assert max_similarity_reward(cand, np.stack([post, other]), [0.9, 1.0]) == pytest.approx(0.738)


def test_the_single_best_winner_teaches_not_the_average():
    cand, close = unit_pair(0.9)
    _, far = unit_pair(0.3)
    assert max_similarity_reward(cand, np.stack([close, far, far]), [0.8, 1.0, 1.0]) == pytest.approx(0.72)


def test_monotonic_in_weight_and_similarity():
    rewards_w = [max_similarity_reward(*unit_pair(0.7)[:1], np.stack([unit_pair(0.7)[1]]), [w])
                 for w in np.linspace(0, 1, 11)]
    assert all(b > a for a, b in zip(rewards_w, rewards_w[1:]))
    rewards_s = [max_similarity_reward(unit_pair(c)[0], np.stack([unit_pair(c)[1]]), [0.5])
                 for c in np.linspace(0.1, 0.99, 11)]
    assert all(b > a for a, b in zip(rewards_s, rewards_s[1:]))


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="need posts"):
        max_similarity_reward(np.ones(3), np.ones((2, 3)), [1.0])


def test_post_weight_against_the_authors_baseline():
    assert post_weight(10, 20, 4.0) == 0.0  # worse than usual
    assert post_weight(20, 20, 4.0) == 0.0  # exactly usual
    assert post_weight(4 * 21 - 1, 20, 4.0) == pytest.approx(1.0)  # (1+e)/(1+b) = 4
    assert post_weight(2 * 21 - 1, 20, 4.0) == pytest.approx(0.5)
    assert post_weight(10_000, 20, 4.0) == 1.0
    # a big account's ordinary post is not better because the account is big
    assert post_weight(300, 900, 4.0) < post_weight(12, 2, 4.0)


def test_engagement_is_weighted_and_missing_counts_are_unknown():
    cfg = WalterConfig()
    assert engagement(10, 2, 3, 1, cfg) == 10 + 2 * 2 + 3 + 2 * 1
    assert engagement(10, 2, 3, None, cfg) is None


def test_penalties_on_hand_written_posts():
    cfg = WalterConfig()
    clean = penalties("Calderra's dockworkers just voted 74% to end the strike. Ships move Monday.", cfg)
    assert sum(clean.values()) == 0
    spam = penalties("Strike over! #news #port #strike #valdoria #news 🎉🎉🎉 https://x.example/a", cfg)
    assert spam["pen_hashtags"] == pytest.approx(0.3)
    assert spam["pen_repeated_hashtags"] == 0.2
    assert spam["pen_emoji_run"] == 0.2
    assert spam["pen_bare_url"] == 0.2
    assert penalties("word " * 70, cfg)["pen_too_long"] == 0.5
    assert penalties("the port is open the port is open the port is open", cfg)["pen_repeated_ngrams"] > 0.2
    assert penalties("Here is a Bluesky post about this article: ports reopen.", cfg)["pen_echo"] == 0.3


def test_shouting_and_decorative_emoji_cost_and_a_plain_post_does_not():
    cfg = WalterConfig()
    post = "Calderra's dockworkers voted 74% to accept the deal; cranes restart Monday with 71 ships waiting."
    assert penalties(post, cfg)["pen_caps"] == 0.0 and penalties("NASA and the EU agree.", cfg)["pen_caps"] == 0.0
    assert caps_share(post.upper()) == 1.0 and penalties(post.upper(), cfg)["pen_caps"] == pytest.approx(0.3)
    half = post[:48].upper() + post[48:]  # about half the letters: part way up the ramp from 0.3 to 0.6
    assert penalties(half, cfg)["pen_caps"] == pytest.approx(0.3 * (caps_share(half) - 0.3) / 0.3, abs=1e-6)
    assert 0.45 < caps_share(half) < 0.55
    assert emoji_count("👩\u200d🔬 and 👍🏽 🔥🔥") == 4  # a ZWJ sequence and a skin tone count once each
    assert penalties(f"{post} 🚢", cfg)["pen_emoji"] == 0.0  # the first is free
    assert penalties(f"🔥🔥 {post} 🚀🚀", cfg)["pen_emoji"] == pytest.approx(0.15)


def test_a_list_of_words_costs_and_prose_with_figures_does_not():
    cfg = WalterConfig()
    assert fragment_share("Forecast 3.8, actual 4.1. A miss on CPI is this big.") == 0.0  # decimals do not cut
    short = "Bad news, bad timing. The port stays shut all week."  # 4 of its 10 words in 2-word fragments
    assert fragment_share(short) == pytest.approx(4 / 10)
    assert fragment_share("Offshore, wind, bidders, walked, away. The grid connections will be slow.") \
        == pytest.approx(5 / 11)
    assert fragment_share("The port reopens Monday - maybe.") == pytest.approx(1 / 5)
    assert fragment_share("") == 0.0
    prose = "Calderra's dockworkers voted 74% to accept the deal; cranes restart Monday with 71 ships waiting."
    assert penalties(prose, cfg)["pen_word_list"] == 0.0
    salad = "Dockworkers, calderra, prices, shop, expect, open, ended, port, stopped. Both sides are dug in."
    assert fragment_share(salad) == pytest.approx(9 / 14)
    assert penalties(salad, cfg)["pen_word_list"] == pytest.approx(0.5)
    # part way up the ramp from 0.35 to 0.5
    assert penalties(short, cfg)["pen_word_list"] == pytest.approx(0.5 * (0.4 - 0.35) / 0.15, abs=1e-6)


def test_the_paraphrase_band_is_what_other_authors_reached_on_their_own():
    vecs = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.6, 0.0, 0.8], [1.0, 0.0, 0.0]])
    posts = ["the port is shut today", "dockers walk out at the port", "ships queue offshore now",
             "the port is shut today"]
    bands = independent_bands(vecs, posts, ["a", "b", "c", "a"])
    # post 0: b came to 0.8 and c to 0.6 (post 3 is a's own); post 2: a's posts came to 0.6, b's to 0.48
    assert bands == pytest.approx([0.8, 0.8, 0.6, 0.8])
    # when another author shares post 0 word for word (d), the share is no independent take: not 1.0
    quoted = independent_bands(vecs, posts, ["a", "b", "c", "d"])
    assert quoted == pytest.approx([0.8, 0.8, 0.6, 0.8])
    assert np.isnan(independent_bands(vecs[:1], posts[:1], ["a"])[0])


def test_only_a_post_that_earned_something_has_a_band():
    """A red team's honest post was charged as a paraphrase of a zero-weight post quoting the article."""
    vecs = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    posts = ["the quoted description", "a take of my own", "another take"]
    bands = winner_bands(vecs, posts, ["a", "b", "c"], np.array([0.0, 0.7, 0.0]))
    assert np.isnan(bands[0]) and np.isnan(bands[2]) and bands[1] == pytest.approx(0.96)


def test_closeness_well_above_the_band_is_copying_even_in_other_words():
    cfg = WalterConfig()
    top, peer = np.array([1.0, 0.0, 0.0]), np.array([0.7, 0.0, math.sqrt(1 - 0.49)])  # another author: 0.7
    posts = ["Fourteen thousand dockworkers out, open-ended: expect it in shop prices fast.",
             "The port strike will hit supermarkets, retailers warn."]
    vecs = np.stack([top, peer])
    bands = independent_bands(vecs, posts, ["a", "b"])
    assert bands == pytest.approx([0.7, 0.7])
    _, para = unit_pair(0.9)  # 0.2 above the band: a loose paraphrase of the top post (0.63 to the other)
    _, own = unit_pair(0.68)  # an honest post on the same article, inside the band
    para_text = "14k dock workers walked out with no end date; you will see it in store prices soon."
    scored = score_post(para_text, para, vecs, posts, np.array([1.0, 0.2]), cfg, bands)
    assert scored["idea_margin"] == pytest.approx(0.9 - 0.7) and scored["copy_idea"] == 1.0
    honest = score_post("Retail chains are already rerouting food imports.", own, vecs, posts,
                        np.array([1.0, 0.2]), cfg, bands)
    assert honest["copy"] == 0.0 and honest["reward"] > scored["reward"]
    # without bands (tally), the paraphrase part stays out
    assert score_post(para_text, para, vecs, posts, np.array([1.0, 0.2]), cfg)["copy_idea"] == 0.0


def test_a_post_is_cut_into_its_points():
    text = ("Calderra is shut: 14,000 dock workers walked out with no end date. The country's largest port has "
            "stopped, and you'll see it in store prices soon. Talks resume Monday - or so they say")
    assert points(text) == ["Calderra is shut:", "14,000 dock workers walked out with no end date.",
                            "The country's largest port has stopped", "you'll see it in store prices soon.",
                            "Talks resume Monday", "or so they say"]
    assert points("Prices rise, so wages must follow") == ["Prices rise", "wages must follow"]
    assert points("Wow.") == ["Wow."] and points("Big one, wow") == ["Big one"]


def test_point_coverage_is_the_mean_best_match_of_the_first_texts_points():
    of = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    by = np.array([[0.6, 0.8, 0.0], [0.0, 0.6, 0.8]])
    # point 0: best 0.6 (by[0]); point 1: best 0.8 (by[0]); point 2: best 0.8 (by[1])
    assert point_coverage(of, by) == pytest.approx((0.6 + 0.8 + 0.8) / 3)
    assert point_coverage(by, of) == pytest.approx((0.8 + 0.8) / 2)  # not symmetric: whose points are counted


def test_the_point_band_is_the_most_another_author_restated_on_their_own():
    e = np.eye(3)
    point_vecs = [e[[0, 1]], e[[0]], e[[2]], e[[0, 1]]]  # post 3 is post 0 again, by a fourth author
    posts = ["the port is shut, prices will rise", "the port is shut", "ships queue offshore",
             "the port is shut, prices will rise"]
    bands = independent_point_bands(point_vecs, posts, ["a", "b", "c", "d"])
    # post 0: b restates one of its two points (0.5), c none, d quotes it word for word (not independent)
    assert bands[0] == pytest.approx(0.5) and bands[1] == pytest.approx(1.0) and bands[2] == pytest.approx(0.0)
    only_winners = winner_point_bands(point_vecs, posts, ["a", "b", "c", "d"], np.array([1.0, 0.0, 0.3, 0.0]))
    assert only_winners[0] == pytest.approx(0.5) and np.isnan(only_winners[1]) and np.isnan(only_winners[3])
    assert np.isnan(only_winners[2])  # a winner, but of one point: anything making it restates it whole
    assert np.isnan(independent_point_bands(point_vecs[:1], posts[:1], ["a"])[0])


def test_restated_ramps_above_the_band_and_is_zero_without_one():
    got = restated(np.array([0.9, 0.6, 0.5, 0.9]), np.array([0.5, 0.5, 0.5, np.nan]), 0.05, 0.15)
    assert got == pytest.approx([1.0, 0.5, 0.0, 0.0])


def test_a_winner_restated_point_by_point_teaches_nothing():
    """The paraphrase's credit from the top post goes; the teacher becomes the next post, and the honest post,
    which restates no more of the top post than another author did, keeps its credit."""
    cfg = WalterConfig()
    top, other = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.6, 0.8])
    posts = ["14,000 dockworkers out, open-ended: expect it in shop prices fast.", "Ships are queueing offshore."]
    vecs, weights = np.stack([top, other]), np.array([1.0, 0.5])
    bands = np.array([0.5, np.nan])  # another author restated half the top post's points
    _, para = unit_pair(0.75)  # under copy_cosine_start and inside any whole-text band
    para_text = "Calderra is shut with no end date; you will see it in store prices soon."
    plain = score_post(para_text, para, vecs, posts, weights, cfg)
    assert plain["teacher"] == 0.0 and plain["transfer"] == pytest.approx(0.75)
    scored = score_post(para_text, para, vecs, posts, weights, cfg, points=(np.array([0.8, 0.1]), bands))
    assert scored["restated"] == 1.0 and scored["teacher"] == 1.0
    assert scored["transfer"] == pytest.approx(0.5 * float(para @ other))
    half = score_post(para_text, para, vecs, posts, weights, cfg, points=(np.array([0.6, 0.1]), bands))
    assert half["restated"] == pytest.approx(0.5) and half["transfer"] == pytest.approx(0.75 * 0.5)
    honest = score_post("Retail chains are rerouting imports.", para, vecs, posts, weights, cfg,
                        points=(np.array([0.52, 0.1]), bands))
    assert honest["restated"] == 0.0 and honest["transfer"] == pytest.approx(0.75)


def test_graphemes_count_what_a_person_sees():
    assert graphemes("abc") == 3
    assert graphemes("e\u0301") == 1  # e + combining acute
    assert graphemes("👩\u200d🔬") == 1  # ZWJ sequence
    assert graphemes("👍🏽") == 1  # skin-tone modifier


@pytest.mark.parametrize("embedder", ["minilm", "hash"])
def test_copy_penalty_fires_and_honest_post_wins(embedder):
    emb = SentenceEmbedder() if embedder == "minilm" else HashEmbedder()
    cfg = WalterConfig()
    posts = [
        "Calderra dockworkers voted 74% to accept the deal, so the port reopens Monday with 71 ships waiting.",
        "Big news from Valdoria today.",
    ]
    weights = np.array([1.0, 0.0])
    vecs = emb.encode(posts)
    cands = {
        "copy": posts[0],
        "near_copy": "Calderra dockworkers voted 74% to accept the deal, so the port reopens Monday with 71 "
                     "ships waiting!",
        "honest": "After a 74% yes vote, Calderra's cranes start again Monday; 71 ships are queued offshore.",
        "spam": "#port #strike #news #valdoria 🎉🎉🎉 read this https://x.example",
    }
    scored = {k: score_post(t, emb.encode([t])[0], vecs, posts, weights, cfg) for k, t in cands.items()}
    assert scored["copy"]["copy"] == 1.0 and scored["near_copy"]["copy"] == 1.0
    assert scored["honest"]["copy"] == 0.0
    assert scored["honest"]["teacher"] == 0.0  # learned from the post that beat its author's usual
    assert scored["honest"]["reward"] > scored["copy"]["reward"]
    assert scored["honest"]["reward"] > scored["near_copy"]["reward"]
    assert scored["honest"]["reward"] > scored["spam"]["reward"]
    assert score_post("", np.zeros(vecs.shape[1]), vecs, posts, weights, cfg)["reward"] == 0.0
