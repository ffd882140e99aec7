"""A post the API sends oddly costs at most itself, and a usable link is never dropped (issue 30).

Through the local XRPC server of tests/support/bluesky.py and the real SDK.
"""

from __future__ import annotations

import pytest

from support.bluesky import (  # noqa: F401  (fake, make_client, sleeps and db are fixtures)
    DAY,
    NOW,
    NYT,
    add,
    db,
    fake,
    make_client,
    make_post,
    rows,
    sleeps,
)
from walter.ingest import extract_link, ingest_search, refresh_counts

LINK = "https://www.nytimes.com/2026/11/02/a.html"


def quote_of(rkey: str, quoted_card: dict) -> dict:
    """A post without a link of its own that quotes a post whose external card links `quoted_card['uri']`."""
    post = make_post(rkey, kind="none")
    quoted = {"$type": "app.bsky.embed.record#viewRecord", "uri": "at://did:plc:q/app.bsky.feed.post/q",
              "cid": "bafyq", "author": {"did": "did:plc:q", "handle": "q.test"},
              "value": {"$type": "app.bsky.feed.post", "text": "the story", "createdAt": "2026-11-02T09:00:00Z"},
              "indexedAt": "2026-11-02T09:00:00Z",
              "embeds": [{"$type": "app.bsky.embed.external#view", "external": quoted_card}]}
    post["embed"] = {"$type": "app.bsky.embed.record#view", "record": quoted}
    post["record"]["embed"] = {"$type": "app.bsky.embed.record",
                               "record": {"uri": quoted["uri"], "cid": quoted["cid"]}}
    return post


def search_day(fake, make_client, db, *posts: dict) -> dict:
    fake.search[(NYT, "")] = (add(fake, *posts), None)
    summary = ingest_search(db, make_client(), [NYT], DAY, tz="UTC", now=NOW)
    assert summary.posts_invalid == 0
    return rows(db)


def test_a_post_dated_in_the_future_is_filed_when_indexed_and_its_counts_finalised(fake, make_client, db):
    # Regression: the day and the counts' age came from the client-set createdAt (2030): filed under
    # 2030, with a negative age, and never due for final counts.
    post = make_post("future", created="2030-01-01T00:00:00Z")
    post["indexedAt"] = "2026-11-02T10:00:00Z"
    row = search_day(fake, make_client, db, post)[post["uri"]]
    assert (row["day"], row["created_utc"]) == (DAY, "2030-01-01T00:00:00.000000Z")
    assert row["counts_age_hours"] == pytest.approx(26.0)
    assert refresh_counts(db, make_client(), min_age_hours=24.0, now=NOW) == 1
    assert rows(db)[post["uri"]]["counts_final"] == 1


def test_a_backdated_import_counts_its_age_from_when_it_was_indexed(fake, make_client, db):
    # Regression: a post imported with a 2013 createdAt counted as 111,686 hours old.
    post = make_post("import", created="2013-11-02T10:00:00Z")
    post["indexedAt"] = "2026-11-02T10:00:00Z"
    row = search_day(fake, make_client, db, post)[post["uri"]]
    assert row["counts_age_hours"] == pytest.approx(26.0)
    assert row["day"] == "2013-11-02"  # the earlier of createdAt and indexedAt, as the AppView sorts it


def test_a_quoted_posts_card_is_the_link_of_a_quote_post(fake, make_client, db):
    quote = quote_of("quote", {"uri": LINK, "title": "Quoted story", "description": "About it"})
    assert extract_link(quote, NYT) == (LINK, "Quoted story", "About it")
    row = search_day(fake, make_client, db, quote)[quote["uri"]]
    assert (row["link"], row["link_title"]) == (LINK, "Quoted story")


def test_a_card_uri_with_surrounding_space_is_still_the_link(fake, make_client, db):
    post = make_post("spaced", link=f"  {LINK}\n")
    row = search_day(fake, make_client, db, post)[post["uri"]]
    assert (row["link"], row["url_norm"]) == (LINK, "https://nytimes.com/2026/11/02/a.html")


def test_a_card_without_title_or_an_author_without_handle_keeps_the_post(fake, make_client, db):
    # Regression: the lexicon requires both, so these posts were skipped although their link was usable.
    untitled = make_post("untitled")
    card = untitled["embed"]["external"]  # the same dict as the record's card
    del card["title"], card["description"]
    nameless = make_post("nameless", did="did:plc:bob")
    del nameless["author"]["handle"]
    quoted = quote_of("quoted-untitled", {"uri": LINK})
    got = search_day(fake, make_client, db, untitled, nameless, quoted)
    assert (got[untitled["uri"]]["link"], got[untitled["uri"]]["link_title"],
            got[untitled["uri"]]["link_description"]) == (LINK, None, None)
    assert (got[nameless["uri"]]["author_did"], got[nameless["uri"]]["author_handle"]) == ("did:plc:bob", None)
    assert got[quoted["uri"]]["link"] == LINK


def test_a_post_without_an_author_is_still_skipped_and_recorded(fake, make_client, db):
    broken = make_post("broken")
    del broken["author"]
    fake.search[(NYT, "")] = (add(fake, broken, make_post("good")), None)
    summary = ingest_search(db, make_client(), [NYT], DAY, tz="UTC", now=NOW)
    assert (summary.posts_invalid, summary.posts_stored) == (1, 1)
