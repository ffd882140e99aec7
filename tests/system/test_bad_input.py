"""Bad input never crashes the loop, never loses stored data, and always says what was wrong.

- RSS: `varro ingest` against the local feed server of tests/support/feeds.py, a good feed
  first, then each kind of bad body; the good rows must come through unchanged.
- Bluesky: the ingest functions against the local XRPC server of
  tests/support/bluesky.py; a first page is stored, then the second goes wrong.
- Empty days and a model that is not available offline, through the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from support.bluesky import (  # noqa: F401  (fake, make_client, sleeps, db and server are fixtures)
    NOW,
    ALICE,
    BOB,
    CREATED,
    NYT,
    PAST_DAY,
    T0,
    add,
    answer,
    db,
    fake,
    feed_item,
    make_client,
    make_post,
    rows,
    sleeps,
    summary,
)
from support.bluesky import server as bsky_server  # noqa: F401  (a fixture; `server` is the feeds')
from support.feeds import RSS, respond, server  # noqa: F401  (server is a fixture)
from varro.engine.run.checkpoints import list_checkpoints
from varro.engine.core.paths import run_dir
from varro.forecast.ingest import DEFAULT_MAX_BYTES
from walter.bsky import BlueskyAuthError, BlueskyRateLimitError, BlueskyResponseError, BlueskyUnavailableError
from walter.ingest import ingest_search, refresh_counts, update_baselines

DAY = "2026-11-02"

# -- RSS ------------------------------------------------------------------------------------------

EMPTY_FEED = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Quiet Channel</title><link>https://quiet.example/</link></channel></rss>"""

HTML_PAGE = b"""<!doctype html><html><head><title>We moved!</title></head>
<body><p>Our feed now lives at <a href="/new">/new</a>.</p></body></html>"""

JSON_BODY = json.dumps({"items": [{"title": "A JSON item", "url": "https://json.example/1"}]}).encode()

LATIN1_FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Caf\u00e9 Gazette</title>
<item><title>Caf\u00e9 cr\u00e8me prices rise</title><link>https://cafe.example/1</link><guid>cafe-1</guid></item>
<item><title>Na\u00efve forecasts, \u00a3 and \u00e9t\u00e9</title><link>https://cafe.example/2</link>
  <guid>cafe-2</guid></item>
</channel></rss>""".encode("latin-1")  # declares UTF-8, is Latin-1

BOGUS_ENCODING_FEED = """<?xml version="1.0" encoding="x-bogus-42"?>
<rss version="2.0"><channel><title>Bogus Encoding</title>
<item><title>Z\u00fcrich na\u00efve r\u00e9sum\u00e9</title><link>https://bogus.example/1</link>
  <guid>bogus-1</guid></item>
</channel></rss>""".encode("utf-8")

DUPLICATES_FEED = (b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Stutter News</title>"""
                   + b"".join(f"<item><title>Version {k} of the story</title><link>https://stutter.example/{k}</link>"
                              f"<guid>same-guid</guid></item>".encode() for k in range(50))
                   + b"</channel></rss>")

OVER_THE_CAP = RSS.replace(b"</channel>", b"<!--" + b"x" * (DEFAULT_MAX_BYTES + 1024) + b"--></channel>")

# (route, body, content type) -> exit status, the summary line's start, what it says, {guid: title} stored
BAD_FEEDS = {
    "empty body": (("/empty-body.xml", b"", "application/rss+xml"), 1, None, "sent an empty body, not a feed", {}),
    "no items": (("/no-items.xml", EMPTY_FEED, "application/rss+xml"), 0, "Quiet Channel",
                 "(the feed has no items)", {}),
    "over max_bytes": (("/over.xml", OVER_THE_CAP, "application/rss+xml"), 1, None,
                       f"is {len(OVER_THE_CAP)} bytes, over the limit of {DEFAULT_MAX_BYTES}", {}),
    "over max_bytes, no length": ((None, None, None), 1, None, f"exceeds the limit of {DEFAULT_MAX_BYTES} bytes", {}),
    "html page": (("/page.html", HTML_PAGE, "text/html"), 1, None,
                  "is not a readable feed (text/html): ", {}),
    "json": (("/data.json", JSON_BODY, "application/json"), 1, None,
             "is not a readable feed (application/json): ", {}),
    "xml, not a feed": (("/note.xml", b'<?xml version="1.0"?><note>hi</note>', "application/xml"), 1, None,
                        "is not a readable feed (application/xml): no RSS or Atom root element", {}),
    "latin-1 declared utf-8": (("/latin1.xml", LATIN1_FEED, "application/rss+xml"), 0, "Caf\u00e9 Gazette",
                               # Latin-1 throughout: too few valid UTF-8 characters to re-read it as declared,
                               # so feedparser's windows-1252 reading is kept, and with it every accent
                               "(malformed, kept what parsed: not utf-8 as declared; read as windows-1252)",
                               {"cafe-1": "Caf\u00e9 cr\u00e8me prices rise",
                                "cafe-2": "Na\u00efve forecasts, \u00a3 and \u00e9t\u00e9"}),
    "bogus encoding": (("/bogus.xml", BOGUS_ENCODING_FEED, "application/rss+xml"), 0, "Bogus Encoding",
                       # an encoding Python does not know: feedparser's UTF-8 reading is all there is
                       "(malformed, kept what parsed: not x-bogus-42 as declared; read as utf-8)",
                       {"bogus-1": "Z\u00fcrich na\u00efve r\u00e9sum\u00e9"}),
    "duplicate guids": (("/dupes.xml", DUPLICATES_FEED, "application/rss+xml"), 0, "Stutter News",
                        "(49 of 50 items repeat an earlier item's guid or link; the first is kept)",
                        {"same-guid": "Version 0 of the story"}),
}


def add_route(server, case: str, path: str | None = None) -> str:
    """Serve `case`'s body at `path` (default: the case's own path); returns the URL."""
    (own, body, content_type) = BAD_FEEDS[case][0]
    path = path or own or "/huge-endless.xml"
    # no body: the feed server's endless one (tests/support/feeds.py), sent without a Content-Length
    server.routes[path] = server.endless if body is None else respond(body, content_type=content_type)
    return server.url(path)


def varro(*args: str):
    from varro.cli import cli

    return CliRunner().invoke(cli, list(args))


def table(db, sql: str) -> list[dict[str, Any]]:
    return [dict(r) for r in db.query(sql)]


@pytest.mark.parametrize("case", list(BAD_FEEDS))
def test_a_feed_that_turns_bad_is_reported_and_loses_nothing(server, db, case):
    _, status, name, says, stored = BAD_FEEDS[case]
    server.routes["/feed.xml"] = respond(RSS)
    url = server.url("/feed.xml")
    first = varro("ingest", "--date", DAY, "--timezone", "UTC", "--feed", url)
    assert first.exit_code == 0, first.output
    before = table(db, "select * from headlines order by id")
    assert len(before) == 3

    add_route(server, case, "/feed.xml")  # the next night the same URL serves the bad body
    out = varro("ingest", "--date", DAY, "--timezone", "UTC", "--feed", url)
    assert out.exit_code == status, out.output
    assert ("error: no feed could be read" in out.stderr) == (status == 1)
    [line] = [ln for ln in out.stdout.splitlines() if says in ln]  # its own line says what was wrong
    assert line.startswith(name or "Harbour Herald")  # a failed feed keeps the name it had
    assert out.stdout.splitlines()[-1].startswith(f"total: 1 feeds, {1 - status} read, {status} failed")
    assert "Traceback" not in out.output

    after = table(db, "select * from headlines order by id")
    assert [r for r in after if r["id"] in {b["id"] for b in before}] == before  # untouched, to the byte
    assert {r["guid"]: r["title"] for r in after if r not in before} == stored
    row = db["feeds"].get(url)
    assert (row["last_error"] is None) == (status == 0)
    if status:
        assert says in row["last_error"]


def test_every_bad_feed_at_once_still_reads_the_good_ones(server, db):
    urls = [add_route(server, case) for case in BAD_FEEDS]
    out = varro("ingest", "--date", DAY, "--timezone", "UTC", "--feed", server.url("/rss.xml"), *(
        f for u in urls for f in ("--feed", u)))
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert len(lines) == 1 + 1 + len(BAD_FEEDS) + 1  # header, the good feed, each bad one, total
    failed = sum(case[1] for case in BAD_FEEDS.values())
    assert lines[-1] == (f"total: {1 + len(BAD_FEEDS)} feeds, {1 + len(BAD_FEEDS) - failed} read, {failed} failed, "
                         "7 new headlines")  # 3 good, 2 Latin-1, 1 bogus encoding, 1 of the 50 duplicates
    for _, _, _, says, _ in BAD_FEEDS.values():
        assert sum(says in ln for ln in lines) == 1, says
    again = varro("ingest", "--date", DAY, "--timezone", "UTC", "--feed", server.url("/rss.xml"), *(
        f for u in urls for f in ("--feed", u)))
    assert again.exit_code == 0 and again.stdout.splitlines()[-1].endswith(", 0 new headlines")
    assert db.execute("select count(*) from headlines").fetchone()[0] == 7


# -- Bluesky ------------------------------------------------------------------------------------


def two_pages(fake) -> tuple[list[str], list[str]]:
    """Search results on two pages: two posts, then two more."""
    uris = add(fake, *(make_post(f"p{i}") for i in range(4)))
    fake.search[(NYT, "")] = (uris[:2], "c1")
    fake.search[(NYT, "c1")] = (uris[2:], None)
    return uris[:2], uris[2:]


def passthrough(req) -> bool:
    return False  # a fault slot that lets the normal answer through


def cut_off(req) -> bool:
    """Headers promise the whole page, half of it comes, then the connection closes."""
    body = json.dumps({"posts": [], "cursor": "c9"}).encode()
    req.send_response(200)
    req.send_header("Content-Type", "application/json")
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body[: len(body) // 2])
    req.close_connection = True
    return True


def without(field: str):
    """A page whose only post lacks `field`."""
    def fault(req) -> bool:
        post = make_post("broken")
        del post[field]
        answer(200, {"posts": [post], "cursor": "c2"})(req)
        return True
    return fault


SECOND_PAGE_FAULTS = {
    # a body that does not parse is retried like a 5xx: these stay bad for the first answer and 3 retries
    "malformed json": ([answer(200, b'{"posts": [{"uri": "at://x", ]}')] * 4, BlueskyResponseError,
                       "searchPosts at .* sent an answer that is not valid: .* \\(4 attempts\\)"),
    "truncated json": ([answer(200, json.dumps({"posts": [make_post("t")]}).encode()[:-40])] * 4,
                       BlueskyResponseError, "not valid: EOF while parsing"),
    "connection cut mid-answer": ([cut_off] * 4, BlueskyUnavailableError,
                                  "failed 4 times, last with RemoteProtocolError"),
    "a page without posts": ([answer(200, {"cursor": "c2"})], BlueskyResponseError, "not valid: posts: Field required"),
    "rate-limited past the cap": ([answer(429, {"error": "RateLimitExceeded"},
                                          {"ratelimit-remaining": "0", "ratelimit-reset": str(int(T0) + 3600)})],
                                  BlueskyRateLimitError, "rate-limited for 3600 s more"),
    "401 after a renewal": ([answer(401, {"error": "AuthenticationRequired", "message": "Bad token"})] * 2,
                            BlueskyAuthError, "still rejected the session after one refresh"),
}


@pytest.mark.parametrize("case", list(SECOND_PAGE_FAULTS))
def test_a_bad_second_page_is_a_typed_error_and_the_first_page_stays(fake, make_client, db, case):
    faults, error, message = SECOND_PAGE_FAULTS[case]
    first, second = two_pages(fake)
    fake.faults["app.bsky.feed.searchPosts"] = [passthrough, *faults]
    client = make_client()
    with pytest.raises(error, match=message) as err:
        ingest_search(db, client, [NYT], DAY, tz="UTC", now=NOW)
    assert "\n" not in str(err.value)  # the CLI prints it as one line
    assert set(rows(db)) == set(first)
    assert db.execute("select cursor, finished, pages from bsky_cursors").fetchall() == [("c1", 0, 1)]

    fake.faults.clear()  # the next night resumes at the failed page
    summary = ingest_search(db, make_client(), [NYT], DAY, tz="UTC", now=NOW)
    assert (summary.pages, summary.posts_new) == (1, 2)
    assert set(rows(db)) == set(first + second)


def test_a_rate_limit_within_the_cap_waits_for_the_reset(fake, make_client, db, sleeps):
    first, second = two_pages(fake)
    fake.faults["app.bsky.feed.searchPosts"] = [passthrough, answer(
        429, {"error": "RateLimitExceeded"}, {"ratelimit-remaining": "0", "ratelimit-reset": str(int(T0) + 30)})]
    summary = ingest_search(db, make_client(), [NYT], DAY, tz="UTC", now=NOW)
    assert sleeps == [30.0]
    assert (summary.pages, summary.posts_new) == (2, 4) and set(rows(db)) == set(first + second)


def test_posts_without_a_usable_created_at_are_skipped_and_counted(fake, make_client, db, caplog):
    good = make_post("good")
    no_time = make_post("no-time")
    del no_time["record"]["createdAt"]
    bad_time = make_post("bad-time", created="the day before yesterday")
    no_link = make_post("no-link", kind="none")
    uris = add(fake, good, no_time, bad_time, no_link)
    fake.search[(NYT, "")] = (uris, None)
    summary = ingest_search(db, make_client(), [NYT], DAY, tz="UTC", now=NOW)
    assert (summary.posts_seen, summary.posts_stored, summary.posts_invalid, summary.posts_without_link) == (
        4, 1, 2, 1)
    assert set(rows(db)) == {good["uri"]}
    skipped = [r.getMessage() for r in caplog.records if "skipping a post" in r.getMessage()]
    assert len(skipped) == 2
    assert any(no_time["uri"] in m and "createdAt not a datetime: None" in m for m in skipped)
    assert any(bad_time["uri"] in m and "'the day before yesterday'" in m for m in skipped)


def test_a_bad_count_refresh_keeps_the_chunks_already_refreshed(fake, make_client, db):
    posts = [make_post(f"o{i:02d}", created="2026-11-01T10:00:00Z", counts=(1, 0, 0, 0)) for i in range(30)]
    uris = add(fake, *posts)
    fake.search[(NYT, "")] = (uris, None)
    client = make_client()
    ingest_search(db, client, [NYT], "2026-11-01", tz="UTC", now=NOW)
    for p in posts:
        p["likeCount"] = 10
    fake.faults["app.bsky.feed.getPosts"] = [passthrough, *[answer(200, b'{"posts": [')] * 4]
    with pytest.raises(BlueskyResponseError, match="getPosts at .* not valid: EOF while parsing"):
        refresh_counts(db, client, now=NOW)
    got = rows(db)
    assert len(got) == 30
    assert sorted((r["like_count"], r["counts_final"]) for r in got.values()) == [(1, 0)] * 5 + [(10, 1)] * 25
    fake.faults.clear()
    assert refresh_counts(db, client, now=NOW) == 5
    assert {(r["like_count"], r["counts_final"]) for r in rows(db).values()} == {(10, 1)}


# A baseline post's age runs from indexedAt (createdAt only when indexedAt is empty): without
# either there is no telling whether its counts are settled. The lexicon's postView requires
# indexedAt, so a post without one is refused by the client and recorded as a skip; a string
# that is empty or not a time passes the lexicon and must be left out here.
@pytest.mark.parametrize("indexed_at", [None, "", "yesterday"], ids=["no indexedAt", "empty", "not a time"])
def test_author_feed_posts_without_a_time_are_left_out_of_the_baseline(fake, make_client, db, indexed_at):
    did = "did:plc:alice"
    dated = [make_post(f"a{i}", did=did, created="2026-11-01T10:00:00Z", counts=(2 * i, 0, 0, 0)) for i in range(3)]
    undated = make_post("a-undated", did=did, counts=(99, 0, 0, 0))
    del undated["record"]["createdAt"]
    if indexed_at is None:
        del undated["indexedAt"]
    else:
        undated["indexedAt"] = indexed_at
    fake.feeds[(did, "")] = ([feed_item(p) for p in [undated, *dated]], None)
    assert update_baselines(db, make_client(), [did], now=NOW) == 1
    author = db["bsky_authors"].get(did)
    assert [item[0] for item in json.loads(author["posts_json"])] == [p["uri"] for p in dated]
    assert json.loads(author["post_age_hours_json"]) == {p["uri"]: 50.0 for p in dated}
    refused = [(kind, key) for _, kind, key, reason in skips(db) if reason.endswith("post.indexedAt: Field required")]
    assert refused == ([("post", undated["uri"])] if indexed_at is None else [])


def test_author_feed_posts_are_aged_from_indexed_at_so_one_without_created_at_counts(fake, make_client, db):
    did = "did:plc:alice"
    backdated = make_post("a-backdated", did=did, created="2013-11-01T10:00:00Z", counts=(5, 0, 0, 0))
    backdated["indexedAt"] = "2026-11-03T06:00:00Z"  # an import: 6 hours old, too young for a baseline
    no_created = make_post("a-no-created", did=did, created="2026-11-02T10:00:00Z", counts=(99, 0, 0, 0))
    del no_created["record"]["createdAt"]  # the AppView still says when it indexed the post
    fake.feeds[(did, "")] = ([feed_item(p) for p in [backdated, no_created]], None)
    assert update_baselines(db, make_client(), [did], now=NOW) == 1
    author = db["bsky_authors"].get(did)
    assert json.loads(author["posts_json"]) == [[no_created["uri"], 99, 0, 0, 0]]
    assert json.loads(author["post_age_hours_json"]) == {no_created["uri"]: 26.0}


def skips(db) -> list[tuple[str, str, str, str]]:
    return db.execute("select day, kind, key, reason from walter_skips order by kind, key").fetchall()


@pytest.mark.parametrize("field", ["author", "record", "cid"])
def test_a_malformed_post_in_a_search_page_is_skipped_recorded_and_its_page_kept(fake, make_client, db, field):
    good = [make_post(f"g{i}") for i in range(3)]
    broken = make_post("broken")
    del broken[field]
    uris = add(fake, good[0], broken, *good[1:])
    fake.search[(NYT, "")] = (uris, None)
    summary = ingest_search(db, make_client(), [NYT], DAY, tz="UTC", now=NOW)
    assert (summary.pages, summary.posts_seen, summary.posts_stored, summary.posts_invalid) == (1, 4, 3, 1)
    assert set(rows(db)) == {p["uri"] for p in good}
    [(day, kind, key, reason)] = skips(db)
    assert (day, kind, key) == (DAY, "post", broken["uri"])
    assert reason.endswith(f"sent an item that is not valid: posts.1.{field}: Field required")
    assert db.execute("select finished, pages from bsky_cursors").fetchall() == [(1, 1)]  # the page is done
    again = ingest_search(db, make_client(), [NYT], DAY, tz="UTC", now=NOW)
    assert again.queries_done_before == 1 and len(skips(db)) == 1


def test_a_post_without_a_time_is_recorded_as_skipped_too(fake, make_client, db):
    good, no_time = make_post("good"), make_post("no-time")
    del no_time["record"]["createdAt"]
    fake.search[(NYT, "")] = (add(fake, good, no_time), None)
    ingest_search(db, make_client(), [NYT], DAY, tz="UTC", now=NOW)
    assert skips(db) == [(DAY, "post", no_time["uri"], f"post {no_time['uri']}: createdAt not a datetime: None")]


def test_a_malformed_post_in_a_count_refresh_stays_due_and_is_not_marked_deleted(fake, make_client, db):
    posts = [make_post(f"o{i}", created="2026-11-01T10:00:00Z", counts=(1, 0, 0, 0)) for i in range(3)]
    fake.search[(NYT, "")] = (add(fake, *posts), None)
    client = make_client()
    ingest_search(db, client, [NYT], "2026-11-01", tz="UTC", now=NOW)
    fake.posts[posts[1]["uri"]] = {k: v for k, v in posts[1].items() if k != "author"}
    assert refresh_counts(db, client, now=NOW, day=DAY) == 2
    got = rows(db)
    assert [(got[p["uri"]]["counts_final"], got[p["uri"]]["deleted"]) for p in posts] == [(1, 0), (0, 0), (1, 0)]
    assert [s[:3] for s in skips(db)] == [(DAY, "post", posts[1]["uri"])]


TRUNCATED_FEED = answer(200, json.dumps({"feed": [feed_item(make_post("x", did="did:plc:bob"))]}).encode()[:-30])


def test_an_author_feed_that_stays_truncated_costs_that_authors_baseline_only(fake, make_client, db, sleeps):
    alice, bob, carol = "did:plc:alice", "did:plc:bob", "did:plc:carol"
    for did in (alice, bob, carol):
        fake.feeds[(did, "")] = ([feed_item(make_post(f"{did[8:]}1", did=did, created="2026-11-01T10:00:00Z"))], None)
    fake.faults["app.bsky.feed.getAuthorFeed"] = [passthrough, *[TRUNCATED_FEED] * 4]  # bob's, and its retries
    assert update_baselines(db, make_client(), [alice, bob, carol], now=NOW, day=DAY) == 2
    assert sleeps == [1.0, 2.0, 4.0]
    assert {r["did"] for r in db.query("select did from bsky_authors")} == {alice, carol}
    [(day, kind, key, reason)] = skips(db)
    assert (day, kind, key) == (DAY, "author", bob)
    assert reason.startswith("BlueskyResponseError: app.bsky.feed.getAuthorFeed at ")
    assert "sent an answer that is not valid: EOF while parsing" in reason and reason.endswith("(4 attempts)")

    fake.faults.clear()  # the next night bob's feed reads: his baseline comes, and the record goes
    assert update_baselines(db, make_client(), [alice, bob, carol], now=NOW, day=DAY) == 1
    assert skips(db) == []


def test_a_cut_author_feed_is_retried_and_gives_its_baseline(fake, make_client, db, sleeps):
    fake.feeds[(BOB, "")] = ([feed_item(make_post("b1", did=BOB, created="2026-11-01T10:00:00Z"))], None)
    fake.faults["app.bsky.feed.getAuthorFeed"] = [TRUNCATED_FEED]
    assert update_baselines(db, make_client(), [BOB], now=NOW, day=DAY) == 1
    assert sleeps == [1.0] and skips(db) == []


def two_authors_one_truncated(fake) -> tuple[str, str]:
    """A search page with alice's and bob's posts; bob's author feed answers truncated JSON every time."""
    fake.search[(NYT, "")] = (add(fake, make_post("a", created=CREATED), make_post("b", did=BOB, created=CREATED)),
                              None)
    fake.feeds[(ALICE, "")] = ([feed_item(make_post("a0", created="2020-01-01T00:00:00Z"))], None)
    return ALICE, BOB


def truncating_bob(fake):
    def fault(req) -> bool:
        if "actor=did%3Aplc%3Abob" in req.path or "actor=did:plc:bob" in req.path:
            return TRUNCATED_FEED(req)
        return False
    fake.faults["app.bsky.feed.getAuthorFeed"] = [fault] * 20


def test_walter_ingest_with_an_author_feed_that_stays_truncated_exits_0(bsky_server, db):
    alice, bob = two_authors_one_truncated(bsky_server)
    truncating_bob(bsky_server)
    from walter.cli import cli

    out = CliRunner().invoke(cli, [
        "ingest", "--date", PAST_DAY, "--source", "bluesky", "--timezone", "UTC", "--domains", NYT])
    assert out.exit_code == 0, out.output
    _, total = summary(out.stdout)
    assert total.endswith("2 counts refreshed, 1 author baselines fetched, 1 skipped")
    [line] = [ln for ln in out.stdout.splitlines() if ln.startswith("  no baseline for ")]
    assert line.startswith(f"  no baseline for {bob}: BlueskyResponseError: app.bsky.feed.getAuthorFeed at ")
    assert db.execute("select count(*) from bsky_posts").fetchone()[0] == 2
    assert [r["did"] for r in db.query("select did from bsky_authors")] == [alice]
    assert [s[:3] for s in skips(db)] == [(PAST_DAY, "author", bob)]


def test_walter_step_with_an_author_feed_that_stays_truncated_exits_0(bsky_server, db, tiny_model_path):
    from walter.cli import cli

    two_authors_one_truncated(bsky_server)
    truncating_bob(bsky_server)
    out = CliRunner().invoke(cli, ["step", "--date", PAST_DAY, "--source", "bluesky", "--model",
                                   str(tiny_model_path), "--articles-per-day", "2", "--domains", NYT,
                                   "--timezone", "UTC", *TINY])
    assert out.exit_code == 0, out.output
    assert db.execute("select count(*) from bsky_posts").fetchone()[0] == 2
    assert [s[:3] for s in skips(db)] == [(PAST_DAY, "author", BOB)]


# -- empty days and a model that is not there ------------------------------------------------------

TINY = ["--embedder", "hash", "--max-tokens", "8", "--lora-layers", "2"]


def test_a_varro_day_without_headlines_is_skipped_and_keeps_the_days_before(tiny_model_path, db):
    model = ["--source", "sample", "--model", str(tiny_model_path), "--prompts-per-day", "2", *TINY]
    first = varro("step", "--date", "2026-11-02", *model)
    assert first.exit_code == 0, first.output
    before = table(db, "select * from rollouts order by id")
    assert len(before) == 2 * 8

    out = varro("step", "--date", "2026-11-25", *model)
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == [
        "2026-11-25: ingested 0, scored 0, steps 0, checkpoint none, sampled 0",
        "  note: skipped: no data for 2026-11-25 (no headlines; no checkpoint written, 2026-11-24's forecasts "
        "stay unscored)",
    ]
    assert [p.name for p in list_checkpoints(run_dir("varro"))] == ["2026-11-02"]
    assert table(db, "select * from rollouts order by id") == before
    assert db.execute("select count(*) from prompts where day = '2026-11-25'").fetchone()[0] == 0


def test_a_walter_day_without_data_is_skipped(tiny_model_path, db):
    from walter.cli import cli

    out = CliRunner().invoke(cli, ["step", "--date", "2026-11-25", "--source", "sample", "--model",
                                   str(tiny_model_path), "--articles-per-day", "2", *TINY])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == [
        "2026-11-25: ingested 0, sampled 0, scored 0, steps 0, checkpoint none",
        "  note: skipped: no data for 2026-11-25 (nothing ingested and no article with a scorable history; "
        "no checkpoint written)",
    ]
    assert list_checkpoints(run_dir("walter")) == []
    assert db.execute("select count(*) from rollouts").fetchone()[0] == 0


def test_a_model_that_is_not_available_offline_says_how_to_get_it(varro_home, tmp_path, db):
    env = {**os.environ, "VARRO_HOME": str(varro_home), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-m", "varro.cli", "step", "--date", DAY, "--source", "sample", "--model",
                          "Qwen/Qwen3-0.6B", *TINY], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    [line] = out.stderr.splitlines()
    assert line.startswith("error: cannot load model 'Qwen/Qwen3-0.6B': it is not a local folder and not in "
                           "the Hugging Face cache")
    hf = Path(sys.executable).parent / "hf"
    assert f"`{'hf' if hf.is_file() else 'huggingface-cli'} download Qwen/Qwen3-0.6B`" in line
    assert list_checkpoints(run_dir("varro")) == []
    # refused before any work: nothing ingested, and no run.toml naming a model that cannot load
    assert db.execute("select count(*) from headlines where day = ?", [DAY]).fetchone()[0] == 0
    assert not (run_dir("varro") / "run.toml").exists()
