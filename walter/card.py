"""An article's link card for drafting: the title and description stored with its posts, else the
page's Open Graph tags."""

from __future__ import annotations

from html.parser import HTMLParser

import sqlite_utils

from varro.engine.core.errors import UserError

FETCH_TIMEOUT_S = 10.0


class CardError(RuntimeError, UserError):
    """The article's page could not be fetched or has no title."""


def stored_card(db: sqlite_utils.Database | None, url_norm: str) -> tuple[str, str] | None:
    """(title, description) of the link card of a stored post linking to `url_norm`, or None."""
    if db is None or "bsky_posts" not in db.table_names():
        return None
    row = db.execute("select link_title, coalesce(link_description, '') from bsky_posts where url_norm = ? "
                     "and coalesce(link_title, '') != '' order by uri limit 1", [url_norm]).fetchone()
    return (row[0], row[1]) if row else None


class _OpenGraph(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, str] = {}
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        key = a.get("property") or a.get("name") or ""
        if tag == "meta" and key in ("og:title", "og:description") and a.get("content"):
            self.tags.setdefault(key, a["content"].strip())
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def parse_card(html: str) -> tuple[str, str] | None:
    """(og:title, og:description) of a page (the <title> when it has no og:title), or None."""
    p = _OpenGraph()
    p.feed(html)
    title = p.tags.get("og:title") or p.title.strip()
    return (title, p.tags.get("og:description", "")) if title else None


def fetch_card(url: str, timeout_s: float = FETCH_TIMEOUT_S) -> tuple[str, str]:
    """(title, description) from the page's Open Graph tags. Raises CardError naming the url and why."""
    import httpx

    try:
        resp = httpx.get(url, timeout=timeout_s, follow_redirects=True, headers={"user-agent": "walter-draft"})
        resp.raise_for_status()
    except httpx.HTTPError as e:
        why = str(e).splitlines()[0] if str(e) else "no answer"  # httpx adds a second line with a docs link
        raise CardError(f"could not fetch {url} for its title: {type(e).__name__}: {why}") from None
    card = parse_card(resp.text)
    if card is None:
        raise CardError(f"{url} has no og:title or <title>: nothing to draft from")
    return card
