"""News ingest: fetch RSS/Atom feeds over HTTP and store their entries as headlines.

One feed's failure is recorded in its `feeds` row and never stops the others, one bad entry costs that entry,
and re-running a day adds nothing. Timeouts, caps and cleaning: docs/varro.md ("The modules, in detail").
"""

from __future__ import annotations

import codecs
import io
import re
import time
import tomllib
from dataclasses import dataclass
from datetime import date, datetime, timezone, tzinfo
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urljoin, urlsplit

import feedparser
import httpx
import sqlite_utils

from varro.engine.core.paths import REPO_ROOT, home_dir
from varro.engine.prompts.sources import TimezoneError, normalise_link, resolve_timezone
from varro.engine.store import utc_now
from varro.forecast.headlines import headline_id, store_headlines
from varro.engine.core.errors import UserError

DEFAULT_FEEDS_PATH = REPO_ROOT / "data" / "feeds.toml"
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=10.0)  # seconds per connect / read / write
DEFAULT_MAX_BYTES = 5 * 1024 * 1024  # decoded body size at which a fetch is abandoned
DEFAULT_DEADLINE_S = 120.0  # a whole fetch, so a server trickling bytes cannot stall the night
SUMMARY_CHARS = 500  # a stored summary is cut to this many characters
TITLE_CHARS = 300  # a stored title is cut to this many: a 1 MB title would become a 400,000-token prompt
MAX_LISTED_DROPS = 3  # the reasons of dropped entries a summary line names; the rest are counted
USER_AGENT = "varro-ingest/0.1 (nightly news headline reader)"
FEED_KEYS = {"name", "url"}


class IngestError(ValueError, UserError):
    """The feeds file or an argument of the ingest is invalid."""


class EntryError(ValueError):
    """One entry of a feed cannot be stored as a headline; it is dropped and its reason reported."""


class FetchError(IngestError):
    """One feed could not be read; `status` is the HTTP status when a response came back."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Feed:
    name: str | None  # the headline source; None means the feed's own title
    url: str


@dataclass(frozen=True)
class FeedResult:
    url: str
    name: str
    status: int | None  # HTTP status; None when no response came back
    error: str | None  # None when the feed was read (200 or 304)
    new_items: int  # headlines stored for the first time
    bozo: bool  # feedparser flagged the body as malformed
    bozo_message: str | None = None
    items: int = 0  # headlines found in the body, new or not
    repeated: int = 0  # items whose guid (else link) an earlier item of the same body already had
    dropped: tuple[str, ...] = ()  # one reason per entry that could not be stored
    undated: int = 0  # items whose date could not be read, filed under the ingest day
    titles_cut: int = 0  # items whose title was cut to TITLE_CHARS

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Fetched:
    status: int  # 2xx or 304
    url: str  # the final URL, after redirects
    headers: httpx.Headers
    body: bytes


# ---------------------------------------------------------------- feeds file


def default_feeds_path(home: str | Path | None = None) -> Path:
    """`data/feeds.toml` of the home folder (`home`, else $VARRO_HOME) when that file exists,
    else the list shipped in the repository."""
    own = home_dir(home) / "data" / "feeds.toml"
    return own if own.is_file() else DEFAULT_FEEDS_PATH


def load_feeds(path: str | Path | None = None, home: str | Path | None = None) -> list[Feed]:
    """The feeds listed as `[[feed]]` tables (`url`, optional `name`) in the TOML file at `path`
    (default: `default_feeds_path(home)`).

    Raises IngestError, naming the file, when it is missing, unreadable, not
    TOML, lists no feed, or has a feed without a valid http(s) url, an unknown
    key or a url listed twice.
    """
    p = Path(path) if path is not None else default_feeds_path(home)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IngestError(f"feeds file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise IngestError(f"cannot read feeds file {p}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise IngestError(f"feeds file {p} is not valid TOML: {e}") from None
    tables = data.get("feed")
    if not isinstance(tables, list) or not tables:
        raise IngestError(f"feeds file {p} has no [[feed]] tables")
    feeds: list[Feed] = []
    seen: set[str] = set()
    for number, table in enumerate(tables, start=1):
        feed = _feed_from_table(table, f"feed #{number} in {p}")
        if feed.url in seen:
            raise IngestError(f"feed #{number} in {p}: url {feed.url!r} is listed twice")
        seen.add(feed.url)
        feeds.append(feed)
    return feeds


def _feed_from_table(table: Any, where: str) -> Feed:
    if not isinstance(table, dict):
        raise IngestError(f"{where} is not a table: {table!r}")
    unknown = set(table) - FEED_KEYS
    if unknown:
        raise IngestError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(FEED_KEYS)}")
    url = table.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise IngestError(f"{where} needs an http(s) url, got {url!r}")
    name = table.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise IngestError(f"{where} has an invalid name {name!r}")
    return Feed(name=name.strip() if name else None, url=url.strip())


# ---------------------------------------------------------------- fetching


def make_client(timeout: float | httpx.Timeout = DEFAULT_TIMEOUT) -> httpx.Client:
    """An httpx client that follows redirects and gives up after `timeout` seconds per connect/read."""
    return httpx.Client(timeout=timeout, follow_redirects=True, headers={"User-Agent": USER_AGENT})


def fetch_feed(
    client: httpx.Client,
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> Fetched:
    """GET `url` conditionally and return its status, final URL, headers and body (empty on 304).

    The body is streamed and abandoned past `max_bytes` or `deadline_s`. Raises
    FetchError for a status other than 2xx/304, an oversized or overlong body,
    and lets httpx.HTTPError / httpx.InvalidURL through for network failures.
    """
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    started = time.monotonic()
    with client.stream("GET", url, headers=headers, timeout=timeout) as response:
        status = response.status_code
        final_url = str(response.url)
        if status == 304:
            return Fetched(status=status, url=final_url, headers=response.headers, body=b"")
        if not 200 <= status < 300:
            raise FetchError(f"HTTP {status} {response.reason_phrase} from {final_url}", status=status)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(
                f"body of {final_url} is {declared} bytes, over the limit of {max_bytes}", status=status
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():  # decoded, so a gzip bomb is capped too
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"body of {final_url} exceeds the limit of {max_bytes} bytes", status=status)
            if time.monotonic() - started > deadline_s:
                raise FetchError(f"fetching {final_url} took longer than {deadline_s} s", status=status)
            chunks.append(chunk)
    return Fetched(status=status, url=final_url, headers=response.headers, body=b"".join(chunks))


_CHARREF = re.compile(rb"&#([xX][0-9a-fA-F]+|[0-9]+);")
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*\bencoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
REPLACEMENT_REF = b"&#xFFFD;"


def _no_surrogate_refs(body: bytes) -> bytes:
    """`body` with character references to surrogates or past U+10FFFF replaced by U+FFFD's.

    feedparser's loose parser raises UnicodeEncodeError on `&#xD800;`, losing the whole feed.
    """
    def fix(match: re.Match[bytes]) -> bytes:
        ref = match.group(1)
        code = int(ref[1:], 16) if ref[:1] in b"xX" else int(ref)
        return REPLACEMENT_REF if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF else match.group(0)

    return _CHARREF.sub(fix, body)


def declared_charset(fetched: Fetched) -> str | None:
    """The charset of the Content-Type header, else of the XML declaration, else None."""
    charset = fetched.headers.get("content-type", "").partition("charset=")[2].split(";")[0].strip(" \"'")
    match = _XML_ENCODING.match(fetched.body[:200])
    return charset or (match.group(1).decode("ascii") if match else None)


def declared_encoding(fetched: Fetched) -> str:
    """The declared charset (see `declared_charset`), else UTF-8 (XML's default)."""
    return declared_charset(fetched) or "utf-8"


def detected_encoding(body: bytes) -> str | None:
    """The codec charset-normalizer finds most likely for `body` (e.g. "koi8-r"), or None when it finds none.

    A short body says little: a few words of KOI8-R can pass for Shift-JIS, so this is
    asked only about a feed that declares nothing and is not UTF-8.
    """
    from charset_normalizer import from_bytes  # imported here: only undeclared, non-UTF-8 feeds need it

    best = from_bytes(body).best()
    return codecs.lookup(best.encoding).name if best is not None else None


def redecoded(body: bytes, declared: str) -> str | None:
    """`body` read as its `declared` encoding with each undecodable byte replaced, or None to keep
    feedparser's own fallback reading.

    For UTF-8, only when its well-formed multi-byte characters outnumber the bad bytes: one
    Latin-1 byte in a UTF-8 feed then costs one character, where feedparser's fallback would
    read the whole document as windows-1252 ("crème" as "crÃ¨me"); a feed that is Latin-1
    throughout keeps feedparser's windows-1252 reading instead of losing every accent.
    """
    try:
        codec = codecs.lookup(declared).name
    except LookupError:
        return None  # an encoding Python does not know: feedparser's guess is all there is
    text = body.decode(codec, errors="replace")
    if codec != "utf-8":
        return text
    bad = text.count("\ufffd")
    good = sum(1 for ch in text if ord(ch) > 0x7F) - bad
    return text if good > bad else None


def parse_body(fetched: Fetched) -> tuple[feedparser.FeedParserDict, str | None]:
    """feedparser's reading of a fetched body, and a note when its encoding had to be repaired.

    Never lets feedparser fetch or open anything itself. When feedparser overrode the
    declared encoding (a stray byte the encoding does not allow), the body is read again
    as declared, bad bytes replaced (see `redecoded`); a body that declares nothing and is
    not UTF-8 is read as the detected encoding (a KOI8-R feed), when that is not feedparser's.
    """
    # A stream, not bytes: feedparser tries to open() a bytes argument as a local file name.
    # Only the decoding headers, not Content-Location: feedparser would resolve entry ids
    # against it, making a guid depend on the URL the feed was fetched from.
    headers = {k: fetched.headers[k] for k in ("content-type", "content-language") if k in fetched.headers}
    body = _no_surrogate_refs(fetched.body)
    parsed = feedparser.parse(io.BytesIO(body), response_headers=headers)
    if not isinstance(parsed.get("bozo_exception"), feedparser.CharacterEncodingOverride):
        return parsed, None
    declared = declared_encoding(fetched)
    text = redecoded(body, declared)
    note = f"{text.count(chr(0xFFFD))} bytes not valid {declared} replaced" if text is not None else None
    if text is None and declared_charset(fetched) is None:  # nothing declared, and not UTF-8
        detected = detected_encoding(body)
        if detected and detected != codecs.lookup(parsed.get("encoding") or "utf-8").name:
            text, note = body.decode(detected, errors="replace"), f"no encoding declared; read as {detected}"
    if text is None:
        return parsed, f"not {declared} as declared; read as {parsed.get('encoding')}"
    media_type = headers.get("content-type", "application/xml").split(";")[0]
    utf8 = {**headers, "content-type": f"{media_type}; charset=utf-8"}  # the HTTP charset wins over the XML one
    return feedparser.parse(io.BytesIO(text.encode("utf-8")), response_headers=utf8), note


# ---------------------------------------------------------------- entries to headlines


class _TextExtractor(HTMLParser):
    BLOCK_TAGS = frozenset(
        "address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 "
        "header hr img li ol p pre section table td th tr ul".split()
    )
    SKIP_TAGS = frozenset({"script", "style"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP_TAGS:
            self.skipping += 1
        elif tag in self.BLOCK_TAGS:
            self.parts.append(" ")  # so "<p>a</p><p>b</p>" reads "a b", not "ab"

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The text of an HTML fragment: tags, scripts and styles dropped, entities decoded, whitespace collapsed."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return " ".join("".join(parser.parts).split())


def truncate(text: str, limit: int = SUMMARY_CHARS) -> str:
    """`text` cut to at most `limit` characters, at a word boundary when one is near, ending in an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


# CSI sequences (colours, cursor moves: ESC [ or the C1 CSI), then the two-character escapes
_ANSI_ESCAPE = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0 and C1 controls but tab and newlines
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>")
_ESCAPED_TAG = re.compile(r"&lt;/?[A-Za-z][A-Za-z0-9]*(\s[^<>&]*)?/?&gt;")


def clean_text(text: str) -> str:
    """`text` safe to store and print: ANSI escapes and control characters removed, lone surrogates
    (which SQLite cannot encode) replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", _CONTROL.sub("", _ANSI_ESCAPE.sub("", text)))


def _detail_text(value: str, detail: dict[str, Any] | None) -> str:
    """Plain, clean text of a feedparser text construct: HTML stripped unless it is declared plain text.

    HTML escaped twice (`&amp;lt;b&amp;gt;`) still has tags after one unescape; those are stripped too,
    also from declared plain text, where it shows as an escaped tag (`&lt;b&gt;`).
    """
    if (detail or {}).get("type") == "text/plain" and not _ESCAPED_TAG.search(value):
        return " ".join(clean_text(value).split())
    text = html_to_text(value)
    if _TAG.search(text):
        text = html_to_text(text)
    return " ".join(clean_text(text).split())


def published_time(entry: dict[str, Any]) -> datetime | None:
    """The entry's published time (else its updated time) as an aware UTC datetime, or None."""
    for key in ("published_parsed", "updated_parsed"):
        parsed = entry.get(key)  # feedparser's struct_time, already in UTC
        if parsed:
            try:
                return datetime(*parsed[:6], tzinfo=timezone.utc)
            except ValueError:
                continue
    return None


def local_day(moment: datetime, zone: tzinfo | None) -> str | None:
    """The date of `moment` in `zone` (None: the machine's), or None when it has none (past year 9999 there)."""
    try:
        return moment.astimezone(zone).date().isoformat()
    except OverflowError:
        return None


def _link(entry: dict[str, Any], base_url: str) -> str | None:
    """The entry's link made absolute against `base_url`, None when it has none. Raises EntryError."""
    link = clean_text(entry.get("link") or "").strip()
    if not link:
        return None
    try:
        return urljoin(base_url, link)
    except ValueError as e:
        raise EntryError(f"link {link[:80]!r} is not a URL ({e})") from None


def entry_to_item(
    entry: dict[str, Any], *, source: str, feed_url: str, base_url: str, zone: tzinfo | None, ingest_day: str,
    key: str | None = None,
) -> dict[str, Any]:
    """The headline item for `store_headlines`, with two flags it does not store: `undated` and `title_cut`.

    Relative links are made absolute against `base_url`. `day` is the local date of the
    published time in `zone` (None: the machine's zone); an entry without a time, or whose
    time cannot be read (a localised date feedparser does not know, a year-9999 time that
    has no local date) is undated: no published_utc, filed under `ingest_day`, the day it was
    first seen, and flagged `undated` when it did give a date. The title is cut to
    TITLE_CHARS, the summary to SUMMARY_CHARS. `key` is the feed's identity in the
    headline's id (default: `source`). Raises EntryError for an entry without a title,
    without guid and link, or whose link is not a URL.
    """
    full_title = _detail_text(entry.get("title") or "", entry.get("title_detail"))
    guid = clean_text(entry.get("id") or "").strip() or None
    link = _link(entry, base_url)
    if not full_title:
        raise EntryError(f"no title ({guid or link})")
    if not (guid or link):
        raise EntryError(f"no guid and no link ({full_title[:80]!r})")
    summary = entry.get("summary")
    summary_detail = entry.get("summary_detail")
    if not summary and entry.get("content"):
        summary, summary_detail = entry["content"][0].get("value"), entry["content"][0]
    published = published_time(entry)
    day = local_day(published, zone) if published else None
    title = truncate(full_title, TITLE_CHARS)
    return {
        "source": source,
        "key": key or source,
        "feed_url": feed_url,
        "guid": guid,
        "link": link,
        "title": title,
        "summary": truncate(_detail_text(summary or "", summary_detail)),
        "published_utc": published.strftime("%Y-%m-%dT%H:%M:%SZ") if day else None,
        "day": day or ingest_day,
        "undated": day is None and bool(entry.get("published") or entry.get("updated")),
        "title_cut": title != full_title,
    }


# ---------------------------------------------------------------- the ingest


def ingest(
    db: sqlite_utils.Database,
    feeds: Iterable[Feed],
    day: str,
    tz: str | None = None,
    client: httpx.Client | None = None,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> list[FeedResult]:
    """Fetch every feed, store its new headlines and record its outcome in `feeds`; one result per feed.

    `day` (YYYY-MM-DD) is used for entries without a time; `tz` names the zone whose
    local date is a headline's day (None or "": the machine's). `timeout` applies to every
    request, also on a given `client`. A failing feed is recorded and skipped; raises
    IngestError only for an invalid `day`, `tz` or `max_bytes`, before fetching anything.
    """
    try:
        date.fromisoformat(day)
    except ValueError:
        raise IngestError(f"day must be YYYY-MM-DD, got {day!r}") from None
    if max_bytes < 1:
        raise IngestError(f"max_bytes must be positive, got {max_bytes}")
    try:
        zone = resolve_timezone(tz)
    except TimezoneError as e:
        raise IngestError(str(e)) from None
    own_client = client is None
    http = make_client(timeout) if client is None else client
    try:
        return [
            ingest_feed(db, http, feed, day=day, zone=zone, timeout=timeout, max_bytes=max_bytes,
                        deadline_s=deadline_s)
            for feed in feeds
        ]
    finally:
        if own_client:
            http.close()


def ingest_feed(
    db: sqlite_utils.Database,
    client: httpx.Client,
    feed: Feed,
    *,
    day: str,
    zone: tzinfo | None,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> FeedResult:
    """Fetch, parse and store one feed and record the outcome in its `feeds` row; never raises for a bad feed."""
    previous = _feed_row(db, feed.url)
    name = feed.name or previous.get("name") or feed.url
    try:
        fetched = fetch_feed(client, feed.url, etag=previous.get("etag"),
                             last_modified=previous.get("last_modified"), timeout=timeout,
                             max_bytes=max_bytes, deadline_s=deadline_s)
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        return _record(db, FeedResult(feed.url, name, None, _describe(e), 0, False))
    except FetchError as e:
        return _record(db, FeedResult(feed.url, name, e.status, str(e), 0, False))
    validators = {
        "etag": fetched.headers.get("etag"),
        "last_modified": fetched.headers.get("last-modified"),
    }
    if fetched.status == 304:  # unchanged; a 304 may omit the validators, so keep the old ones
        validators = {k: v or previous.get(k) for k, v in validators.items()}
        return _record(db, FeedResult(feed.url, name, 304, None, 0, False), validators)

    if not fetched.body.strip():  # feedparser reads an empty body as a valid, empty feed
        error = f"{fetched.url} sent an empty body, not a feed"
        return _record(db, FeedResult(feed.url, name, fetched.status, error, 0, False))
    parsed, recoded = parse_body(fetched)
    bozo_message = (str(parsed.get("bozo_exception", "")) or "malformed") if parsed.bozo else None
    if recoded and isinstance(parsed.get("bozo_exception"), feedparser.CharacterEncodingOverride):
        bozo_message = None  # feedparser's "declared as X, but parsed as Y" would repeat the repair note
    bozo_message = "; ".join(m for m in (recoded, bozo_message) if m) or None
    if not parsed.entries and (parsed.bozo or not parsed.get("version")):  # no version: XML, but not RSS/Atom
        kind = fetched.headers.get("content-type", "no Content-Type").split(";")[0].strip()  # e.g. text/html
        error = f"{fetched.url} is not a readable feed ({kind}): {bozo_message or 'no RSS or Atom root element'}"
        return _record(db, FeedResult(feed.url, name, fetched.status, error, 0, bool(parsed.bozo), bozo_message),
                       parsed=True)

    feed_title = truncate(_detail_text(parsed.feed.get("title") or "", parsed.feed.get("title_detail")), TITLE_CHARS)
    source = feed.name or feed_title or feed.url
    items, dropped = [], []
    for entry in parsed.entries:
        try:
            items.append(entry_to_item(entry, source=source, feed_url=feed.url, base_url=fetched.url, zone=zone,
                                       ingest_day=day, key=feed_key(feed)))
        except EntryError as e:
            dropped.append(str(e))
    new = store_headlines(db, items, legacy_key=None if feed.name else source)
    keys = {headline_id(i["key"], i["guid"], i["link"]) for i in items}
    result = FeedResult(feed.url, source, fetched.status, None, new, bool(parsed.bozo) or recoded is not None,
                        bozo_message, len(items), repeated=len(items) - len(keys), dropped=tuple(dropped),
                        undated=sum(i["undated"] for i in items), titles_cut=sum(i["title_cut"] for i in items))
    return _record(db, result, validators, parsed=True)


def feed_key(feed: Feed) -> str:
    """A feed's identity in its headlines' ids: its configured name, else its normalised URL.

    Never its title: two unnamed feeds with the same title would share ids, and one
    feed's items would vanish behind the other's.
    """
    return feed.name or normalise_link(feed.url)


def _feed_row(db: sqlite_utils.Database, url: str) -> dict[str, Any]:
    rows = list(db.query("select name, etag, last_modified from feeds where url = ?", [url]))
    return rows[0] if rows else {}


def _describe(error: Exception) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _record(
    db: sqlite_utils.Database,
    result: FeedResult,
    validators: dict[str, str | None] | None = None,
    parsed: bool = False,
) -> FeedResult:
    """Upsert the feed's row with `result`; returns `result`.

    The etag and last-modified change only when a response was read (`validators`
    given), and bozo only when a body was parsed, so a failed fetch keeps both.
    """
    row: dict[str, Any] = {
        "url": result.url,
        "name": result.name,
        "last_status": result.status,
        "last_error": result.error,
        "new_items": result.new_items,
        "last_fetched_utc": utc_now(),
    }
    if validators is not None:
        row.update(validators)
    if parsed:
        row.update(bozo=int(result.bozo), bozo_message=result.bozo_message)
    with db.atomic():
        db["feeds"].upsert(row, pk="url")
    return result


# ---------------------------------------------------------------- reporting


def all_failed(results: list[FeedResult]) -> bool:
    """True when no feed could be read (a 304 counts as read): the CLI's rule for a non-zero exit."""
    return not any(r.ok for r in results)


def _note(r: FeedResult) -> str:
    """What a summary line says beyond the numbers: the error, else what was odd about a feed that was read."""
    if r.error:
        return r.error
    notes = []
    if r.bozo:
        notes.append(f"malformed, kept what parsed: {r.bozo_message}")
    if r.status != 304 and r.items == 0:
        notes.append("the feed has no items")
    if r.repeated:
        notes.append(f"{r.repeated} of {r.items} items repeat an earlier item's guid or link; the first is kept")
    if r.dropped:
        more = f"; and {len(r.dropped) - MAX_LISTED_DROPS} more" if len(r.dropped) > MAX_LISTED_DROPS else ""
        notes.append(f"{len(r.dropped)} items dropped: {'; '.join(r.dropped[:MAX_LISTED_DROPS])}{more}")
    if r.undated:
        notes.append(f"{r.undated} items with an unreadable date filed under the ingest day")
    if r.titles_cut:
        notes.append(f"{r.titles_cut} titles cut to {TITLE_CHARS} characters")
    return f"({'; '.join(notes)})" if notes else ""


def format_summary(results: list[FeedResult]) -> str:
    """One line per feed (name, HTTP status, new headlines, error or malformed note) and a total line."""
    width = max([len("feed")] + [len(r.name) for r in results])
    lines = [f"{'feed':<{width}}  status   new  error"]
    for r in results:
        status = "-" if r.status is None else str(r.status)
        lines.append(f"{r.name:<{width}}  {status:>6}  {r.new_items:>4}  {' '.join(_note(r).split())}".rstrip())
    read = sum(r.ok for r in results)
    new = sum(r.new_items for r in results)
    lines.append(f"total: {len(results)} feeds, {read} read, {len(results) - read} failed, {new} new headlines")
    return "\n".join(lines)
