"""The feed ingest against a local HTTP server (tests/support/feeds.py): values stored, failures recorded,
nothing lost."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from support.feeds import (  # noqa: F401  (server is a fixture)
    HUGE,
    NO_GUID,
    QUICK,
    RSS,
    STALL_TIMEOUT,
    count,
    headlines,
    respond,
    server,
)
from varro.engine.store import open_db
from varro.forecast.headlines import headline_id
from varro.forecast.ingest import (
    DEFAULT_FEEDS_PATH,
    Feed,
    FeedResult,
    IngestError,
    all_failed,
    entry_to_item,
    format_summary,
    html_to_text,
    ingest,
    load_feeds,
    truncate,
)

DAY = "2026-11-02"


@pytest.fixture
def db(tmp_path):
    return open_db(tmp_path / "v.db")


def feed_row(db, url: str) -> dict:
    return db["feeds"].get(url)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/feed.xml"


class NoDnsTransport(httpx.HTTPTransport):
    """Real HTTP, except that *.invalid fails the way a failed DNS lookup does."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host.endswith(".invalid"):
            raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)
        return super().handle_request(request)


# ---------------------------------------------------------------- feeds file


def test_shipped_feeds_file_lists_named_https_feeds():
    feeds = load_feeds(DEFAULT_FEEDS_PATH)
    assert 10 <= len(feeds) <= 14
    assert all(f.url.startswith("https://") and f.name for f in feeds)
    assert len({f.url for f in feeds}) == len(feeds)
    assert len({f.name for f in feeds}) == len(feeds)
    assert load_feeds() == feeds  # $VARRO_HOME has no feeds.toml, so the shipped one is the default


def test_feeds_file_in_home_overrides_the_shipped_one(varro_home):
    (varro_home / "data").mkdir()
    (varro_home / "data" / "feeds.toml").write_text('[[feed]]\nurl = "https://own.example/rss"\n')
    assert load_feeds() == [Feed(name=None, url="https://own.example/rss")]


def test_missing_feeds_file_names_the_path(tmp_path):
    path = tmp_path / "nope" / "feeds.toml"
    with pytest.raises(IngestError, match="not found") as e:
        load_feeds(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "text, problem",
    [
        ('[[feed]\nurl = "https://a.example/rss"\n', "not valid TOML"),
        ('title = "no feeds"\n', "no \\[\\[feed\\]\\] tables"),
        ('[[feed]]\nname = "No url"\n', "needs an http\\(s\\) url, got None"),
        ('[[feed]]\nname = "Ftp"\nurl = "ftp://a.example/rss"\n', "'ftp://a.example/rss'"),
        ('[[feed]]\nname = "Typo"\nurls = "https://a.example/rss"\n', "unknown keys \\['urls'\\]"),
        ('[[feed]]\nname = ""\nurl = "https://a.example/rss"\n', "invalid name ''"),
        ('[[feed]]\nurl = "https://a.example/rss"\n[[feed]]\nurl = "https://a.example/rss"\n',
         "feed #2 .* listed twice"),
    ],
)
def test_malformed_feeds_file_names_the_path_and_the_problem(tmp_path, text, problem):
    path = tmp_path / "feeds.toml"
    path.write_text(text)
    with pytest.raises(IngestError, match=problem) as e:
        load_feeds(path)
    assert str(path) in str(e.value)


# ---------------------------------------------------------------- values stored


def test_rss_and_atom_entries_become_headlines_with_their_values(server, db):
    results = ingest(db, [Feed("Herald", server.url("/rss.xml")), Feed("Gazette", server.url("/atom.xml"))],
                     DAY, tz="UTC", timeout=QUICK)
    assert [(r.status, r.error, r.new_items, r.items, r.bozo) for r in results] == [
        (200, None, 3, 3, False), (200, None, 3, 3, False)]

    rss = headlines(db, "Herald")
    assert [(h["guid"], h["link"], h["title"], h["published_utc"], h["day"]) for h in rss] == [
        ("herald-001", "https://herald.example/port-strike", "Port strike ends after 12 days",
         "2026-11-02T09:15:00Z", "2026-11-02"),
        ("herald-002", "https://herald.example/rates", "Bank & Treasury hold rates", "2026-11-02T23:30:00Z",
         "2026-11-02"),
        ("herald-003", "https://herald.example/ferry", "Ferry timetable changes", None, DAY),  # no time: ingest day
    ]
    assert rss[0]["summary"] == "Dock workers voted to return. Cranes & ships restart."
    assert rss[0]["feed_url"] == server.url("/rss.xml")
    assert rss[0]["id"] == headline_id("Herald", "herald-001", None)

    atom = headlines(db, "Gazette")
    assert [(h["guid"], h["link"], h["title"], h["published_utc"]) for h in atom] == [
        ("42", server.url("/gazette/42.html"), "Bare id", None),  # an id that is not a URL stays as it is
        ("tag:gazette.example,2026:1", "https://gazette.example/rates-held", "Rates held again",
         "2026-11-02T08:00:00Z"),  # +02:00 converted to UTC
        ("tag:gazette.example,2026:2", "https://gazette.example/long", "Long read",
         "2026-11-01T12:00:00Z"),  # published wins over updated
    ]
    assert atom[1]["summary"] == "Short summary."
    assert len(atom[2]["summary"]) <= 500 and atom[2]["summary"].endswith("word…")


def test_relative_links_are_made_absolute_against_the_final_url(server, db):
    results = ingest(db, [Feed("Rel", server.url("/rel/feed.xml")), Feed("Moved", server.url("/old/feed"))],
                     DAY, tz="UTC", timeout=QUICK)
    assert [(r.status, r.error, r.new_items) for r in results] == [(200, None, 2), (200, None, 2)]
    assert [h["link"] for h in headlines(db, "Rel")] == [
        server.url("/news/rooted.html"), server.url("/rel/sibling.html")]
    # Redirected: resolved against where the feed was found, not the configured URL.
    moved = headlines(db, "Moved")
    assert [h["link"] for h in moved] == [server.url("/news/rooted.html"), server.url("/new/dir/sibling.html")]
    assert {h["feed_url"] for h in moved} == {server.url("/old/feed")}
    assert [p for p, _ in server.requests] == ["/rel/feed.xml", "/old/feed", "/new/dir/feed.xml"]


def test_entry_link_is_resolved_even_when_feedparser_left_it_relative():
    item = entry_to_item({"title": "T", "link": "../up.html"}, source="S", feed_url="http://h/a/b/feed",
                         base_url="http://h/a/b/feed", zone=None, ingest_day=DAY)
    assert item is not None and item["link"] == "http://h/a/up.html" and item["guid"] is None


def test_feed_without_guids_is_keyed_by_link_and_never_duplicated(server, db):
    feeds = [Feed("NoGuid", server.url("/noguid.xml"))]
    assert ingest(db, feeds, DAY, tz="UTC", timeout=QUICK)[0].new_items == 2
    rows = headlines(db, "NoGuid")
    assert [(h["guid"], h["link"]) for h in rows] == [
        (None, "https://noguid.example/a?utm_source=rss"), (None, "https://noguid.example/b")]
    assert rows[0]["id"] == headline_id("NoGuid", None, "https://noguid.example/a")

    again = ingest(db, feeds, DAY, tz="UTC", timeout=QUICK)[0]
    assert (again.new_items, again.items) == (0, 2)
    # The same story with another tracking parameter is still the same headline.
    server.routes["/noguid.xml"] = respond(NO_GUID.replace(b"utm_source=rss", b"utm_source=mail&amp;fbclid=1"))
    assert ingest(db, feeds, DAY, tz="UTC", timeout=QUICK)[0].new_items == 0
    assert count(db, "headlines") == 2


def test_feed_without_a_configured_name_uses_its_title(server, db):
    result = ingest(db, [Feed(None, server.url("/rss.xml"))], DAY, tz="UTC", timeout=QUICK)[0]
    assert result.name == "Harbour Herald"
    assert {h["source"] for h in headlines(db)} == {"Harbour Herald"}
    assert feed_row(db, server.url("/rss.xml"))["name"] == "Harbour Herald"


def test_malformed_feed_keeps_what_parsed_and_is_flagged(server, db):
    result = ingest(db, [Feed("Broken", server.url("/malformed.xml"))], DAY, tz="UTC", timeout=QUICK)[0]
    assert result.error is None and result.bozo and result.bozo_message
    assert {"b-1", "b-2"} <= {h["guid"] for h in headlines(db, "Broken")}
    assert "Parsed before the break" in {h["title"] for h in headlines(db, "Broken")}
    row = feed_row(db, server.url("/malformed.xml"))
    assert (row["last_status"], row["last_error"], row["bozo"]) == (200, None, 1)
    assert row["bozo_message"] == result.bozo_message


@pytest.mark.parametrize("tz, day", [("Europe/Berlin", "2026-11-03"), ("UTC", "2026-11-02"),
                                     ("America/New_York", "2026-11-02")])
def test_timezone_decides_the_day(server, db, tz, day):
    ingest(db, [Feed("Late", server.url("/late.xml"))], "2026-11-05", tz=tz, timeout=QUICK)
    [row] = headlines(db, "Late")
    assert (row["published_utc"], row["day"]) == ("2026-11-02T23:30:00Z", day)


@pytest.mark.parametrize("tz", [None, ""])  # "" is the config's "the machine's"
def test_no_timezone_means_the_machine_local_one(server, db, monkeypatch, tz):
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is POSIX only")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        ingest(db, [Feed("Late", server.url("/late.xml"))], "2026-11-05", tz=tz, timeout=QUICK)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert headlines(db, "Late")[0]["day"] == "2026-11-03"  # 08:30 in Tokyo


# ---------------------------------------------------------------- failures


def test_every_kind_of_failure_is_recorded_and_stops_nothing(server, db):
    client = httpx.Client(transport=NoDnsTransport(), follow_redirects=True)
    refused = closed_port_url()
    feeds = [
        Feed("Missing", server.url("/missing.xml")),
        Feed("Herald", server.url("/rss.xml")),
        Feed("Error", server.url("/error.xml")),
        Feed("Garbage", server.url("/garbage.bin")),
        Feed("Stall", server.url("/stall.xml")),
        Feed("Refused", refused),
        Feed("Nowhere", "http://nowhere.invalid/rss"),
        Feed("Declared", server.url("/huge-declared.xml")),
        Feed("Endless", server.url("/huge-endless.xml")),
        Feed("Gazette", server.url("/atom.xml")),  # after all the failures, still read
    ]
    started = time.monotonic()
    results = ingest(db, feeds, DAY, tz="UTC", client=client, timeout=STALL_TIMEOUT, max_bytes=64_000)
    assert time.monotonic() - started < 5
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == [f.name for f in feeds]
    assert (by_name["Herald"].new_items, by_name["Gazette"].new_items) == (3, 3)
    assert by_name["Herald"].ok and by_name["Gazette"].ok and not all_failed(results)

    expected = {
        "Missing": (404, f"HTTP 404 Not Found from {server.url('/missing.xml')}"),
        "Error": (500, f"HTTP 500 Internal Server Error from {server.url('/error.xml')}"),
        "Garbage": (200, f"{server.url('/garbage.bin')} is not a readable feed"),
        "Stall": (None, "ReadTimeout: timed out"),
        "Refused": (None, "ConnectError: "),  # the errno text differs between systems
        "Nowhere": (None, "ConnectError: [Errno -2] Name or service not known"),
        "Declared": (200, f"body of {server.url('/huge-declared.xml')} is {len(HUGE)} bytes, over the limit of 64000"),
        "Endless": (200, f"body of {server.url('/huge-endless.xml')} exceeds the limit of 64000 bytes"),
    }
    for name, (status, message) in expected.items():
        row = feed_row(db, by_name[name].url)
        assert (row["last_status"], row["new_items"]) == (status, 0), name
        assert row["last_error"].startswith(message), (name, row["last_error"])
        assert (by_name[name].status, by_name[name].error) == (status, row["last_error"])
    assert feed_row(db, server.url("/garbage.bin"))["bozo"] == 1
    assert feed_row(db, server.url("/rss.xml"))["last_error"] is None
    assert count(db, "headlines") == 6

    again = ingest(db, feeds, DAY, tz="UTC", client=client, timeout=STALL_TIMEOUT, max_bytes=64_000)
    assert [r.error is None for r in again] == [r.error is None for r in results]
    assert sum(r.new_items for r in again) == 0
    assert (count(db, "headlines"), count(db, "feeds")) == (6, len(feeds))
    client.close()


def test_conditional_get_and_a_later_failure_keep_rows_and_validators(server, db):
    feeds = [Feed("Herald", server.url("/etag.xml"))]
    first = ingest(db, feeds, DAY, tz="UTC", timeout=QUICK)[0]
    assert (first.status, first.new_items) == (200, 3)
    assert "If-None-Match" not in server.headers_of("/etag.xml")[0]
    row = feed_row(db, server.url("/etag.xml"))
    assert (row["etag"], row["last_modified"]) == ('"v1"', "Mon, 02 Nov 2026 08:00:00 GMT")

    second = ingest(db, feeds, DAY, tz="UTC", timeout=QUICK)[0]
    assert (second.status, second.error, second.new_items) == (304, None, 0)
    sent = server.headers_of("/etag.xml")[1]
    assert (sent["If-None-Match"], sent["If-Modified-Since"]) == ('"v1"', "Mon, 02 Nov 2026 08:00:00 GMT")
    assert not all_failed([second])  # a 304 counts as read
    row = feed_row(db, server.url("/etag.xml"))
    assert (row["last_status"], row["last_error"], row["etag"]) == (304, None, '"v1"')

    server.routes["/etag.xml"] = respond(b"down", status=500, content_type="text/plain")
    third = ingest(db, feeds, DAY, tz="UTC", timeout=QUICK)[0]
    assert third.status == 500 and third.error.startswith("HTTP 500")
    row = feed_row(db, server.url("/etag.xml"))
    assert (row["last_status"], row["etag"], row["last_modified"]) == (
        500, '"v1"', "Mon, 02 Nov 2026 08:00:00 GMT")
    assert [h["guid"] for h in headlines(db, "Herald")] == ["herald-001", "herald-002", "herald-003"]


def test_a_server_trickling_bytes_hits_the_deadline(server, db):
    started = time.monotonic()
    result = ingest(db, [Feed("Trickle", server.url("/trickle.xml"))], DAY, tz="UTC", timeout=QUICK,
                    deadline_s=0.3)[0]
    assert time.monotonic() - started < 2
    assert result.error == f"fetching {server.url('/trickle.xml')} took longer than 0.3 s"


def test_a_body_naming_a_local_file_is_not_opened(server, db, tmp_path):
    # Regression: feedparser.parse(bytes) tries open(bytes) first, so a body that
    # happened to be a path would have been read from the local disk instead.
    local = tmp_path / "local-feed.xml"
    local.write_bytes(RSS)
    server.routes["/path.txt"] = respond(str(local).encode(), content_type="text/plain")
    result = ingest(db, [Feed("Path", server.url("/path.txt"))], DAY, tz="UTC", timeout=QUICK)[0]
    assert result.error is not None and "is not a readable feed" in result.error
    assert count(db, "headlines") == 0


def test_all_failed_only_when_no_feed_was_read(server, db):
    failing = [Feed("Missing", server.url("/missing.xml")), Feed("Error", server.url("/error.xml")),
               Feed("Refused", closed_port_url())]
    results = ingest(db, failing, DAY, tz="UTC", timeout=QUICK)
    assert all_failed(results)
    results = ingest(db, failing + [Feed("Herald", server.url("/rss.xml"))], DAY, tz="UTC", timeout=QUICK)
    assert not all_failed(results)
    assert all_failed([])


def test_invalid_arguments_raise_before_fetching(server, db):
    feeds = [Feed("Herald", server.url("/rss.xml"))]
    with pytest.raises(IngestError, match="'Mars/Olympus'"):
        ingest(db, feeds, DAY, tz="Mars/Olympus")
    with pytest.raises(IngestError, match="'02/11/2026'"):
        ingest(db, feeds, "02/11/2026", tz="UTC")
    with pytest.raises(IngestError, match="max_bytes must be positive, got 0"):
        ingest(db, feeds, DAY, tz="UTC", max_bytes=0)
    assert server.requests == [] and count(db, "feeds") == 0


# ---------------------------------------------------------------- text and summary


def test_html_to_text_and_truncate():
    html = "<p>One &amp; <b>two</b></p><script>var x = 1;</script><p>three<br/>four</p>"
    assert html_to_text(html) == "One & two three four"
    assert html_to_text("  plain\n\ttext  ") == "plain text"
    assert truncate("short", 10) == "short"
    assert truncate("alpha beta gamma delta", 15) == "alpha beta…"
    assert truncate("x" * 30, 10) == "x" * 9 + "…"


def test_format_summary_has_a_line_per_feed_and_a_total():
    results = [
        FeedResult("https://a.example/rss", "Alpha", 200, None, 3, False, items=5),
        FeedResult("https://b.example/rss", "Beta Long Name", None, "ReadTimeout: timed out", 0, False),
        FeedResult("https://c.example/rss", "Gamma", 304, None, 0, False),
        FeedResult("https://d.example/rss", "Delta", 200, None, 1, True, "mismatched tag", 2),
    ]
    lines = format_summary(results).splitlines()
    assert len(lines) == 6
    assert lines[1].split() == ["Alpha", "200", "3"]
    assert lines[2].split()[:5] == ["Beta", "Long", "Name", "-", "0"]
    assert lines[2].endswith("ReadTimeout: timed out")
    assert lines[3].split() == ["Gamma", "304", "0"]
    assert "mismatched tag" in lines[4]
    assert lines[-1] == "total: 4 feeds, 3 read, 1 failed, 4 new headlines"
    assert len({line.index(" 200") for line in (lines[1], lines[4])}) == 1  # columns line up


def test_cli_ingest_prints_summary_and_fails_only_when_nothing_was_read(server, varro_home):
    from click.testing import CliRunner

    from varro.cli import cli

    runner = CliRunner()
    bad = runner.invoke(cli, ["ingest", "--date", "2026-11-02", "--feed", server.url("/missing.xml")])
    assert bad.exit_code == 1
    assert "no feed could be read" in bad.output
    good = runner.invoke(cli, ["ingest", "--date", "2026-11-02", "--feed", server.url("/missing.xml"),
                               "--feed", server.url("/rss.xml")])
    assert good.exit_code == 0, good.output
    assert "404" in good.output


def test_cli_ingest_reads_the_feeds_file_of_home_not_of_varro_home(server, varro_home, tmp_path):
    """Regression (issue 30): `--home H` read $VARRO_HOME's (else the repository's) feeds.toml, not H's."""
    from click.testing import CliRunner

    from varro.cli import cli

    def feeds_file(home, path: str) -> None:
        (home / "data").mkdir(parents=True, exist_ok=True)
        (home / "data" / "feeds.toml").write_text(f'[[feed]]\nname = "Own"\nurl = "{server.url(path)}"\n')

    own = tmp_path / "own-home"
    feeds_file(own, "/rss.xml")
    feeds_file(varro_home, "/atom.xml")
    out = CliRunner().invoke(cli, ["ingest", "--date", DAY, "--timezone", "UTC", "--home", str(own)])
    assert out.exit_code == 0, out.output
    assert [p for p, _ in server.requests] == ["/rss.xml"]
    assert [r["guid"] for r in open_db(own / "data" / "varro.db").query("select guid from headlines order by guid")] \
        == ["herald-001", "herald-002", "herald-003"]

    out = CliRunner().invoke(cli, ["ingest", "--date", DAY, "--timezone", "UTC"])  # no --home: $VARRO_HOME's
    assert out.exit_code == 0, out.output
    assert [p for p, _ in server.requests] == ["/rss.xml", "/atom.xml"]
