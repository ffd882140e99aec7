"""Walter's ingest: Bluesky posts that link to news articles, their counts at a fixed age, author baselines.

`ingest_search` stores the posts with an article link, `refresh_counts` reads their counts at the fixed
age, `update_baselines` and `baseline_stats` give each author's usual; what a night leaves out is recorded
in `walter_skips`. In detail: docs/walter.md ("The modules, in detail").
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

import sqlite_utils

from varro.engine.core.errors import UserError
from varro.engine.core.faults import failpoint
from varro.engine.rewards import baselines
from varro.engine.rewards.baselines import BaselineStats  # noqa: F401  (re-exported: Walter's callers use this name)
from varro.engine.prompts.sources import normalise_link, resolve_timezone

from .bsky import (
    REPOST_REASON,
    Bluesky,
    BlueskyAuthError,
    BlueskyConfigError,
    BlueskyError,
    BlueskyRateLimitError,
    BlueskyUnavailableError,
)

log = logging.getLogger(__name__)

EXTERNAL_VIEW = "app.bsky.embed.external#view"
EXTERNAL_RECORD = "app.bsky.embed.external"
RECORD_WITH_MEDIA_VIEW = "app.bsky.embed.recordWithMedia#view"
RECORD_WITH_MEDIA_RECORD = "app.bsky.embed.recordWithMedia"
RECORD_VIEW = "app.bsky.embed.record#view"  # a quote post's view: the quoted post, with its own embeds
LINK_FACET = "app.bsky.richtext.facet#link"
COUNT_FIELDS = ("like", "repost", "reply", "quote")  # order of the counts in bsky_authors.posts_json items
DEFAULT_QUERY = "*"  # searchPosts needs a q; the domain filter does the selecting
MAX_PAGES = 100  # per (query, day) and run: 10,000 posts at limit 100
BASELINE_MAX_PAGES = 5  # author feed pages read for a baseline (young posts and reposts are skipped)
_FRACTION = re.compile(r"(\.\d{6})\d+")  # Python parses at most microseconds


class WalterIngestError(ValueError, UserError):
    """An argument of the ingest or a post from the API is unusable; the message names it."""


class PostDataError(WalterIngestError):
    """A post lacks a field the row needs (uri, cid, author, a parseable createdAt)."""


@dataclass
class SearchCounts:
    queries: int = 0  # (domain, day) searches run or resumed
    queries_done_before: int = 0  # already finished in an earlier run, not searched again
    queries_unfinished: int = 0  # stopped at max_pages; the saved cursor resumes them
    pages: int = 0
    posts_seen: int = 0
    posts_stored: int = 0  # upserted (new or updated)
    posts_new: int = 0
    posts_without_link: int = 0  # no http(s) link to the searched domain
    posts_invalid: int = 0  # rejected by the lexicon or PostDataError: logged, recorded in walter_skips, skipped


@dataclass
class DomainSearch(SearchCounts):
    """One domain's search of the day: its counts, and why it failed (None when it did not)."""
    domain: str = ""
    error: str | None = None  # one line; set only under keep_going


@dataclass
class SearchSummary(SearchCounts):
    """The counts summed over every domain, and each domain's own in `domains` (in search order)."""
    domains: list[DomainSearch] = field(default_factory=list)
    stopped_at: str | None = None  # the domain whose account or host error ended the search (keep_going)

    def add(self, part: DomainSearch) -> None:
        self.domains.append(part)
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(part, name))

    @property
    def failed(self) -> list[DomainSearch]:
        return [d for d in self.domains if d.error]


_COUNTERS = tuple(f.name for f in fields(SearchCounts))
# The account or the host is unusable: the next domain would fail the same way after the same
# retries, so the search stops there. Any other Bluesky error concerns that domain's answers.
HOST_ERRORS = (BlueskyAuthError, BlueskyConfigError, BlueskyRateLimitError, BlueskyUnavailableError)


class SearchFailedError(WalterIngestError):
    """Every domain's search failed before it read a page; the message names each domain's error."""


def one_line(error: BaseException) -> str:
    """`error` as '<class>: <message>' on one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


_SKIP = ("insert into walter_skips (day, kind, key, reason, created_utc) values (?, ?, ?, ?, ?) "
         "on conflict(day, kind, key) do update set reason = excluded.reason")


def record_skip(db: sqlite_utils.Database, day: str, kind: str, key: str, reason: str, now: datetime) -> None:
    """Record in walter_skips that the night of `day` left out `key` (a post's uri, an author's did) and why.

    Upserts on (day, kind, key): the same skip recorded again keeps its first created_utc.
    """
    db.execute(_SKIP, [day, kind, key, reason, utc_iso(now)])


def day_skips(db: sqlite_utils.Database, day: str, kind: str) -> dict[str, str]:
    """{key: reason} of the `kind` skips recorded for `day`, in key order."""
    return dict(db.execute("select key, reason from walter_skips where day = ? and kind = ? order by key",
                           [day, kind]).fetchall())


# -- posts to rows -----------------------------------------------------------------


def _http_link(uri: Any) -> str | None:
    """`uri` without surrounding whitespace (some clients send " https://..."), when it is http(s)."""
    link = uri.strip() if isinstance(uri, str) else ""
    return link if link.lower().startswith(("http://", "https://")) else None


def _external(embed: Any, view: bool) -> dict[str, Any] | None:
    """The external card of an embed (directly, or as a record-with-media's media), its uri stripped;
    None otherwise."""
    if not isinstance(embed, dict):
        return None
    kind = embed.get("$type")
    if kind == (RECORD_WITH_MEDIA_VIEW if view else RECORD_WITH_MEDIA_RECORD):
        return _external(embed.get("media"), view)
    if kind == (EXTERNAL_VIEW if view else EXTERNAL_RECORD):
        card = embed.get("external")
        link = _http_link(card.get("uri")) if isinstance(card, dict) else None
        return {**card, "uri": link} if link else None
    return None


def _quoted_cards(embed: Any) -> list[dict[str, Any]]:
    """The external cards of the post a quote post quotes (a record view, alone or with media)."""
    if not isinstance(embed, dict):
        return []
    if embed.get("$type") == RECORD_WITH_MEDIA_VIEW:
        return _quoted_cards(embed.get("record"))
    quoted = embed.get("record") if embed.get("$type") == RECORD_VIEW else None
    embeds = quoted.get("embeds") if isinstance(quoted, dict) else None
    return [card for inner in embeds or [] if (card := _external(inner, view=True))]


def _candidates(post: dict[str, Any]) -> Iterable[tuple[str, str | None, str | None]]:
    """The post's links, best first: its own card, its text's link facets, then the quoted post's card."""
    record = post.get("record") or {}
    for card in (_external(post.get("embed"), view=True), _external(record.get("embed"), view=False)):
        if card:
            yield card["uri"], card.get("title") or None, card.get("description") or None
    for facet in record.get("facets") or []:
        for feature in facet.get("features") or []:
            if feature.get("$type") == LINK_FACET and (link := _http_link(feature.get("uri"))):
                yield link, None, None
    for card in _quoted_cards(post.get("embed")):
        yield card["uri"], card.get("title") or None, card.get("description") or None


def link_host(url: str) -> str:
    """The lower-case host of `url` without port or a leading 'www.'."""
    host = (urlsplit(url).hostname or "").lower()
    return host[4:] if host.startswith("www.") else host


def on_domain(url: str, domain: str) -> bool:
    """Whether `url` points at `domain` or one of its subdomains (www. ignored)."""
    host, domain = link_host(url), domain.lower().removeprefix("www.")
    return host == domain or host.endswith("." + domain)


def extract_link(post: dict[str, Any], domain: str | None = None) -> tuple[str, str | None, str | None] | None:
    """The article link of a post view: (link, title, description), or None when it has none.

    Looked for in the external embed's card (view, then record), a record-with-media
    whose media is external, the text's link facets (no title there), then the card of
    the post it quotes. With
    `domain`, only links to that domain (or a subdomain) count.
    """
    for link, title, description in _candidates(post):
        if domain is None or on_domain(link, domain):
            return link, title, description
    return None


def article_key(url: str) -> str:
    """`varro.engine.prompts.sources.normalise_link`, plus https for http and no leading 'www.' in the host.

    Bluesky posts link the same article with and without www. and over http; one
    article must have one key.
    """
    parts = urlsplit(normalise_link(url))
    scheme = "https" if parts.scheme == "http" else parts.scheme
    netloc = parts.netloc[4:] if parts.netloc.startswith("www.") else parts.netloc
    return urlunsplit((scheme, netloc, parts.path, parts.query, ""))


def parse_time(value: Any) -> datetime:
    """An ATProto datetime string as an aware UTC datetime; no offset means UTC. Raises PostDataError."""
    if not isinstance(value, str) or not value.strip():
        raise PostDataError(f"not a datetime: {value!r}")
    text = _FRACTION.sub(r"\1", value.strip())
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise PostDataError(f"not an ISO 8601 datetime: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def utc_iso(moment: datetime) -> str:
    """YYYY-MM-DDTHH:MM:SS.ffffffZ, the format of `varro.engine.store.clock.utc_now` (sorts as text)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _local_day(moment: datetime, zone: tzinfo | None) -> str:
    return (moment.astimezone(zone) if zone else moment.astimezone()).date().isoformat()


def _count(post: dict[str, Any], name: str) -> int | None:
    value = post.get(f"{name}Count")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def post_row(post: dict[str, Any], tz: tzinfo | None, now: datetime, domain: str | None = None) -> dict[str, Any]:
    """The `bsky_posts` row of a post view, counts as read at `now` (NULL where the API said nothing).

    createdAt is set by the posting client: a post dated 2030 or a backdated import would be
    filed under the wrong day and its counts aged wrongly. So the day is the local date (in
    `tz`; None: the machine's zone) of the earlier of createdAt and indexedAt (the AppView's
    own sort time), and the counts' age runs from indexedAt (createdAt when there is none).
    Raises PostDataError when the post lacks uri, cid, author did or a parseable createdAt,
    has an unparseable indexedAt, or has no article link.
    """
    record = post.get("record") or {}
    author = post.get("author") or {}
    uri, cid, did = post.get("uri"), post.get("cid"), author.get("did")
    if not (uri and cid and did):
        raise PostDataError(f"post without uri / cid / author did: uri={uri!r} cid={cid!r} did={did!r}")
    found = extract_link(post, domain)
    if found is None:
        raise PostDataError(f"post {uri} has no article link" + (f" to {domain}" if domain else ""))
    link, title, description = found
    try:
        created = parse_time(record.get("createdAt"))
    except PostDataError as e:
        raise PostDataError(f"post {uri}: createdAt {e}") from None
    try:
        indexed = parse_time(post["indexedAt"]) if post.get("indexedAt") else None
    except PostDataError as e:
        raise PostDataError(f"post {uri}: indexedAt {e}") from None
    return {
        "uri": uri,
        "cid": cid,
        "author_did": did,
        "author_handle": author.get("handle"),
        "text": record.get("text") or "",
        "link": link,
        "url_norm": article_key(link),
        "link_title": title,
        "link_description": description,
        "created_utc": utc_iso(created),
        "indexed_utc": utc_iso(indexed) if indexed else None,
        "like_count": _count(post, "like"),
        "repost_count": _count(post, "repost"),
        "reply_count": _count(post, "reply"),
        "quote_count": _count(post, "quote"),
        "counts_read_utc": utc_iso(now),
        "counts_age_hours": (now - (indexed or created)).total_seconds() / 3600.0,
        "counts_final": 0,
        "deleted": 0,
        "day": _local_day(min(created, indexed or created), tz),
        "first_seen_utc": utc_iso(now),
    }


# -- storage ------------------------------------------------------------------------

_COLUMNS = ("uri", "cid", "author_did", "author_handle", "text", "link", "url_norm", "link_title",
            "link_description", "created_utc", "indexed_utc", "like_count", "repost_count", "reply_count",
            "quote_count", "counts_read_utc", "counts_age_hours", "counts_final", "deleted", "day",
            "first_seen_utc")
_REWRITTEN = ("cid", "author_handle", "text", "indexed_utc")
_COUNTS = ("like_count", "repost_count", "reply_count", "quote_count", "counts_read_utc", "counts_age_hours")
# A re-seen post gets fresh content and, until they are final, fresh counts. Its link
# and article key stay those of the first sighting (a post linking two searched
# domains must not flip between articles), as do its day, final counts and deleted flag.
_UPSERT = (
    f"insert into bsky_posts ({', '.join(_COLUMNS)}) values ({', '.join(':' + c for c in _COLUMNS)}) "
    "on conflict(uri) do update set "
    + ", ".join(f"{c} = excluded.{c}" for c in _REWRITTEN) + ", "
    + ", ".join(f"{c} = case when coalesce(bsky_posts.counts_final, 0) = 1 then bsky_posts.{c} else excluded.{c} end"
                for c in _COUNTS)
)


def store_posts(db: sqlite_utils.Database, rows: list[dict[str, Any]]) -> int:
    """Upsert `rows` into bsky_posts (caller holds the transaction); returns how many were new."""
    new = 0
    for row in rows:
        exists = db.execute("select 1 from bsky_posts where uri = ?", [row["uri"]]).fetchone()
        new += exists is None
        db.execute(_UPSERT, row)
        failpoint("walter.ingest.row")
    return new


# -- search --------------------------------------------------------------------------


def day_bounds(day: str, zone: tzinfo | None) -> tuple[str, str]:
    """since / until (UTC, second precision) of the local `day`: [midnight, next midnight)."""
    try:
        start = date.fromisoformat(day)
    except (TypeError, ValueError):
        raise WalterIngestError(f"day must be YYYY-MM-DD, got {day!r}") from None

    def midnight(d: date) -> datetime:
        moment = datetime.combine(d, time(0))
        return moment.replace(tzinfo=zone) if zone else moment.astimezone()

    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return (midnight(start).astimezone(timezone.utc).strftime(fmt),
            midnight(start + timedelta(days=1)).astimezone(timezone.utc).strftime(fmt))


_SAVE_CURSOR = (
    "insert into bsky_cursors (query, day, cursor, finished, pages, updated_utc) values (?, ?, ?, ?, ?, ?) "
    "on conflict(query, day) do update set cursor = excluded.cursor, finished = excluded.finished, "
    "pages = excluded.pages, updated_utc = excluded.updated_utc"
)


def query_key(domain: str, q: str = DEFAULT_QUERY) -> str:
    """The bsky_cursors key of a domain search: 'domain:<domain>', with the query when it is not '*'."""
    return f"domain:{domain}" if q == DEFAULT_QUERY else f"{q} domain:{domain}"


def ingest_search(
    db: sqlite_utils.Database,
    client: Bluesky,
    domains: list[str],
    day: str,
    tz: str | tzinfo | None = None,
    q: str = DEFAULT_QUERY,
    limit: int = 100,
    max_pages: int = MAX_PAGES,
    now: datetime | None = None,
    keep_going: bool = False,
) -> SearchSummary:
    """Search each domain's posts of the local `day` and store those with an article link.

    Pages until the cursor is empty (an empty page with a cursor goes on). Each
    page and the next cursor are committed together; a Bluesky error propagates
    with the earlier pages and the cursor kept, and the next run resumes there.
    A search is marked finished only once the day is over, so searching today
    again later picks up newer posts (upserts, no duplicates).

    Returns the summed counts with each domain's in `.domains`. With
    `keep_going`, a domain whose search fails keeps its error in its summary and
    the next domain is searched, except after an error of the account or host
    (HOST_ERRORS), which ends the search; when every domain failed before
    reading a page, the one failure's own error is raised, or SearchFailedError
    naming each domain's when there were several.
    Raises WalterIngestError for a bad day, timezone or empty domain list.
    """
    if not domains or any(not d or "/" in d for d in domains):
        raise WalterIngestError(f"domains must be non-empty host names, got {domains!r}")
    zone = resolve_timezone(tz) if isinstance(tz, str) or tz is None else tz
    since, until = day_bounds(day, zone)
    summary = SearchSummary()
    errors: list[Exception] = []
    for i, domain in enumerate(domains):
        part = DomainSearch(domain=domain)
        try:
            _search_domain(db, client, part, q, day, zone, since, until, limit, max_pages, now)
        except (BlueskyError, WalterIngestError) as e:
            if not keep_going:
                raise
            errors.append(e)
            part.error = one_line(e)
            summary.add(part)
            if isinstance(e, HOST_ERRORS):
                summary.stopped_at = domain
                for rest in domains[i + 1:]:
                    summary.add(DomainSearch(domain=rest, error=f"not searched after {domain}'s {type(e).__name__}"))
                break
            continue
        summary.add(part)
    if errors and all(d.error and not d.pages for d in summary.domains):
        if len(errors) == 1:
            raise errors[0]
        raise SearchFailedError(f"no domain could be searched for {day}: "
                                + "; ".join(f"{d.domain}: {d.error}" for d in summary.failed)) from errors[-1]
    return summary


def _search_domain(db: sqlite_utils.Database, client: Bluesky, part: DomainSearch, q: str, day: str,
                   zone: tzinfo | None, since: str, until: str, limit: int, max_pages: int,
                   now: datetime | None) -> None:
    """Search one domain's day into `part` (counted as it goes, so a failure keeps what was read)."""
    key = query_key(part.domain, q)
    state = db.execute("select cursor, finished, pages from bsky_cursors where query = ? and day = ?",
                       [key, day]).fetchone()
    if state and state[1]:
        part.queries_done_before += 1
        return
    part.queries += 1
    cursor, pages = (state[0], state[2] or 0) if state else (None, 0)
    for _ in range(max_pages):
        rejected: list[tuple[str | None, str]] = []
        posts, next_cursor = client.search_posts(q=q, domain=part.domain, since=since, until=until,
                                                 cursor=cursor, limit=limit,
                                                 on_invalid=lambda uri, why: rejected.append((uri, why)))
        if next_cursor is not None and next_cursor == cursor:
            raise WalterIngestError(f"searchPosts for {key!r} on {day} returned the same cursor {cursor!r}")
        read_at = now or datetime.now(timezone.utc)
        rows = _rows(posts, zone, read_at, part, rejected)
        pages += 1
        finished = not next_cursor and parse_time(until) <= read_at
        with db.atomic():  # the page, what it left out and the cursor after it, or none of them
            part.posts_new += store_posts(db, rows)
            for i, (uri, why) in enumerate(rejected):
                record_skip(db, day, "post", uri or f"{key} page {pages} item {i + 1} (no uri)", why, read_at)
            db.execute(_SAVE_CURSOR, [key, day, next_cursor, int(finished), pages, utc_iso(read_at)])
        part.pages += 1
        part.posts_stored += len(rows)
        if not next_cursor:
            return
        cursor = next_cursor
    part.queries_unfinished += 1
    log.warning("search %r on %s stopped after %d pages; the next run resumes", key, day, max_pages)


def _rows(posts: list[dict[str, Any]], zone: tzinfo | None, now: datetime, part: DomainSearch,
          rejected: list[tuple[str | None, str]]) -> list[dict[str, Any]]:
    """The rows of a page's posts; each PostDataError joins `rejected` (the lexicon's rejects are there)."""
    part.posts_seen += len(rejected)
    part.posts_invalid += len(rejected)
    rows = []
    for post in posts:
        part.posts_seen += 1
        if extract_link(post, part.domain) is None:
            part.posts_without_link += 1
            continue
        try:
            rows.append(post_row(post, zone, now, part.domain))
        except PostDataError as e:
            part.posts_invalid += 1
            rejected.append((post.get("uri"), str(e)))
            log.warning("skipping a post: %s", e)
    return rows


_HEADER = ("queries", "pages", "seen", "new", "stored", "no link", "invalid")


def format_summary(search: SearchSummary, source: str, refreshed: int | None, authors: int | None,
                   notes: Iterable[str] = (), skipped_authors: Mapping[str, str] | None = None) -> str:
    """The ingest's report: one line per domain (its search counts, and what went wrong), then a total
    line with the counts refreshed and the author baselines fetched (None: not done, `notes` say why),
    then a line per author left without a baseline (`skipped_authors`: {did: reason})."""
    skipped_authors = skipped_authors or {}
    width = max([len("domain")] + [len(d.domain) for d in search.domains])
    lines = [f"{'domain':<{width}}  " + "  ".join(_HEADER) + "  note"]
    for d in search.domains:
        values = (d.queries, d.pages, d.posts_seen, d.posts_new, d.posts_stored, d.posts_without_link,
                  d.posts_invalid)
        note = (f"failed: {d.error}" if d.error else "done in an earlier run" if d.queries_done_before
                else "stopped at the page limit; the next run resumes" if d.queries_unfinished
                else "")
        lines.append((f"{d.domain:<{width}}  " + "  ".join(f"{v:>{len(h)}}" for v, h in zip(values, _HEADER))
                      + f"  {note}").rstrip())
    searched = sum(1 for d in search.domains if d.queries and not d.error)
    counts = "; ".join(
        [(f"{refreshed} counts refreshed" if refreshed is not None else "counts not refreshed") + ", "
         + (f"{authors} author baselines fetched" if authors is not None else "author baselines not fetched")
         + (f", {len(skipped_authors)} skipped" if skipped_authors else ""),
         *notes])
    lines.append(f"{source}: {search.posts_new} new posts, {len(search.domains)} domains ({searched} searched, "
                 f"{search.queries_done_before} done before, {len(search.failed)} failed); {counts}")
    lines += [f"  no baseline for {did}: {why}" for did, why in skipped_authors.items()]
    return "\n".join(lines)


# -- counts at the fixed age ---------------------------------------------------------------


_FINAL_COUNTS = (
    "update bsky_posts set like_count = ?, repost_count = ?, reply_count = ?, quote_count = ?, "
    "counts_read_utc = ?, counts_age_hours = ?, counts_final = 1 where uri = ?"
)


def refresh_counts(
    db: sqlite_utils.Database, client: Bluesky, min_age_hours: float = 24.0, now: datetime | None = None,
    day: str | None = None,
) -> int:
    """Re-read the counts of posts at least `min_age_hours` old (from indexedAt) whose counts are not final.

    getPosts in chunks of 25; counts, counts_read_utc and counts_age_hours are
    updated and counts_final set to 1. A post missing from the answer is marked
    deleted=1 (its row stays). A post the answer has malformed is recorded in
    walter_skips under `day` (default: now's UTC date) and stays due; when such a
    post has no uri, nothing missing from that chunk is marked deleted. Returns
    how many posts got final counts.
    """
    now = now or datetime.now(timezone.utc)
    day = day or now.astimezone(timezone.utc).date().isoformat()
    cutoff = utc_iso(now - timedelta(hours=min_age_hours))
    # Age from indexedAt, not the client-set createdAt: a post dated 2030 would never be due.
    due = list(db.query(
        "select uri, coalesce(indexed_utc, created_utc) as since_utc from bsky_posts "
        "where coalesce(counts_final, 0) = 0 and coalesce(deleted, 0) = 0 "
        "and coalesce(indexed_utc, created_utc) <= ? order by since_utc, uri", [cutoff]))
    finalised = deleted = 0
    for start in range(0, len(due), 25):
        chunk = due[start:start + 25]
        rejected: list[tuple[str | None, str]] = []
        answer = {p["uri"]: p for p in client.get_posts(
            [r["uri"] for r in chunk], on_invalid=lambda uri, why: rejected.append((uri, why)))}
        unread = {uri for uri, _ in rejected}
        with db.atomic():
            for i, (uri, why) in enumerate(rejected):
                record_skip(db, day, "post", uri or f"getPosts of {chunk[0]['uri']} item {i + 1} (no uri)", why, now)
            for row in chunk:
                post = answer.get(row["uri"])
                if post is None and (row["uri"] in unread or None in unread):
                    continue  # sent, but malformed: due again next night
                if post is None:
                    db.execute("update bsky_posts set deleted = 1 where uri = ?", [row["uri"]])
                    deleted += 1
                    continue
                age = (now - parse_time(row["since_utc"])).total_seconds() / 3600.0
                db.execute(_FINAL_COUNTS, [*(_count(post, name) for name in COUNT_FIELDS),
                                           utc_iso(now), age, row["uri"]])
                failpoint("walter.refresh.row")
                finalised += 1
    log.info("refreshed counts: %d final, %d deleted, of %d due", finalised, deleted, len(due))
    return finalised


# -- author baselines ------------------------------------------------------------------------


def update_baselines(
    db: sqlite_utils.Database,
    client: Bluesky,
    dids: Iterable[str],
    ttl_hours: float = 24 * 7,
    now: datetime | None = None,
    max_posts: int = 50,
    min_age_hours: float = 24.0,
    day: str | None = None,
) -> int:
    """Cache each author's recent own posts with raw counts in bsky_authors; returns authors fetched.

    An author whose cache has not expired is skipped. An author whose feed cannot
    be read (any Bluesky error but HOST_ERRORS, which propagate) gets no baseline:
    recorded in walter_skips under `day` (default: now's UTC date), and the next
    author is asked; a later fetch that works clears that record. A malformed
    item of a feed is left out and recorded likewise. Replies (filter) and reposts
    are left out, and so are posts younger than `min_age_hours`, whose counts are
    not comparable yet. posts_json is [[uri, likes, reposts, replies, quotes], ...]
    with null for a count the API did not give; post_age_hours_json maps each
    uri to its age in hours when these counts were read (getAuthorFeed gives a
    post's counts at its current age only).
    """
    now = now or datetime.now(timezone.utc)
    day = day or now.astimezone(timezone.utc).date().isoformat()
    young = utc_iso(now - timedelta(hours=min_age_hours))
    fetched = 0
    for did in dict.fromkeys(dids):
        cached = db.execute("select expires_utc from bsky_authors where did = ?", [did]).fetchone()
        if cached and cached[0] and cached[0] > utc_iso(now):
            continue
        rejected: list[tuple[str | None, str]] = []
        try:
            handle, posts, created = _recent_own_posts(client, did, max_posts, young, rejected)
        except HOST_ERRORS:
            raise
        except BlueskyError as e:
            log.warning("no baseline for %s tonight: %s", did, one_line(e))
            with db.atomic():
                record_skip(db, day, "author", did, one_line(e), now)
            continue
        ages = {uri: round((now - parse_time(c)).total_seconds() / 3600.0, 4) for uri, c in created.items()}
        with db.atomic():
            for i, (uri, why) in enumerate(rejected):
                record_skip(db, day, "post", uri or f"getAuthorFeed of {did} item {i + 1} (no uri)", why, now)
            db.execute("delete from walter_skips where day = ? and kind = 'author' and key = ?", [day, did])
            failpoint("walter.baseline.author")
            db["bsky_authors"].upsert({
                "did": did, "handle": handle, "posts_json": json.dumps(posts),
                "post_age_hours_json": json.dumps(ages),
                "fetched_utc": utc_iso(now), "expires_utc": utc_iso(now + timedelta(hours=ttl_hours)),
            }, pk="did")
        fetched += 1
    return fetched


def _recent_own_posts(client: Bluesky, did: str, max_posts: int, young: str,
                      rejected: list[tuple[str | None, str]]) -> tuple[str | None, list[list], dict[str, str]]:
    handle, posts, created_at, cursor = None, [], {}, None
    for _ in range(BASELINE_MAX_PAGES):
        items, cursor = client.get_author_feed(did, cursor=cursor, limit=min(100, max_posts),
                                               on_invalid=lambda uri, why: rejected.append((uri, why)))
        for item in items:
            post = item.get("post") or {}
            if (item.get("reason") or {}).get("$type") == REPOST_REASON or (post.get("author") or {}).get("did") != did:
                continue
            handle = handle or post["author"].get("handle")
            try:  # indexedAt, as for a scored post: a backdated createdAt would make its counts look settled
                created = utc_iso(parse_time(post.get("indexedAt") or (post.get("record") or {}).get("createdAt")))
            except PostDataError:
                continue  # without a time we cannot tell whether its counts are settled
            if created <= young:
                posts.append([post.get("uri")] + [_count(post, name) for name in COUNT_FIELDS])
                created_at[post.get("uri")] = created
            if len(posts) >= max_posts:
                return handle, posts, created_at
        if not cursor:
            break
    return handle, posts, created_at


def _cached_engagements(db: sqlite_utils.Database, did: str, exclude_uri: str,
                        weights: Mapping[str, float]) -> tuple[list[tuple[str, float]], dict[str, float]] | None:
    """(uri, weighted engagement) of the author's cached posts with every count known, but `exclude_uri`,
    and their ages when read ({} for a cache written before ages were stored); None when not cached."""
    missing = set(COUNT_FIELDS) - set(weights)
    if missing:
        raise WalterIngestError(f"weights lack {sorted(missing)}; got {dict(weights)}")
    row = db.execute("select posts_json, post_age_hours_json from bsky_authors where did = ?", [did]).fetchone()
    if row is None or not row[0]:
        return None
    values = []
    for item in json.loads(row[0]):
        if not isinstance(item, list) or len(item) != 1 + len(COUNT_FIELDS):
            raise WalterIngestError(f"bsky_authors.posts_json of {did} has an item {item!r}; "
                                    f"expected [uri, {', '.join(COUNT_FIELDS)}]")
        uri, *counts = item
        if uri == exclude_uri or any(c is None for c in counts):
            continue
        values.append((uri, sum(weights[name] * c for name, c in zip(COUNT_FIELDS, counts))))
    return values, json.loads(row[1]) if row[1] else {}


def author_baseline(db: sqlite_utils.Database, did: str, exclude_uri: str,
                    weights: Mapping[str, float]) -> float | None:
    """The bare median weighted engagement of the author's cached posts, at whatever age they were read.

    The unshrunk, unmatched baseline the weights used before `baseline_stats`.
    `weights` maps like / repost / reply / quote to their weight. The post being
    scored (`exclude_uri`) and posts with an unknown count are left out; None when
    nothing is left or the author is not cached (no number is invented).
    """
    cached = _cached_engagements(db, did, exclude_uri, weights)
    if cached is None or not cached[0]:
        return None
    return float(statistics.median(v for _, v in cached[0]))


def grown_fraction(age_hours: float, half_life_hours: float) -> float:
    """The share of its final engagement a post has by `age_hours` (varro.engine.rewards.baselines.grown_fraction).

    With the default half-life of 12 h a post has 82% at 30 h, 93% at 45 h and all
    of it at 289 h (the median age of baseline readings). Raises WalterIngestError
    for a negative age or a half-life <= 0.
    """
    try:
        return baselines.grown_fraction(age_hours, half_life_hours)
    except baselines.BaselineError as e:
        raise WalterIngestError(str(e)) from None


def baseline_stats(db: sqlite_utils.Database, did: str, exclude_uri: str, weights: Mapping[str, float],
                   age_hours: float, half_life_hours: float) -> BaselineStats | None:
    """The author's usual engagement at `age_hours` (the scored post's counts age) and its evidence.

    The author's cached posts (getAuthorFeed only gives counts at a post's current
    age, typically days older) brought to the age the scored post was read at by
    `varro.engine.rewards.baselines.age_matched_baseline`. A post whose reading age is
    unknown (a cache from before ages were stored) is taken as fully grown. The
    usual is the mean (see varro.engine.rewards.baselines for why not the median).
    `weights`, `exclude_uri` and None as in `author_baseline`. Raises
    WalterIngestError for an age <= 0.
    """
    if not age_hours > 0:
        raise WalterIngestError(f"a scored post's counts age must be positive, got {age_hours}")
    cached = _cached_engagements(db, did, exclude_uri, weights)
    if cached is None or not cached[0]:
        return None
    values, ages = cached
    if any(ages.get(uri, 1.0) <= 0 for uri, _ in values):
        raise WalterIngestError(f"bsky_authors.post_age_hours_json of {did} has a reading at age <= 0: {ages}")
    try:
        return baselines.age_matched_baseline([x for _, x in values], [ages.get(uri) for uri, _ in values],
                                              age_hours, half_life_hours)
    except baselines.BaselineError as e:
        raise WalterIngestError(str(e)) from None
