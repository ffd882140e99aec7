"""Bad feed input costs its own entry, never the feed or the night, and real feeds keep their text (issue 30).

Also tally's items files, the other file-fed ingest: a bad row costs that row.

Served by the local HTTP server of tests/support/feeds.py; each test names the fault it guards against.
"""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import pytest

from support.feeds import QUICK, count, headlines, respond, server  # noqa: F401  (server is a fixture)
from tally.ingest import Columns, read_items, store_items
from varro.engine.store import open_db
from varro.forecast.headlines import headline_id, store_headlines
from varro.forecast.ingest import (
    SUMMARY_CHARS,
    TITLE_CHARS,
    Feed,
    all_failed,
    clean_text,
    feed_key,
    format_summary,
    ingest,
)

DAY = "2026-11-02"


def rss(items: str, title: str = "Ugly", declaration: str = '<?xml version="1.0" encoding="utf-8"?>') -> bytes:
    return (f'{declaration}<rss version="2.0"><channel><title>{title}</title>{items}</channel></rss>').encode()


def item(title: str, guid: str, extra: str = "") -> str:
    return f"<item><title>{title}</title><guid>{guid}</guid>{extra}</item>"


GOOD = item("A good item", "good-1", "<link>https://ugly.example/good</link>")


@pytest.fixture
def db(tmp_path):
    return open_db(tmp_path / "v.db")


def read(server, db, body: bytes, name: str | None = "Ugly", tz: str = "UTC", **respond_args):
    server.routes["/ugly.xml"] = respond(body, **respond_args)
    return ingest(db, [Feed(name, server.url("/ugly.xml"))], DAY, tz=tz, timeout=QUICK)[0]


def titles(db) -> list[str]:
    return [h["title"] for h in headlines(db)]


# ---------------------------------------------------------------- one bad entry costs itself


def test_a_lone_surrogate_reference_costs_one_character_not_the_feeds_after_it(server, db):
    # Regression: feedparser raised UnicodeEncodeError on &#xD800; and ingest_feed let it out.
    server.routes["/surrogate.xml"] = respond(rss(item("Lone &#xD800; and &#55296; and &#x110000;", "s-1") + GOOD))
    results = ingest(db, [Feed("Surrogate", server.url("/surrogate.xml")), Feed("Herald", server.url("/rss.xml"))],
                     DAY, tz="UTC", timeout=QUICK)
    assert [(r.error, r.new_items) for r in results] == [(None, 2), (None, 3)]
    assert "Lone \ufffd and \ufffd and \ufffd" in {h["title"] for h in headlines(db, "Surrogate")}


def test_an_entry_whose_link_is_not_a_url_is_dropped_and_reported(server, db):
    # Regression: urljoin raised ValueError ("Invalid IPv6 URL") out of ingest_feed.
    result = read(server, db, rss(item("Broken link", "bad-1", "<link>http://[oops/</link>") + GOOD))
    assert (result.error, result.new_items, result.items) == (None, 1, 1)
    assert titles(db) == ["A good item"]
    assert result.dropped == ("link 'http://[oops/' is not a URL (Invalid IPv6 URL)",)
    assert "1 items dropped: link 'http://[oops/' is not a URL" in format_summary([result])


def test_entries_without_a_title_or_an_identity_are_counted_not_silently_lost(server, db):
    result = read(server, db, rss("<item><guid>no-title</guid></item><item><title>Nameless</title></item>" + GOOD))
    assert result.dropped == ("no title (no-title)", "no guid and no link ('Nameless')")
    assert result.new_items == 1


def test_a_year_9999_date_where_the_zone_has_no_such_day_is_filed_undated(server, db):
    # Regression: OverflowError converting 9999-12-31 23:00 UTC to +14:00 (Kiritimati).
    body = rss(item("End of time", "t-1", "<pubDate>Fri, 31 Dec 9999 23:00:00 GMT</pubDate>") + GOOD)
    result = read(server, db, body, tz="Pacific/Kiritimati")
    assert (result.error, result.new_items, result.undated) == (None, 2, 1)
    [row] = [h for h in headlines(db) if h["guid"] == "t-1"]
    assert (row["published_utc"], row["day"]) == (None, DAY)
    assert "1 items with an unreadable date filed under the ingest day" in format_summary([result])


def test_a_localised_date_is_undated_and_filed_under_the_day_first_seen(server, db):
    body = rss(item("Notícia", "pt-1", "<pubDate>Seg, 24 Set 2018 10:00:00 -0300</pubDate>")
               + item("No date at all", "pt-2"))
    result = read(server, db, body)
    assert [(h["guid"], h["published_utc"], h["day"]) for h in headlines(db)] == [
        ("pt-1", None, DAY), ("pt-2", None, DAY)]
    assert result.undated == 1  # only the entry that gave a date we could not read


# ---------------------------------------------------------------- stored text is bounded and clean


def test_a_one_megabyte_title_is_cut_at_a_word_and_counted(server, db):
    result = read(server, db, rss(item("word " * 200_000, "big-1", "<description>" + "long " * 2000
                                       + "</description>") + GOOD))
    [big] = [h for h in headlines(db) if h["guid"] == "big-1"]
    assert len(big["title"]) <= TITLE_CHARS and big["title"].endswith("word…")
    assert len(big["summary"]) <= SUMMARY_CHARS
    assert result.titles_cut == 1
    assert f"1 titles cut to {TITLE_CHARS} characters" in format_summary([result])


def test_ansi_escapes_and_control_characters_never_reach_a_terminal(server, db):
    body = rss(item("Raw \x1b[31mred\x1b[0m alert\x07", "c-1") + item("Ref &#x1b;[1mbold&#x1b;[0m!", "c-2")
               + item("Tab\tand\nnewline", "c-3"))
    result = read(server, db, body)
    assert result.error is None
    assert titles(db) == ["Raw red alert", "Ref bold!", "Tab and newline"]
    assert clean_text("C1 \x9b2Jcsi, nul\x00, \ud800") == "C1 csi, nul, \ufffd"


def test_html_escaped_twice_is_unescaped_and_its_tags_stripped(server, db):
    body = rss(item("&amp;lt;b&amp;gt;Bold&amp;lt;/b&amp;gt; claim", "h-1",
                    "<description>&amp;lt;p&amp;gt;Para &amp;amp;amp; more&amp;lt;/p&amp;gt;</description>")
               + item("Rates 3 &lt; 4 and 5 &gt; 2", "h-2"))
    read(server, db, body)
    rows = headlines(db)
    assert [h["title"] for h in rows] == ["Bold claim", "Rates 3 < 4 and 5 > 2"]  # a lone < is text, not a tag
    assert rows[0]["summary"] == "Para & more"


# ---------------------------------------------------------------- encodings


def test_one_latin1_byte_in_a_utf8_feed_costs_that_byte_not_the_document(server, db):
    # Regression: feedparser read the whole document as windows-1252: "crème" became "crÃ¨me".
    body = rss(item("Crème brûlée, café", "e-1") + item("Naïve d\xe9j\xe0 vu", "e-2")).replace(
        "d\xe9j\xe0".encode(), "d\xe9j\xe0".encode("latin-1"))
    result = read(server, db, body)
    assert titles(db) == ["Crème brûlée, café", "Naïve d\ufffdj\ufffd vu"]
    assert result.bozo and "2 bytes not valid utf-8 replaced" in result.bozo_message


def test_a_latin1_feed_declared_as_nothing_keeps_its_accents(server, db):
    body = ('<?xml version="1.0"?><rss version="2.0"><channel><title>Latin</title>'
            + item("Crème brûlée, café", "l-1") + "</channel></rss>").encode("latin-1")
    result = read(server, db, body)
    assert titles(db) == ["Crème brûlée, café"]
    assert "not utf-8 as declared; read as windows-1252" in result.bozo_message


def test_a_feed_whose_http_charset_is_latin1_is_read_as_such(server, db):
    body = ('<?xml version="1.0"?><rss version="2.0"><channel><title>Latin</title>'
            + item("Crème", "l-1") + "</channel></rss>").encode("latin-1")
    read(server, db, body, content_type="application/rss+xml; charset=iso-8859-1")
    assert titles(db) == ["Crème"]


def test_a_koi8r_feed_declaring_nothing_is_read_as_koi8r_not_windows_1252(server, db):
    # Regression: with no charset detector, feedparser fell back to windows-1252 ("íÏÓË×Á" for "Москва").
    russian = ["Москва: новости дня и погода на завтра", "Правительство обсудило новый бюджет на следующий год",
               "Цены на бензин снова выросли в регионах"]
    body = ('<?xml version="1.0"?><rss version="2.0"><channel><title>Новости</title>'
            + "".join(item(t, f"ru-{k}", "<description>Подробности в материале.</description>")
                      for k, t in enumerate(russian)) + "</channel></rss>").encode("koi8-r")
    result = read(server, db, body)
    assert sorted(titles(db)) == sorted(russian)
    assert "no encoding declared; read as koi8-r" in result.bozo_message


def test_an_atom_plain_text_title_escaped_twice_is_unescaped(server, db):
    # Regression: a type="text" title kept "&lt;b&gt;Bold&lt;/b&gt;" as its text.
    body = (b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>A</title>'
            b"<entry><title>&amp;lt;b&amp;gt;Bold&amp;lt;/b&amp;gt; claim</title><id>urn:a:1</id></entry>"
            b"<entry><title>AT&amp;T &amp;amp; 3 &lt; 4</title><id>urn:a:2</id></entry></feed>")
    read(server, db, body, content_type="application/atom+xml")
    assert titles(db) == ["Bold claim", "AT&T &amp; 3 < 4"]  # plain text with no escaped tag stays literal


# ---------------------------------------------------------------- feed identity


def test_two_unnamed_feeds_with_the_same_title_keep_their_own_items(server, db):
    # Regression: the id was keyed by the feed's title, so the second feed's items were taken as seen.
    same = rss(item("Story one", "1") + item("Story two", "2"), title="News")
    server.routes["/a.xml"] = respond(same)
    server.routes["/b.xml"] = respond(same.replace(b"Story", b"Other story"))
    results = ingest(db, [Feed(None, server.url("/a.xml")), Feed(None, server.url("/b.xml"))], DAY, tz="UTC",
                     timeout=QUICK)
    assert [(r.name, r.new_items) for r in results] == [("News", 2), ("News", 2)]
    rows = headlines(db, "News")
    assert sorted((h["feed_url"][-5:], h["title"]) for h in rows) == [
        ("a.xml", "Story one"), ("a.xml", "Story two"), ("b.xml", "Other story one"), ("b.xml", "Other story two")]
    assert {h["id"] for h in rows} >= {headline_id(feed_key(Feed(None, server.url("/a.xml"))), "1", None)}


def test_a_named_feed_keeps_its_ids_and_an_unnamed_one_does_not_store_its_old_rows_again(server, db):
    body = rss(item("Kept", "k-1"), title="Old Title")
    url = server.url("/ugly.xml")
    # A row an earlier version stored for the unnamed feed, keyed by its title.
    store_headlines(db, [{"source": "Old Title", "feed_url": url, "guid": "k-1", "link": None, "title": "Kept",
                          "day": "2026-11-01"}])
    assert read(server, db, body, name=None).new_items == 0
    assert count(db, "headlines") == 1
    assert feed_key(Feed("Herald", url)) == "Herald"  # named feeds: ids as before


# ---------------------------------------------------------------- a night of ugly feeds


UGLY = {
    "good-rss": (rss(item("Plain good news", "g-1") + item("More good news", "g-2")), 2, 0),
    "good-atom": (b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
                  b'<title>Atom</title><id>urn:a</id><entry><title>Atom entry</title><id>urn:a:1</id>'
                  b'<updated>2026-11-02T10:00:00Z</updated></entry></feed>', 1, 0),
    "good-third": (rss(item("Third good", "t-1", "<link>https://ugly.example/t</link>")), 1, 0),
    "surrogate": (rss(item("Lone &#xD800; char", "s-1")), 1, 0),
    "bad-link": (rss(item("Bad link", "b-1", "<link>http://[oops/</link>") + item("Fine", "b-2")), 1, 1),
    "bad-port-link": (rss(item("Relative ok", "p-1", "<link>/a</link>")
                          + item("Bad v6", "p-2", "<link>https://[::1/x</link>")), 1, 1),
    "year-9999": (rss(item("Far", "y-1", "<pubDate>Fri, 31 Dec 9999 23:00:00 GMT</pubDate>")), 1, 0),
    "year-zero": (rss(item("Before", "z-1", "<pubDate>Sat, 01 Jan 0000 00:00:00 GMT</pubDate>")), 1, 0),
    "huge-title": (rss(item("x " * 300_000, "h-1")), 1, 0),
    "ansi": (rss(item("\x1b[2J\x1b[Hcleared", "a-1")), 1, 0),
    "double-escaped": (rss(item("&amp;lt;i&amp;gt;it&amp;lt;/i&amp;gt;", "d-1")), 1, 0),
    "localised-date": (rss(item("Data", "l-1", "<pubDate>Seg, 24 Set 2018</pubDate>")), 1, 0),
    "latin1-byte": (rss(item("caf\xe9", "e-1")).replace("caf\xe9".encode(), b"caf\xe9") + b"<!-- \xc3\xa9\xc3\xa8 -->",
                    1, 0),
    "no-title": (rss("<item><guid>n-1</guid></item>" + item("Titled", "n-2")), 1, 1),
    "no-identity": (rss("<item><title>Nothing to key</title></item>"), 0, 1),
    "same-title-a": (rss(item("Shared guid", "same"), title="Twin"), 1, 0),
    "same-title-b": (rss(item("Shared guid", "same"), title="Twin"), 1, 0),
    "truncated": (rss(item("Before the cut", "c-1"))[:-20], 1, 0),
    "control-guid": (rss(item("Guid with a bell", "g\x07-1")), 1, 0),
    "empty-channel": (rss(""), 0, 0),
}
UNREADABLE = {  # not a feed at all: the feed fails, with its reason, and the others go on
    "html-page": b"<!doctype html><html><body><p>Not a feed</p></body></html>",
    "empty": b"",
}


def test_a_directory_of_ugly_feeds_stores_every_readable_item_and_reports_the_rest(server, db, tmp_path):
    folder = tmp_path / "ugly"
    folder.mkdir()
    for name, body in [(n, b) for n, (b, _, _) in UGLY.items()] + list(UNREADABLE.items()):
        (folder / f"{name}.xml").write_bytes(body)
    feeds = []
    for path in sorted(folder.iterdir()):
        server.routes[f"/{path.name}"] = respond(path.read_bytes())
        feeds.append(Feed(None if path.stem.startswith("same-title") else path.stem, server.url(f"/{path.name}")))

    results = ingest(db, feeds, DAY, tz="Pacific/Kiritimati", timeout=QUICK)

    by_name = {r.url.rsplit("/", 1)[1].removesuffix(".xml"): r for r in results}
    for name, (_, stored, dropped) in UGLY.items():
        r = by_name[name]
        assert (r.error, r.new_items, len(r.dropped)) == (None, stored, dropped), name
    for name in UNREADABLE:
        assert by_name[name].error and not by_name[name].ok, name
    assert count(db, "headlines") == sum(stored for _, stored, _ in UGLY.values())
    assert not all_failed(results)

    lines = format_summary(results).splitlines()
    assert len(lines) == len(feeds) + 2
    for r, line in zip(results, lines[1:]):  # one line per feed, in order
        assert line.startswith(r.name + " "), (r.name, line)
        for reason in r.dropped:
            assert reason in line, (r.name, line)
        if r.error:
            assert r.error in line, (r.name, line)
    assert lines[-1] == (f"total: {len(feeds)} feeds, {len(feeds) - 2} read, 2 failed, "
                         f"{count(db, 'headlines')} new headlines")
    stored = " ".join(titles(db))
    assert "\x1b" not in stored and "<i>" not in stored and "\ufffd char" in stored and "café" not in stored


# ---------------------------------------------------------------- tally items files: a bad row costs itself


TALLY_COLUMNS = Columns(group="group", author="author", text="text", time="created", counts=(("saves", 1.0),))


def tally_line(text: str = "fine", created: str = "2026-11-02T09:00:00Z", author: str = "ann") -> bytes:
    row = {"group": "g", "author": author, "text": text, "created": created, "saves": 1}
    return json.dumps(row, ensure_ascii=False).encode()


def tally_file(tmp_path, lines: list[bytes], suffix: str = ".jsonl"):
    path = tmp_path / f"items{suffix}"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def stored_tally(db, path) -> tuple[list[str], dict[int, str]]:
    read = read_items(path, TALLY_COLUMNS, ZoneInfo("Pacific/Kiritimati"))
    store_items(db, read, str(path), "2026-11-30")
    texts = [r["text"] for r in db.query("select text from tally_items order by line")]
    rejects = {r["line"]: r["reason"] for r in db.query("select line, reason from tally_rejects order by line")}
    return texts, rejects


def test_a_lone_surrogate_in_one_tally_row_costs_that_row_not_the_file(db, tmp_path):
    # Regression: json.loads gives "\ud800" as a lone surrogate; SQLite could not encode it and every row rolled back.
    surrogate = tally_line("bad @@ text", author="bob").replace(b"@@", b"\\ud800")
    path = tally_file(tmp_path, [tally_line("before"), surrogate, tally_line("after", author="cy")])
    texts, rejects = stored_tally(db, path)
    assert texts == ["before", "after"]
    assert rejects == {2: "'text' holds a lone surrogate escape (like \\ud800), not text"}


def test_one_non_utf8_byte_costs_its_row_not_the_file(db, tmp_path):
    # Regression: the whole file was refused as "not UTF-8 text".
    latin1 = tally_line("caf\xe9", author="bob").replace("caf\xe9".encode(), b"caf\xe9")
    path = tally_file(tmp_path, [tally_line("café"), latin1, tally_line("after", author="cy")])
    texts, rejects = stored_tally(db, path)
    assert texts == ["café", "after"]
    at = latin1.index(b"\xe9")
    assert rejects == {2: f"not UTF-8 text (byte 0xe9 at character {at})"}
    raw = db.execute("select raw from tally_rejects").fetchone()[0]
    assert "caf\ufffd" in raw  # the row is kept readable


def test_one_non_utf8_byte_in_a_csv_row_costs_that_row(db, tmp_path):
    path = tally_file(tmp_path, [b"group,author,created,text,saves", b"g,ann,2026-11-02,fine,1",
                                 b"g,bob,2026-11-02,caf\xe9,1", b"g,cy,2026-11-02,after,2"], suffix=".csv")
    texts, rejects = stored_tally(db, path)
    assert texts == ["fine", "after"]
    assert list(rejects) == [3] and rejects[3].startswith("not UTF-8 text (byte 0xe9")


def test_a_year_9999_time_past_the_last_utc_day_costs_its_row(db, tmp_path):
    # Regression: OverflowError converting 9999-12-31T23:00-14:00 (year 10000 in UTC) ended the ingest.
    path = tally_file(tmp_path, [tally_line("ok"), tally_line("far", created="9999-12-31T23:00:00-14:00", author="b"),
                                 tally_line("local", created="9999-12-31T23:00:00Z", author="c")])
    texts, rejects = stored_tally(db, path)
    assert texts == ["ok"]
    assert set(rejects) == {2, 3} and all("out of range" in why for why in rejects.values())


# ---------------------------------------------------------------- a corpus of ugly feeds through the CLI


def test_one_ingest_over_a_corpus_of_ugly_feeds_stores_every_readable_item_and_reports_the_rest(server, tmp_path):
    """Issue 30's "done when": over 100 ugly files served locally, one `varro ingest` over them all."""
    from click.testing import CliRunner

    from fixtures.ugly_feeds import write_corpus
    from varro.cli import cli

    files = write_corpus(tmp_path / "corpus")
    assert len(files) >= 100
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    url = {}
    with open(home / "data" / "feeds.toml", "w") as toml:
        for case, path in files:
            server.routes[f"/{path.name}"] = respond(path.read_bytes(), content_type=case.content_type,
                                                     headers=case.headers)
            url[case.name] = server.url(f"/{path.name}")
            toml.write(f'[[feed]]\nname = "{case.name}"\nurl = "{url[case.name]}"\n')
    readable = [c for c, _ in files if c.items is not None]
    unreadable = [c for c, _ in files if c.items is None]
    args = ["ingest", "--home", str(home), "--date", DAY, "--timezone", "Pacific/Kiritimati"]

    out = CliRunner().invoke(cli, args)

    assert out.exit_code == 0, out.output  # some feeds were read
    assert "Traceback" not in out.output
    lines = out.stdout.splitlines()
    assert len(lines) == 1 + len(files) + 1  # header, one line per feed, total
    db = open_db(home / "data" / "varro.db")
    wrong = []
    for (case, _), line in zip(files, lines[1:]):
        assert line.split()[0] == case.name, line
        rows = db.query("select title from headlines where feed_url = ?", [url[case.name]])
        stored = sorted(r["title"] for r in rows)
        error = db["feeds"].get(url[case.name])["last_error"]
        if case.items is None:
            if not (error and error in line and not stored):
                wrong.append((case.name, "not reported as unreadable", line))
        elif error or len(stored) != case.items or line.split()[2] != str(case.items):
            wrong.append((case.name, f"{len(stored)} stored, {case.items} expected", line[:300]))
        elif case.titles is not None and tuple(stored) != case.titles:
            wrong.append((case.name, stored, case.titles))
    assert wrong == [], "\n".join(map(repr, wrong))
    assert [sum(ln.split()[0] == c.name for ln in lines) for c in unreadable] == [1] * len(unreadable)
    total = sum(c.items for c in readable)
    assert lines[-1] == (f"total: {len(files)} feeds, {len(readable)} read, {len(unreadable)} failed, "
                         f"{total} new headlines")
    undated = list(db.query("select day, published_utc from headlines where source like '%year-9999'"))
    assert undated and all((r["day"], r["published_utc"]) == (DAY, None) for r in undated)

    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and again.stdout.splitlines()[-1].endswith(", 0 new headlines"), again.output
    assert count(db, "headlines") == total

    # nothing readable at all is the one failure of the night
    only_bad = CliRunner().invoke(cli, args + [f for c in unreadable[:3] for f in ("--feed", url[c.name])])
    assert only_bad.exit_code == 1 and "no feed could be read" in only_bad.output
    assert "Traceback" not in only_bad.output
