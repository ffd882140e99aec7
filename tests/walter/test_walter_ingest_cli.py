"""`walter ingest` through the command line: a per-domain summary whose numbers are the rows stored.

Against the shipped sample (`--source sample`) and against the local XRPC
server of tests/support/bluesky.py (`--source bluesky`). A domain that fails costs
that domain; only when nothing at all could be read does the command exit 1,
with one line on stderr and no traceback.
"""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from support.bluesky import (  # noqa: F401  (fake, db and server are fixtures)
    ALICE,
    BOB,
    CREATED,
    NYT,
    PAST_DAY,
    add,
    answer,
    db,
    fake,
    make_post,
    server,
    summary,
)
from walter.ingest import on_domain

BBC = "bbc.com"


def walter(*args: str):
    from walter.cli import cli

    return CliRunner().invoke(cli, list(args))


def stored_on(db, domain: str, where: str = "1", params=()) -> int:
    return sum(on_domain(r["link"], domain) for r in db.query(f"select link from bsky_posts where {where}", params))


# -- the sample -------------------------------------------------------------------------------


def test_sample_ingest_prints_per_domain_counts_that_equal_the_rows_stored(db):
    from walter.sample import sample_domains

    first = walter("ingest", "--date", "2026-11-02", "--source", "sample")
    assert first.exit_code == 0, first.output
    assert db.execute("select count(*) from bsky_posts where counts_final = 1").fetchone()[0] == 0
    out = walter("ingest", "--date", "2026-11-03", "--source", "sample")
    assert out.exit_code == 0, out.output
    domains, total = summary(out.stdout)
    assert sorted(domains) == sample_domains()
    seen_at = "2026-11-04T00:30:00.000000Z"  # the sample is read as at 00:30 the next day
    for name, d in domains.items():
        new = stored_on(db, name, "first_seen_utc = ?", [seen_at])
        assert (d["queries"], d["new"], d["stored"], d["note"]) == (1, new, new, ""), name
        assert d["seen"] == d["stored"] + d["no link"] + d["invalid"], name
    new = sum(d["new"] for d in domains.values())
    assert new == db.execute("select count(*) from bsky_posts where first_seen_utc = ?", [seen_at]).fetchone()[0] > 0
    refreshed = db.execute("select count(*) from bsky_posts where counts_final = 1").fetchone()[0]  # day 1's
    fetched = db.execute("select count(*) from bsky_authors where fetched_utc = ?", [seen_at]).fetchone()[0]
    assert refreshed > 0 and fetched > 0
    assert total == (f"sample: {new} new posts, 7 domains (7 searched, 0 done before, 0 failed); "
                     f"{refreshed} counts refreshed, {fetched} author baselines fetched")

    again = walter("ingest", "--date", "2026-11-03", "--source", "sample")
    domains, total = summary(again.stdout)
    assert {(d["queries"], d["pages"], d["new"], d["note"]) for d in domains.values()} == {
        (0, 0, 0, "done in an earlier run")}
    assert total.startswith("sample: 0 new posts, 7 domains (0 searched, 7 done before, 0 failed); 0 counts refreshed")


# -- a Bluesky server ---------------------------------------------------------------------------


def two_domains(fake) -> dict[str, str]:
    """nytimes.com: two pages (a post, one without a link; a post, one without a time); bbc.com: one post."""
    a = make_post("a", created=CREATED)
    no_link = make_post("d", kind="none", created=CREATED)
    b = make_post("b", did=BOB, kind="facet", link="https://nytimes.com/2026/b.html", created=CREATED)
    no_time = make_post("t", created=CREATED)
    del no_time["record"]["createdAt"]
    c = make_post("c", did=BOB, link="https://www.bbc.com/news/c", created=CREATED)
    ua, ud, ub, ut, uc = add(fake, a, no_link, b, no_time, c)
    fake.search[(NYT, "")] = ([ua, ud], "p2")
    fake.search[(NYT, "p2")] = ([ub, ut], None)
    fake.search[(BBC, "")] = ([uc], None)
    return {"a": ua, "b": ub, "c": uc}


def ingest(*extra: str):
    return walter("ingest", "--date", PAST_DAY, "--source", "bluesky", "--timezone", "UTC", "--domains",
                  f"{NYT},{BBC}", *extra)


def test_bluesky_ingest_prints_per_domain_counts_that_equal_the_rows_stored(server, db):
    uris = two_domains(server)
    out = ingest()
    assert out.exit_code == 0, out.output
    domains, total = summary(out.stdout)
    assert domains == {
        NYT: {"queries": 1, "pages": 2, "seen": 4, "new": 2, "stored": 2, "no link": 1, "invalid": 1, "note": ""},
        BBC: {"queries": 1, "pages": 1, "seen": 1, "new": 1, "stored": 1, "no link": 0, "invalid": 0, "note": ""},
    }
    assert (stored_on(db, NYT), stored_on(db, BBC)) == (2, 1)
    assert {r["uri"] for r in db.query("select uri from bsky_posts")} == set(uris.values())
    assert db.execute("select count(*) from bsky_posts where counts_final = 1").fetchone()[0] == 3
    assert {r["did"] for r in db.query("select did from bsky_authors")} == {ALICE, BOB}
    assert total == ("bluesky: 3 new posts, 2 domains (2 searched, 0 done before, 0 failed); 3 counts refreshed, "
                     "2 author baselines fetched")

    server.calls.clear()
    again = ingest()  # the day is over and finished: nothing is searched again, nothing is new
    domains, total = summary(again.stdout)
    assert {d["note"] for d in domains.values()} == {"done in an earlier run"}
    assert server.count("app.bsky.feed.searchPosts") == 0
    assert total.startswith("bluesky: 0 new posts, 2 domains (0 searched, 2 done before, 0 failed)")


MALFORMED = answer(200, b'{"posts": [')
STAYS_MALFORMED = [MALFORMED] * 4  # the first answer and its three retries


@pytest.mark.parametrize("case", ["every search answers malformed JSON", "the password is rejected"])
def test_nothing_read_at_all_exits_1_with_one_line_and_no_traceback(server, db, case):
    two_domains(server)
    if case == "the password is rejected":
        server.password = "not-the-app-password"
    else:
        server.faults["app.bsky.feed.searchPosts"] = STAYS_MALFORMED * 2
    out = ingest()
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit), out.output
    assert out.stdout == "" and "Traceback" not in out.output
    [line] = out.stderr.splitlines()
    if case == "the password is rejected":  # the account's error, raised once: the next domain is not tried
        assert line.startswith(f"error: createSession at {server.url}/pds rejected BSKY_HANDLE='walter.test'")
        assert server.count("com.atproto.server.createSession") == 1
        assert server.count("app.bsky.feed.searchPosts") == 0
    else:
        assert line.startswith(f"error: no domain could be searched for {PAST_DAY}: {NYT}: BlueskyResponseError: "
                               "app.bsky.feed.searchPosts at ")
        assert f"; {BBC}: BlueskyResponseError: " in line
        assert server.count("app.bsky.feed.searchPosts") == 8
    assert db.execute("select count(*) from bsky_posts").fetchone()[0] == 0


def test_one_domain_failing_exits_0_and_keeps_the_other(server, db):
    uris = two_domains(server)
    server.faults["app.bsky.feed.searchPosts"] = [lambda req: False, *STAYS_MALFORMED]  # nytimes.com's page 2
    out = ingest()
    assert out.exit_code == 0, out.output
    domains, total = summary(out.stdout)
    assert {k: v for k, v in domains[NYT].items() if k != "note"} == {
        "queries": 1, "pages": 1, "seen": 2, "new": 1, "stored": 1, "no link": 1, "invalid": 0}
    assert domains[NYT]["note"].startswith("failed: BlueskyResponseError: app.bsky.feed.searchPosts at ")
    assert (domains[BBC]["new"], domains[BBC]["note"]) == (1, "")
    assert {r["uri"] for r in db.query("select uri from bsky_posts")} == {uris["a"], uris["c"]}
    assert total == ("bluesky: 2 new posts, 2 domains (1 searched, 0 done before, 1 failed); 2 counts refreshed, "
                     "2 author baselines fetched")
    assert out.stderr == ""

    server.faults.clear()  # the next run resumes nytimes.com at its failed page
    again = ingest()
    domains, _ = summary(again.stdout)
    assert (domains[NYT]["pages"], domains[NYT]["new"], domains[BBC]["note"]) == (1, 1, "done in an earlier run")


def test_a_rate_limit_on_the_second_domain_stops_the_ingest_there_and_keeps_the_first(server, db):
    uris = two_domains(server)
    limited = answer(429, {"error": "RateLimitExceeded"},
                     {"ratelimit-remaining": "0", "ratelimit-reset": str(int(time.time()) + 3600)})
    server.faults["app.bsky.feed.searchPosts"] = [lambda req: False, lambda req: False, limited]
    out = ingest()
    assert out.exit_code == 0, out.output
    domains, total = summary(out.stdout)
    assert (domains[NYT]["new"], domains[NYT]["note"]) == (2, "")
    assert domains[BBC]["note"].startswith("failed: BlueskyRateLimitError: app.bsky.feed.searchPosts at ")
    assert total == ("bluesky: 2 new posts, 2 domains (1 searched, 0 done before, 1 failed); counts not refreshed, "
                     f"author baselines not fetched; counts and baselines not asked for after {BBC}'s error")
    assert {r["uri"] for r in db.query("select uri from bsky_posts")} == {uris["a"], uris["b"]}
    assert server.count("app.bsky.feed.getPosts") == server.count("app.bsky.feed.getAuthorFeed") == 0
