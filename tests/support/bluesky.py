"""A local Bluesky for the tests: an XRPC server the real atproto SDK talks to, its fixtures, the posts it
serves, and the reading of `walter ingest`'s summary. Used by tests/walter/ (test_walter_ingest.py,
test_walter_ingest_cli.py, test_walter_post_faults.py) and tests/system/ (test_bad_input.py, test_secrets.py)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from support.http_answer import send
from varro.engine.core.paths import db_path
from varro.engine.store import open_db
from walter.bsky import APPVIEW_URL_ENV, HANDLE_ENV, PASSWORD_ENV, PDS_URL_ENV, Bluesky, BlueskyConfig

T0 = 1_900_000_000.0  # the client's clock in these tests (epoch seconds)
NOW = datetime(2026, 11, 3, 12, 0, tzinfo=timezone.utc)
DAY = "2026-11-02"
NYT = "nytimes.com"
ALICE = "did:plc:alice"
BOB = "did:plc:bob"

# The day the command-line tests ingest: the real clock reads it, so it is over, and its posts over 24 h old.
PAST_DAY = (date.today() - timedelta(days=4)).isoformat()
CREATED = f"{PAST_DAY}T10:00:00.000Z"
COLUMNS = ("queries", "pages", "seen", "new", "stored", "no link", "invalid")


# -- the fake server ------------------------------------------------------------------


@dataclass
class Call:
    host: str  # "pds" or "appview"
    nsid: str
    params: dict[str, list[str]]
    body: dict[str, Any] | None
    auth: str | None


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class FakeBluesky:
    """State and routing of the local XRPC server; tests edit its fields and queue faults."""

    def __init__(self) -> None:
        self.url = ""
        self.handle = "walter.test"
        self.did = "did:plc:walter"
        self.password = "right-app-password"
        self.exp = int(T0) + 7200  # exp claim of the tokens it issues
        self.access: set[str] = set()
        self.expired: set[str] = set()  # access tokens answered with 400 ExpiredToken
        self.refresh: set[str] = set()
        self.reject_reads = False  # every app.bsky.* call answers 401
        self.calls: list[Call] = []
        self.faults: dict[str, list[Callable[[BaseHTTPRequestHandler], bool]]] = defaultdict(list)
        self.posts: dict[str, dict[str, Any]] = {}
        self.gone: set[str] = set()  # uris getPosts no longer returns
        self.search: dict[tuple[str, str], tuple[list[str], str | None]] = {}
        self.feeds: dict[tuple[str, str], tuple[list[dict[str, Any]], str | None]] = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        self._n = 0
        self._lock = threading.Lock()

    def count(self, nsid: str) -> int:
        return sum(c.nsid == nsid for c in self.calls)

    def jwt(self, scope: str, exp: int | None = None) -> str:
        with self._lock:
            self._n += 1
            n = self._n
        payload = {"scope": scope, "sub": self.did, "iat": int(T0), "exp": exp or self.exp, "jti": f"jti-{n}"}
        return f"{_b64({'alg': 'HS256', 'typ': 'at+jwt'})}.{_b64(payload)}.{_b64({'sig': n})}"

    def new_tokens(self) -> dict[str, str]:
        access, refresh = self.jwt("com.atproto.appPass"), self.jwt("com.atproto.refresh")
        self.access.add(access)
        self.refresh.add(refresh)
        return {"accessJwt": access, "refreshJwt": refresh, "handle": self.handle, "did": self.did}

    def handle_request(self, req: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(req.path)
        host, _, nsid = parts.path.partition("/xrpc/")
        length = int(req.headers.get("Content-Length") or 0)
        body = json.loads(req.rfile.read(length) or b"{}") if method == "POST" else None
        self.calls.append(Call(host.strip("/"), nsid, parse_qs(parts.query), body, req.headers.get("Authorization")))
        if self.faults[nsid] and self.faults[nsid].pop(0)(req):
            return
        status, payload, headers = self.route(host.strip("/"), nsid, parse_qs(parts.query), body,
                                              req.headers.get("Authorization"))
        send(req, status, payload, headers)

    def route(self, host: str, nsid: str, params: dict[str, list[str]], body: dict[str, Any] | None,
              auth: str | None) -> tuple[int, Any, dict[str, str]]:
        token = (auth or "").removeprefix("Bearer ")
        if nsid.startswith("com.atproto.server.") != (host == "pds"):
            return 404, {"error": "MethodNotImplemented", "message": f"{nsid} is not served on /{host}"}, {}
        if nsid == "com.atproto.server.createSession":
            if body.get("identifier") != self.handle or body.get("password") != self.password:
                return 401, {"error": "AuthenticationRequired", "message": "Invalid identifier or password"}, {}
            did_doc = {"@context": ["https://www.w3.org/ns/did/v1"], "id": self.did,
                       "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                                    "serviceEndpoint": "http://127.0.0.1:9"}]}
            return 200, {**self.new_tokens(), "didDoc": did_doc, "active": True}, {}
        if nsid == "com.atproto.server.refreshSession":
            if token not in self.refresh:
                return 401, {"error": "ExpiredToken", "message": "Token has been revoked"}, {}
            self.refresh.discard(token)  # refresh tokens rotate
            return 200, self.new_tokens(), {}
        if token in self.expired:
            return 400, {"error": "ExpiredToken", "message": "Token has expired"}, {}
        if self.reject_reads or token not in self.access:
            return 401, {"error": "AuthenticationRequired", "message": "Invalid token"}, {}
        one = {k: v[0] for k, v in params.items()}
        if nsid == "app.bsky.feed.searchPosts":
            uris, cursor = self.search.get((one.get("domain", ""), one.get("cursor", "")), ([], None))
            return 200, {"posts": [self.posts[u] for u in uris], **({"cursor": cursor} if cursor else {})}, {}
        if nsid == "app.bsky.feed.getPosts":
            return 200, {"posts": [self.posts[u] for u in params.get("uris", [])
                                   if u in self.posts and u not in self.gone]}, {}
        if nsid == "app.bsky.feed.getAuthorFeed":
            items, cursor = self.feeds.get((one["actor"], one.get("cursor", "")), ([], None))
            return 200, {"feed": items, **({"cursor": cursor} if cursor else {})}, {}
        if nsid == "app.bsky.actor.getProfiles":
            return 200, {"profiles": [self.profiles[d] for d in params.get("actors", []) if d in self.profiles]}, {}
        return 404, {"error": "MethodNotImplemented"}, {}


def answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> Callable[[Any], bool]:
    """A fault that answers instead of the normal route."""
    def fault(req: BaseHTTPRequestHandler) -> bool:
        send(req, status, payload, headers)
        return True
    return fault


def stall(seconds: float) -> Callable[[Any], bool]:
    """A fault that says nothing for `seconds` and then hangs up (the client has timed out by then)."""
    def fault(req: BaseHTTPRequestHandler) -> bool:
        time.sleep(seconds)
        req.close_connection = True
        return True
    return fault


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.server.fake.handle_request(self, "GET")

    def do_POST(self) -> None:
        self.server.fake.handle_request(self, "POST")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a stalled answer's broken pipe is expected


@pytest.fixture
def fake(monkeypatch):
    server = Server(("127.0.0.1", 0), Handler)
    server.fake = FakeBluesky()
    server.fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv(HANDLE_ENV, server.fake.handle)
    monkeypatch.setenv(PASSWORD_ENV, server.fake.password)
    yield server.fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(fake, sleeps):
    made: list[Bluesky] = []

    def make(**overrides: Any) -> Bluesky:
        cfg = BlueskyConfig(**{"pds_url": fake.url + "/pds", "appview_url": fake.url + "/appview",
                               "timeout_s": 2.0, "backoff_s": 1.0, **overrides})
        client = Bluesky(cfg, sleep=sleeps.append, clock=lambda: T0)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def db():
    return open_db(db_path())


# -- posts ----------------------------------------------------------------------------


def make_post(rkey: str, did: str = ALICE, link: str | None = "https://www.nytimes.com/2026/11/02/a.html",
              kind: str = "external", counts: tuple[int | None, ...] = (3, 1, 0, 1),
              created: str = "2026-11-02T10:00:00.000Z", text: str = "worth reading") -> dict[str, Any]:
    """A post view as the AppView answers it; `kind` says where the link sits; None counts are left out."""
    record: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": text, "createdAt": created}
    post: dict[str, Any] = {"uri": f"at://{did}/app.bsky.feed.post/{rkey}", "cid": f"bafy{rkey}",
                            "author": {"did": did, "handle": did.split(":")[-1] + ".test"},
                            "indexedAt": created, "record": record}
    card = {"uri": link, "title": f"Title {rkey}", "description": f"About {rkey}"}
    quoted = {"$type": "app.bsky.embed.record", "record": {"uri": "at://did:plc:q/app.bsky.feed.post/q", "cid": "bafyq"}}
    if kind == "external":
        record["embed"] = {"$type": "app.bsky.embed.external", "external": card}
        post["embed"] = {"$type": "app.bsky.embed.external#view", "external": card}
    elif kind == "facet":
        record["text"] = f"{text} {link}"
        record["facets"] = [{"index": {"byteStart": 0, "byteEnd": 5},
                             "features": [{"$type": "app.bsky.richtext.facet#link", "uri": link}]}]
    elif kind == "record_with_media":
        record["embed"] = {"$type": "app.bsky.embed.recordWithMedia", "record": quoted,
                           "media": {"$type": "app.bsky.embed.external", "external": card}}
        post["embed"] = {"$type": "app.bsky.embed.recordWithMedia#view",
                         "record": {"$type": "app.bsky.embed.record#view",
                                    "record": {"$type": "app.bsky.embed.record#viewNotFound",
                                               "uri": "at://did:plc:q/app.bsky.feed.post/q", "notFound": True}},
                         "media": {"$type": "app.bsky.embed.external#view", "external": card}}
    for name, value in zip(("likeCount", "repostCount", "replyCount", "quoteCount"), counts):
        if value is not None:
            post[name] = value
    return post


def add(fake: FakeBluesky, *posts: dict[str, Any]) -> list[str]:
    for p in posts:
        fake.posts[p["uri"]] = p
    return [p["uri"] for p in posts]


def rows(db) -> dict[str, dict[str, Any]]:
    return {r["uri"]: r for r in db.query("select * from bsky_posts")}


def feed_item(post: dict[str, Any], repost_by: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"post": post}
    if repost_by:
        item["reason"] = {"$type": "app.bsky.feed.defs#reasonRepost", "indexedAt": "2026-11-01T00:00:00Z",
                          "by": {"did": repost_by, "handle": "alice.test"}}
    return item


# -- through the command line ---------------------------------------------------------------


def summary(stdout: str) -> tuple[dict[str, dict], str]:
    """({domain: {column: value, "note": text}}, the total line) of an ingest's output."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["domain", "queries", "pages", "seen", "new", "stored", "no", "link", "invalid",
                                "note"]
    end = next(i for i, line in enumerate(lines) if line.startswith(("sample: ", "bluesky: ")))
    domains = {}
    for line in lines[1:end]:
        name, *rest = line.split(maxsplit=len(COLUMNS) + 1)
        domains[name] = {**dict(zip(COLUMNS, map(int, rest[:len(COLUMNS)]))), "note": " ".join(rest[len(COLUMNS):])}
    return domains, lines[end]


@pytest.fixture
def server(fake, monkeypatch):
    """The fake server as the CLI finds it (handle and password are set by `fake`)."""
    monkeypatch.setenv(PDS_URL_ENV, fake.url + "/pds")
    monkeypatch.setenv(APPVIEW_URL_ENV, fake.url + "/appview")
    from_env = BlueskyConfig.from_env  # retries without the real backoff's seconds of sleep
    monkeypatch.setattr(BlueskyConfig, "from_env", lambda **kw: from_env(**{"backoff_s": 0.0, **kw}))
    return fake
