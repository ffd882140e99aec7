"""Walter's Bluesky client and ingest against a local XRPC server (tests/support/bluesky.py), through the real
atproto SDK.

The fake server answers on two prefixes of one port: /pds/xrpc/... only for
com.atproto.server.* and /appview/xrpc/... only for app.bsky.*, so a call sent
to the wrong host fails. Its createSession answer carries a DID document naming
a dead PDS (port 9), which a client that followed it would hit.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import traceback
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from atproto import Session

from support.bluesky import (  # noqa: F401  (fake, make_client, sleeps and db are fixtures)
    ALICE,
    BOB,
    DAY,
    NOW,
    NYT,
    T0,
    FakeBluesky,
    add,
    answer,
    db,
    fake,
    feed_item,
    make_client,
    make_post,
    rows,
    sleeps,
    stall,
)
from walter.bsky import (
    PASSWORD_ENV,
    BlueskyAuthError,
    BlueskyConfig,
    BlueskyConfigError,
    BlueskyRateLimitError,
    BlueskyResponseError,
    BlueskyUnavailableError,
    session_path,
)
from walter.ingest import (
    article_key,
    author_baseline,
    extract_link,
    ingest_search,
    post_row,
    refresh_counts,
    update_baselines,
)

WEIGHTS = {"like": 1.0, "repost": 2.0, "reply": 1.0, "quote": 2.0}


# -- link extraction and rows ----------------------------------------------------------


def test_extract_link_reads_external_card_record_with_media_and_facets():
    link = "https://www.nytimes.com/2026/11/02/a.html"
    assert extract_link(make_post("a", kind="external")) == (link, "Title a", "About a")
    assert extract_link(make_post("b", kind="record_with_media")) == (link, "Title b", "About b")
    assert extract_link(make_post("c", kind="facet")) == (link, None, None)
    unhydrated = make_post("d", kind="external")
    del unhydrated["embed"]  # only the record's embed left
    assert extract_link(unhydrated) == (link, "Title d", "About d")
    assert extract_link(make_post("e", kind="none")) is None
    other = make_post("f", link="https://youtube.com/watch?v=1")
    assert extract_link(other) == ("https://youtube.com/watch?v=1", "Title f", "About f")
    assert extract_link(other, domain=NYT) is None
    assert extract_link(make_post("g"), domain="NYTimes.com")[0] == link


def test_article_key_merges_www_http_tracking_and_trailing_slash():
    assert article_key("http://www.NYTimes.com/a/b/?utm_source=bsky&id=3#top") == "https://nytimes.com/a/b?id=3"
    assert article_key("https://nytimes.com/a/b?id=3") == "https://nytimes.com/a/b?id=3"


def test_post_row_normalises_times_keeps_missing_counts_null_and_uses_local_day():
    post = make_post("a", counts=(5, None, 2, None), created="2026-11-02T20:30:00.123456789-05:00")
    post["indexedAt"] = "2026-11-03T01:30:01Z"
    now = datetime(2026, 11, 4, 1, 30, 0, 123456, tzinfo=timezone.utc)
    row = post_row(post, ZoneInfo("America/New_York"), now)
    assert row["created_utc"] == "2026-11-03T01:30:00.123456Z"
    assert row["indexed_utc"] == "2026-11-03T01:30:01.000000Z"
    assert (row["like_count"], row["repost_count"], row["reply_count"], row["quote_count"]) == (5, None, 2, None)
    assert row["counts_age_hours"] == pytest.approx(24.0 - 0.876544 / 3600)  # from indexedAt, not createdAt
    assert row["counts_read_utc"] == "2026-11-04T01:30:00.123456Z"
    assert row["day"] == "2026-11-02"  # evening in New York, already the 3rd in UTC
    assert post_row(post, ZoneInfo("UTC"), now)["day"] == "2026-11-03"
    assert row["url_norm"] == "https://nytimes.com/2026/11/02/a.html"
    assert (row["link_title"], row["counts_final"], row["deleted"]) == ("Title a", 0, 0)


# -- the client: session, hosts, errors --------------------------------------------------


def test_login_once_session_file_0600_and_reused_by_the_next_client(fake, make_client):
    add(fake, make_post("a"))
    fake.search[(NYT, "")] = (["at://did:plc:alice/app.bsky.feed.post/a"], None)
    posts, cursor = make_client().search_posts(domain=NYT)
    assert [p["uri"] for p in posts] == ["at://did:plc:alice/app.bsky.feed.post/a"] and cursor is None
    path = session_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = Session.decode(path.read_text())
    assert (stored.did, stored.handle) == (fake.did, fake.handle) and stored.access_jwt in fake.access

    os.chmod(path, 0o644)  # a file left readable by an older version is tightened on load
    make_client().search_posts(domain=NYT)
    assert fake.count("com.atproto.server.createSession") == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert fake.calls[-1].auth == f"Bearer {stored.access_jwt}"


def test_auth_goes_to_the_pds_reads_to_the_appview_never_to_the_did_document_pds(fake, make_client):
    client = make_client()
    client.search_posts(domain=NYT)
    client.get_posts(["at://did:plc:alice/app.bsky.feed.post/x"])
    assert [(c.host, c.nsid) for c in fake.calls] == [
        ("pds", "com.atproto.server.createSession"),
        ("appview", "app.bsky.feed.searchPosts"),
        ("appview", "app.bsky.feed.getPosts"),
    ]
    assert fake.calls[1].params == {"q": ["*"], "domain": [NYT], "limit": ["100"], "sort": ["latest"]}


def test_429_waits_until_ratelimit_reset_then_retries(fake, make_client, sleeps):
    fake.faults["app.bsky.feed.searchPosts"].append(answer(
        429, {"error": "RateLimitExceeded"},
        {"ratelimit-limit": "3000", "ratelimit-remaining": "0", "ratelimit-reset": str(int(T0) + 42)}))
    fake.faults["app.bsky.feed.getPosts"].append(answer(429, {"error": "RateLimitExceeded"}, {"retry-after": "7"}))
    client = make_client()
    assert client.search_posts(domain=NYT) == ([], None)
    assert client.get_posts(["at://did:plc:alice/app.bsky.feed.post/x"]) == []
    assert sleeps == [42.0, 7.0]
    assert fake.count("app.bsky.feed.searchPosts") == 2


def test_429_with_a_reset_beyond_the_cap_raises_without_waiting(fake, make_client, sleeps):
    fake.faults["app.bsky.feed.searchPosts"].append(answer(
        429, {"error": "RateLimitExceeded"}, {"ratelimit-reset": str(int(T0) + 3600)}))
    with pytest.raises(BlueskyRateLimitError, match="3600 s more") as err:
        make_client(max_wait_s=600).search_posts(domain=NYT)
    assert err.value.wait_s == 3600.0 and sleeps == []


def test_500_is_retried_with_backoff_and_a_persistent_503_gives_up(fake, make_client, sleeps):
    fake.faults["app.bsky.feed.searchPosts"].append(answer(500, {"error": "InternalServerError"}))
    client = make_client()
    assert client.search_posts(domain=NYT) == ([], None)
    assert sleeps == [1.0] and fake.count("app.bsky.feed.searchPosts") == 2

    sleeps.clear()
    fake.faults["app.bsky.feed.searchPosts"].extend(answer(503, {"error": "Unavailable"}) for _ in range(4))
    with pytest.raises(BlueskyUnavailableError, match="failed 4 times, last with 503"):
        client.search_posts(domain=NYT)
    assert sleeps == [1.0, 2.0, 4.0]


def test_timeout_is_retried(fake, make_client, sleeps):
    fake.faults["app.bsky.feed.searchPosts"].append(stall(0.6))
    assert make_client(timeout_s=0.2).search_posts(domain=NYT) == ([], None)
    assert sleeps == [1.0] and fake.count("app.bsky.feed.searchPosts") == 2

    sleeps.clear()
    fake.faults["app.bsky.feed.searchPosts"].extend([stall(0.6), stall(0.6)])
    with pytest.raises(BlueskyUnavailableError, match="InvokeTimeoutError"):
        make_client(timeout_s=0.2, max_retries=1).search_posts(domain=NYT)


def test_a_body_that_does_not_parse_is_retried_like_a_5xx_and_stays_a_response_error(fake, make_client, sleeps):
    client = make_client()
    fake.faults["app.bsky.feed.searchPosts"].append(answer(200, b'{"posts": [{"uri": '))  # a cut connection
    assert client.search_posts(domain=NYT) == ([], None)
    assert sleeps == [1.0] and fake.count("app.bsky.feed.searchPosts") == 2

    sleeps.clear()
    fake.faults["app.bsky.feed.searchPosts"].extend([answer(200, b'{"posts": [{"uri": ')] * 4)
    with pytest.raises(BlueskyResponseError, match=r"searchPosts at .* not valid: EOF while parsing .* \(4 attempts\)"):
        client.search_posts(domain=NYT)
    assert sleeps == [1.0, 2.0, 4.0] and fake.count("app.bsky.feed.searchPosts") == 6


def test_a_page_of_the_wrong_shape_is_a_typed_error_not_retried(fake, make_client, sleeps):
    client = make_client()
    fake.faults["app.bsky.feed.searchPosts"].append(answer(200, {"cursor": "c1"}))  # no "posts"
    with pytest.raises(BlueskyResponseError, match="not valid: posts: Field required"):
        client.search_posts(domain=NYT)
    fake.faults["app.bsky.feed.searchPosts"].append(answer(200, {"posts": [], "cursor": 7}))
    with pytest.raises(BlueskyResponseError, match="not valid: cursor: "):
        client.search_posts(domain=NYT)
    assert sleeps == [] and fake.count("app.bsky.feed.searchPosts") == 2


def test_a_malformed_post_goes_to_on_invalid_and_the_rest_of_its_page_comes_back(fake, make_client):
    good, broken = make_post("good"), make_post("broken")
    del broken["author"]
    fake.search[(NYT, "")] = (add(fake, good, broken), "c1")
    seen: list[tuple[str | None, str]] = []
    posts, cursor = make_client().search_posts(domain=NYT, on_invalid=lambda uri, why: seen.append((uri, why)))
    assert ([p["uri"] for p in posts], cursor) == ([good["uri"]], "c1")
    [(uri, why)] = seen
    assert uri == broken["uri"] and why.endswith("sent an item that is not valid: posts.1.author: Field required")
    with pytest.raises(BlueskyResponseError, match=r"not valid: posts\.1\.author: Field required"):
        make_client().search_posts(domain=NYT)  # without on_invalid the page is an error, as before


def store_session(fake: FakeBluesky, access: str, refresh: str) -> None:
    session_path().parent.mkdir(parents=True, exist_ok=True)
    session_path().write_text(Session(fake.handle, fake.did, access, refresh, fake.url + "/pds").encode())


def test_expired_stored_token_is_refreshed_once_without_a_login(fake, make_client):
    old = fake.new_tokens()
    fake.access.discard(old["accessJwt"])
    fake.expired.add(old["accessJwt"])  # the PDS says 400 ExpiredToken
    store_session(fake, old["accessJwt"], old["refreshJwt"])
    make_client().search_posts(domain=NYT)
    assert fake.count("com.atproto.server.refreshSession") == 1
    assert fake.count("com.atproto.server.createSession") == 0
    assert fake.count("app.bsky.feed.searchPosts") == 2
    assert Session.decode(session_path().read_text()).access_jwt in fake.access


def test_revoked_session_falls_back_to_one_login(fake, make_client):
    store_session(fake, fake.jwt("com.atproto.appPass"), fake.jwt("com.atproto.refresh"))  # unknown to the server
    make_client().search_posts(domain=NYT)
    assert [c.nsid for c in fake.calls] == ["app.bsky.feed.searchPosts", "com.atproto.server.refreshSession",
                                            "com.atproto.server.createSession", "app.bsky.feed.searchPosts"]


def test_token_near_its_exp_is_refreshed_before_the_call(fake, make_client):
    tokens = fake.new_tokens()
    soon = fake.jwt("com.atproto.appPass", exp=int(T0) + 60)
    fake.access.add(soon)
    store_session(fake, soon, tokens["refreshJwt"])
    make_client().search_posts(domain=NYT)
    assert [c.nsid for c in fake.calls] == ["com.atproto.server.refreshSession", "app.bsky.feed.searchPosts"]


def test_a_persistent_401_renews_once_then_raises(fake, make_client):
    fake.reject_reads = True
    with pytest.raises(BlueskyAuthError, match="still rejected the session after one refresh"):
        make_client().search_posts(domain=NYT)
    assert fake.count("com.atproto.server.createSession") == 1
    assert fake.count("com.atproto.server.refreshSession") == 1
    assert fake.count("app.bsky.feed.searchPosts") == 2


def test_missing_credentials_and_bad_urls_are_config_errors(fake, make_client, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(BlueskyConfigError, match=PASSWORD_ENV):
        make_client().search_posts(domain=NYT)
    assert fake.calls == []
    with pytest.raises(BlueskyConfigError, match="ftp://x"):
        BlueskyConfig(pds_url="ftp://x")
    monkeypatch.setenv("WALTER_APPVIEW_URL", "http://appview.example")
    assert BlueskyConfig.from_env().appview_url == "http://appview.example"


def test_the_app_password_never_leaks(fake, make_client, db, capsys, caplog, varro_home, monkeypatch):
    canary = "pw-CANARY-7q2x-only-in-env"
    fake.password = canary
    monkeypatch.setenv(PASSWORD_ENV, canary)
    caplog.set_level(logging.DEBUG)  # httpx / httpcore / SDK debug logs included
    add(fake, make_post("a"))
    fake.search[(NYT, "")] = (["at://did:plc:alice/app.bsky.feed.post/a"], None)
    seen: list[str] = []

    client = make_client()
    summary = ingest_search(db, client, [NYT], DAY, tz="UTC", now=NOW)
    seen += [repr(client), repr(summary), repr(client.get_posts(list(fake.posts))), repr(client.config)]
    assert summary.posts_stored == 1
    assert any(c.body and c.body.get("password") == canary for c in fake.calls)  # it was really used

    fake.reject_reads = True  # the session is rejected: refresh, re-login, still rejected
    failures = []
    with pytest.raises(BlueskyAuthError) as err:
        make_client().search_posts(domain=NYT)
    failures.append(err.value)
    fake.reject_reads = False
    session_bytes = session_path().read_bytes()
    session_path().unlink()
    fake.password = "a-different-password"  # the login itself is rejected
    with pytest.raises(BlueskyAuthError, match="createSession .* rejected") as err:
        make_client().search_posts(domain=NYT)
    failures.append(err.value)

    for e in failures:
        seen += [str(e), repr(e), "".join(traceback.format_exception(e))]
    out = capsys.readouterr()
    seen += [out.out, out.err, caplog.text, *(r.getMessage() for r in caplog.records)]
    assert "createSession" in caplog.text or "logged in" in caplog.text  # the logs were captured
    assert not [s for s in seen if canary in s]
    assert fake.did.encode() in session_bytes and canary.encode() not in session_bytes
    files = [p for p in (varro_home / "data").rglob("*") if p.is_file()]
    assert "varro.db" in {p.name for p in files}
    assert not [p.name for p in files if canary.encode() in p.read_bytes()]


# -- ingest ----------------------------------------------------------------------------------


def test_ingest_search_pages_through_an_empty_page_and_stores_linked_posts(fake, make_client, db):
    a = make_post("a", counts=(4, None, 1, None))  # missing counts
    b = make_post("b", kind="facet", link="https://nytimes.com/2026/11/02/b.html?utm_source=bsky")
    c = make_post("c", kind="record_with_media", link="http://www.nytimes.com/2026/11/02/a.html")
    d = make_post("d", kind="none")
    e = make_post("e", link="https://youtube.com/watch?v=1")
    ua, ub, uc, ud, ue = add(fake, a, b, c, d, e)
    fake.search[(NYT, "")] = ([ua, ud], "c1")
    fake.search[(NYT, "c1")] = ([], "c2")  # an empty page whose cursor goes on
    fake.search[(NYT, "c2")] = ([ub, uc, ue], None)
    summary = ingest_search(db, make_client(), [NYT], DAY, tz="America/New_York", now=NOW)

    searches = [c for c in fake.calls if c.nsid == "app.bsky.feed.searchPosts"]
    assert [c.params.get("cursor", [None])[0] for c in searches] == [None, "c1", "c2"]
    assert searches[0].params["since"] == ["2026-11-02T05:00:00Z"]
    assert searches[0].params["until"] == ["2026-11-03T05:00:00Z"]
    assert (summary.pages, summary.posts_seen, summary.posts_stored, summary.posts_new,
            summary.posts_without_link) == (3, 5, 3, 3, 2)
    got = rows(db)
    assert set(got) == {ua, ub, uc}
    assert (got[ua]["like_count"], got[ua]["repost_count"], got[ua]["reply_count"], got[ua]["quote_count"]) \
        == (4, None, 1, None)
    assert (got[ub]["link_title"], got[ub]["url_norm"]) == (None, "https://nytimes.com/2026/11/02/b.html")
    assert got[uc]["url_norm"] == got[ua]["url_norm"] == "https://nytimes.com/2026/11/02/a.html"
    assert got[uc]["link_title"] == "Title c"
    assert got[ua]["counts_age_hours"] == pytest.approx(26.0)
    assert dict(db.execute("select query, finished from bsky_cursors").fetchall()) == {"domain:nytimes.com": 1}
    assert list(db.query("select url_norm, posts from articles order by url_norm")) == [
        {"url_norm": "https://nytimes.com/2026/11/02/a.html", "posts": 2},
        {"url_norm": "https://nytimes.com/2026/11/02/b.html", "posts": 1},
    ]


def test_rerunning_a_day_changes_nothing_and_a_finished_search_is_not_repeated(fake, make_client, db):
    ua, ub = add(fake, make_post("a"), make_post("b"))
    fake.search[(NYT, "")] = ([ua], "c1")
    fake.search[(NYT, "c1")] = ([ub], None)
    client = make_client()
    ingest_search(db, client, [NYT], DAY, tz="UTC", now=NOW)
    before = rows(db)
    again = ingest_search(db, client, [NYT], DAY, tz="UTC", now=NOW + timedelta(hours=1))
    assert (again.queries, again.queries_done_before, again.pages) == (0, 1, 0)
    assert fake.count("app.bsky.feed.searchPosts") == 2 and rows(db) == before

    today = ingest_search(db, client, [NYT], "2026-11-03", tz="UTC", now=NOW)  # not over yet
    assert ingest_search(db, client, [NYT], "2026-11-03", tz="UTC", now=NOW).queries == today.queries == 1
    assert fake.count("app.bsky.feed.searchPosts") == 6 and len(rows(db)) == 2

    db.execute("delete from bsky_cursors")  # force a real re-search: upserts, no duplicates
    fake.posts[ua]["likeCount"] = 9
    fake.posts[ua]["embed"] = make_post("z", link="https://nytimes.com/other.html")["embed"]
    third = ingest_search(db, client, [NYT], DAY, tz="UTC", now=NOW + timedelta(hours=2))
    after = rows(db)
    assert (third.posts_stored, third.posts_new, len(after)) == (2, 0, 2)
    assert after[ua]["like_count"] == 9 and after[ua]["first_seen_utc"] == before[ua]["first_seen_utc"]
    assert after[ua]["url_norm"] == before[ua]["url_norm"]  # the first sighting's article


def test_a_failing_page_keeps_earlier_pages_and_the_rerun_resumes_from_the_saved_cursor(fake, make_client, db):
    uris = add(fake, *(make_post(f"p{i}") for i in range(4)))
    fake.search[(NYT, "")] = ([uris[0]], "c1")
    fake.search[(NYT, "c1")] = ([uris[1]], "c2")
    fake.search[(NYT, "c2")] = ([uris[2]], "c3")
    fake.search[(NYT, "c3")] = ([uris[3]], None)
    client = make_client(max_retries=0)
    fake.faults["app.bsky.feed.searchPosts"] = [lambda req: False, lambda req: False,
                                                answer(502, {"error": "UpstreamFailure"})]
    with pytest.raises(BlueskyUnavailableError, match="502"):
        ingest_search(db, client, [NYT], DAY, tz="UTC", now=NOW)
    assert set(rows(db)) == set(uris[:2])
    state = db.execute("select cursor, finished, pages from bsky_cursors").fetchall()
    assert state == [("c2", 0, 2)]

    fake.calls.clear()
    summary = ingest_search(db, client, [NYT], DAY, tz="UTC", now=NOW)
    assert [c.params.get("cursor", [None])[0] for c in fake.calls if c.nsid == "app.bsky.feed.searchPosts"] \
        == ["c2", "c3"]
    assert summary.pages == 2 and set(rows(db)) == set(uris)
    assert db.execute("select cursor, finished, pages from bsky_cursors").fetchall() == [(None, 1, 4)]


def test_refresh_counts_at_the_fixed_age_in_chunks_marks_deleted_and_keeps_final_counts(fake, make_client, db):
    old = [make_post(f"o{i:02d}", created="2026-11-01T10:00:00Z", counts=(1, 0, 0, 0)) for i in range(30)]
    young = make_post("young", created="2026-11-03T02:00:00Z")
    uris = add(fake, *old, young)
    fake.search[(NYT, "")] = (uris, None)
    client = make_client()
    ingest_search(db, client, [NYT], "2026-11-01", tz="UTC", now=NOW)
    ingest_search(db, client, [NYT], "2026-11-03", tz="UTC", now=NOW)  # same answer; young is on the 3rd
    for p in old:
        p["likeCount"] = 10
    del fake.posts[old[1]["uri"]]["repostCount"]
    fake.gone.add(old[0]["uri"])
    fake.calls.clear()

    assert refresh_counts(db, client, min_age_hours=24.0, now=NOW) == 29
    assert [len(c.params["uris"]) for c in fake.calls if c.nsid == "app.bsky.feed.getPosts"] == [25, 5]
    got = rows(db)
    assert got[old[0]["uri"]]["deleted"] == 1 and got[old[0]["uri"]]["counts_final"] == 0
    assert (got[old[2]["uri"]]["like_count"], got[old[2]["uri"]]["counts_final"]) == (10, 1)
    assert got[old[2]["uri"]]["counts_age_hours"] == pytest.approx(50.0)
    assert got[old[2]["uri"]]["counts_read_utc"] == "2026-11-03T12:00:00.000000Z"
    assert got[old[1]["uri"]]["repost_count"] is None
    assert got[young["uri"]]["counts_final"] == 0
    assert refresh_counts(db, client, now=NOW) == 0  # nothing left to do

    fake.posts[old[2]["uri"]]["likeCount"] = 99  # a later search must not overwrite final counts
    db.execute("delete from bsky_cursors")
    ingest_search(db, client, [NYT], "2026-11-01", tz="UTC", now=NOW + timedelta(days=1))
    assert rows(db)[old[2]["uri"]]["like_count"] == 10


def test_baselines_skip_reposts_and_young_posts_cache_and_exclude_the_scored_post(fake, make_client, db):
    old = "2026-11-01T10:00:00Z"
    own = [make_post("b1", did=BOB, created=old, counts=(2, 0, 0, 0)),  # engagement 2
           make_post("b2", did=BOB, created=old, counts=(4, 1, 2, 0)),  # 4 + 2 + 2 = 8
           make_post("b3", did=BOB, created=old, counts=(100, 0, 0, 0)),  # the scored post
           make_post("b4", did=BOB, created=old, counts=(1, 0, 1, 1)),  # 1 + 1 + 2 = 4
           make_post("b5", did=BOB, created=old, counts=(7, None, 0, 0))]  # unknown count: skipped
    young = make_post("b6", did=BOB, created="2026-11-03T11:00:00Z", counts=(0, 0, 0, 0))
    reposted = make_post("x1", did=ALICE, created=old, counts=(500, 0, 0, 0))
    fake.feeds[(BOB, "")] = ([feed_item(young), feed_item(own[0]), feed_item(reposted, repost_by=BOB),
                              feed_item(own[1])], "f1")
    fake.feeds[(BOB, "f1")] = ([feed_item(p) for p in own[2:]], None)
    client = make_client()

    assert update_baselines(db, client, [BOB, BOB], now=NOW) == 1
    feed_calls = [c for c in fake.calls if c.nsid == "app.bsky.feed.getAuthorFeed"]
    assert [c.params["filter"] for c in feed_calls] == [["posts_no_replies"], ["posts_no_replies"]]
    author = db["bsky_authors"].get(BOB)
    assert json.loads(author["posts_json"]) == [[p["uri"], p.get("likeCount"), p.get("repostCount"),
                                                 p.get("replyCount"), p.get("quoteCount")] for p in own]
    assert (author["handle"], author["expires_utc"]) == ("bob.test", "2026-11-10T12:00:00.000000Z")

    scored = own[2]["uri"]
    assert author_baseline(db, BOB, scored, WEIGHTS) == 4.0  # median(2, 8, 4); 6.0 with the scored post
    assert author_baseline(db, BOB, "at://other", WEIGHTS) == 6.0
    assert author_baseline(db, ALICE, scored, WEIGHTS) is None  # not cached: no number invented

    assert update_baselines(db, client, [BOB], now=NOW + timedelta(days=6)) == 0  # cached
    fake.feeds[(BOB, "")] = ([feed_item(own[2])], None)
    assert update_baselines(db, client, [BOB], now=NOW + timedelta(days=8)) == 1  # expired: fetched again
    assert author_baseline(db, BOB, scored, WEIGHTS) is None  # only the scored post is left


def test_get_profiles_in_chunks_of_25(fake, make_client):
    dids = [f"did:plc:p{i:02d}" for i in range(27)]
    fake.profiles = {d: {"did": d, "handle": d[8:] + ".test", "followersCount": 3} for d in dids[:26]}
    profiles = make_client().get_profiles(dids)
    assert [p["did"] for p in profiles] == dids[:26] and profiles[0]["followersCount"] == 3
    assert [len(c.params["actors"]) for c in fake.calls if c.nsid == "app.bsky.actor.getProfiles"] == [25, 2]
