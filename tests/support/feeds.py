"""A local feed server for the tests of `varro ingest`: feed bodies good and bad, the routes that serve them
(stalling, endless, redirected, conditional), its `server` fixture, and two readers of what the ingest stored.
Used by tests/forecast/test_varro_ingest.py and tests/system/ (test_bad_input.py, test_feed_faults.py)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from support.http_answer import send

QUICK = 2.0  # client timeout for feeds that answer at once
STALL_TIMEOUT = 0.5  # client timeout for the stalling feed, which waits far longer

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Harbour Herald</title><link>https://herald.example/</link>
<item><title>Port strike ends after 12 days</title><link>https://herald.example/port-strike</link>
  <guid isPermaLink="false">herald-001</guid><pubDate>Mon, 02 Nov 2026 09:15:00 GMT</pubDate>
  <description>&lt;p&gt;Dock workers &lt;b&gt;voted&lt;/b&gt; to return.&lt;/p&gt;&lt;p&gt;Cranes &amp;amp; ships   restart.&lt;/p&gt;</description></item>
<item><title>Bank &amp; Treasury hold rates</title><link>https://herald.example/rates</link>
  <guid isPermaLink="false">herald-002</guid><pubDate>Mon, 02 Nov 2026 23:30:00 +0000</pubDate></item>
<item><title>  Ferry timetable
   changes  </title><link>https://herald.example/ferry</link><guid isPermaLink="false">herald-003</guid></item>
<item><description>An entry without a title is skipped.</description><guid>herald-004</guid></item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Atom Gazette</title><id>urn:gazette</id>
<updated>2026-11-02T10:00:00Z</updated>
<entry><title type="html">Rates &lt;em&gt;held&lt;/em&gt; again</title><id>tag:gazette.example,2026:1</id>
  <link rel="alternate" href="https://gazette.example/rates-held"/>
  <updated>2026-11-02T10:00:00+02:00</updated><summary>Short summary.</summary></entry>
<entry><title>Long read</title><id>tag:gazette.example,2026:2</id>
  <link rel="alternate" href="https://gazette.example/long"/>
  <published>2026-11-01T12:00:00Z</published><updated>2026-11-02T12:00:00Z</updated>
  <summary>""" + b"word " * 200 + b"""</summary></entry>
<entry><title>Bare id</title><id>42</id><link href="/gazette/42.html"/></entry>
</feed>"""

RELATIVE = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Relative</title>
<item><title>Rooted link</title><link>/news/rooted.html</link><guid>rel-1</guid></item>
<item><title>Sibling link</title><link>sibling.html</link><guid>rel-2</guid></item>
</channel></rss>"""

NO_GUID = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>No Guids</title>
<item><title>First without guid</title><link>https://noguid.example/a?utm_source=rss</link></item>
<item><title>Second without guid</title><link>https://noguid.example/b</link></item>
</channel></rss>"""

MALFORMED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Broken</title>
<item><title>Parsed before the break</title><link>https://broken.example/1</link><guid>b-1</guid></item>
<item><title>Also parsed</title><link>https://broken.example/2</link><guid>b-2</guid></item>
<item><title>Mismatched <b>tag</title><link>https://broken.example/3</link><guid>b-3</guid></item>
"""

GARBAGE = bytes(range(256)) * 16

HUGE = RSS.replace(b"</channel>", b"<!--" + b"x" * 200_000 + b"--></channel>")

LATE_ITEM = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Late</title>
<item><title>Late night vote</title><link>https://late.example/vote</link><guid>late-1</guid>
<pubDate>Mon, 02 Nov 2026 23:30:00 GMT</pubDate></item></channel></rss>"""

Route = Callable[[BaseHTTPRequestHandler], None]


def respond(body: bytes, status: int = 200, content_type: str = "application/rss+xml",
            headers: dict[str, str] | None = None) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        send(h, status, body, headers, content_type)

    return route


def redirect(to: str) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(301)
        h.send_header("Location", to)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


class FeedServer:
    """Routes by path; records every request's path and headers; `release` ends stalling handlers."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()
        self.base = ""

    def url(self, path: str) -> str:
        return self.base + path

    def headers_of(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.requests if p == path]

    def stall(self, h: BaseHTTPRequestHandler) -> None:
        self.release.wait(10)  # far past the client's timeout; set at teardown
        respond(RSS)(h)

    def endless(self, h: BaseHTTPRequestHandler) -> None:
        """A body with no Content-Length that never ends (up to 256 MB) unless the client hangs up."""
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.end_headers()
        h.wfile.write(b"<?xml version='1.0'?><rss version='2.0'><channel><title>Endless</title>")
        chunk = b"<!-- padding -->" * 4096
        for _ in range(4096):
            if self.release.is_set():
                return
            h.wfile.write(chunk)

    def trickle(self, h: BaseHTTPRequestHandler) -> None:
        """A byte every 50 ms: never idle long enough for a read timeout."""
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.end_headers()
        for byte in RSS[:200]:
            if self.release.wait(0.05):
                return
            h.wfile.write(bytes([byte]))
            h.wfile.flush()

    def conditional(self, h: BaseHTTPRequestHandler) -> None:
        if h.headers.get("If-None-Match") == '"v1"':
            h.send_response(304)
            h.send_header("ETag", '"v1"')
            h.end_headers()
            return
        respond(RSS, headers={"ETag": '"v1"', "Last-Modified": "Mon, 02 Nov 2026 08:00:00 GMT"})(h)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        feeds: FeedServer = self.server.feeds  # type: ignore[attr-defined]
        feeds.requests.append((self.path, dict(self.headers)))
        route = feeds.routes.get(self.path, respond(b"not here", status=404, content_type="text/plain"))
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout, size cap), as intended

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server():
    feeds = FeedServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.feeds = feeds  # type: ignore[attr-defined]
    feeds.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    feeds.routes.update({
        "/rss.xml": respond(RSS),
        "/atom.xml": respond(ATOM, content_type="application/atom+xml"),
        "/rel/feed.xml": respond(RELATIVE),
        "/noguid.xml": respond(NO_GUID),
        "/malformed.xml": respond(MALFORMED),
        "/garbage.bin": respond(GARBAGE, content_type="application/octet-stream"),
        "/error.xml": respond(b"boom", status=500, content_type="text/plain"),
        "/stall.xml": feeds.stall,
        "/old/feed": redirect("/new/dir/feed.xml"),
        "/new/dir/feed.xml": respond(RELATIVE.replace(b"<title>Relative", b"<title>Moved")),
        "/huge-declared.xml": respond(HUGE),
        "/huge-endless.xml": feeds.endless,
        "/trickle.xml": feeds.trickle,
        "/etag.xml": feeds.conditional,
        "/late.xml": respond(LATE_ITEM),
    })
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield feeds
    feeds.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def headlines(db, source: str | None = None) -> list[dict]:
    sql = "select * from headlines" + (" where source = ?" if source else "") + " order by guid, link"
    return list(db.query(sql, [source] if source else []))


def count(db, table: str) -> int:
    return db.execute(f"select count(*) from {table}").fetchone()[0]
